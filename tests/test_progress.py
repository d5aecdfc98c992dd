"""Progress a user can follow in a log file, the training-curve loggers, and ``galaxytune config``."""

from __future__ import annotations

import csv
import re
import sys

import pytest
from conftest import COLOURS, FAST, write_folder

from galaxytune.cli import main
from galaxytune.config import Config, TrainerConfig, load_config, settings
from galaxytune.console import duration
from galaxytune.errors import ConfigError
from galaxytune.run_folder import RunFolder
from galaxytune.training import progress
from galaxytune.training.loggers import make_loggers


def test_a_run_written_to_a_file_shows_one_line_per_epoch_with_the_time_left(tmp_path, weights_file, capsys):
    """Stdout captured (not a terminal), as when a run is redirected to a log file: no progress bar
    even with trainer.progress on, plain lines; trainer.logger=tensorboard adds event files beside
    the CSV logs. The transfer stage alone keeps it short: every stage logs through the same fit."""
    write_folder(tmp_path / "data", dict.fromkeys(COLOURS, 8))
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run), "--weights", str(weights_file), *FAST,
                 "transfer.epochs=2", "transfer.patience=2", "finetune.enabled=false", "decision.tta=false",
                 "trainer.progress=true", "trainer.logger=tensorboard"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("transfer epoch ")]
    assert [line.split()[2] for line in lines] == ["1/2", "2/2"], out
    for line in lines:
        assert re.search(r"train_loss \d\.\d{4}  val_loss \d\.\d{4}  val_accuracy .* val_macro_f1 \d\.\d{4}  "
                         r"\d+\.\d s  eta \d+\.\d s$", line), line
    assert lines[1].endswith("eta 0.0 s")
    assert "transfer: up to 2 epochs of 1 batch; stops early after 2 without a better val_macro_f1" in out
    assert re.search(r"transfer: about \d+\.\d s for 2 epochs at \d+\.\d s each", out)
    assert re.search(r"transfer: 2 epochs in .* each\); best val_macro_f1 \d\.\d{4} at epoch [12]", out)
    assert "\r" not in out  # no progress bar in a file
    # The merged per-epoch metrics still come from the CSV logs.
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [(r["stage"], r["epoch"]) for r in rows] == [("transfer", "0"), ("transfer", "1")]
    assert all(r["train_loss"] and r["val_macro_f1"] for r in rows)
    assert list((run / "logs" / "tensorboard" / "transfer").glob("events.out.tfevents.*"))


def test_the_bar_shows_on_a_terminal_and_plain_lines_elsewhere(monkeypatch):
    def choose(tty: bool, **settings):
        monkeypatch.setattr(progress, "interactive", lambda: tty)
        bar, callbacks = progress.progress_callbacks(TrainerConfig(**settings), "finetune", "val_macro_f1", "max", 4)
        return bar, [type(c).__name__ for c in callbacks]

    assert choose(True) == (True, [])
    assert choose(False) == (False, ["EpochLines"])
    assert choose(True, progress=False) == (False, ["EpochLines"])
    assert choose(False, epoch_lines=False) == (False, [])


def test_durations_read_like_a_clock():
    assert [duration(s) for s in (0.04, 7.26, 59.96, 65, 3599, 7380)] == [
        "0.0 s", "7.3 s", "1 min 00 s", "1 min 05 s", "59 min 59 s", "2 h 03 min"]


def test_a_missing_logger_package_is_one_error_naming_its_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"trainer.logger=wandb needs the wandb package.*galaxytune\[wandb\]"):
        make_loggers(TrainerConfig(logger="wandb"), RunFolder(tmp_path), "transfer")
    # The command line stops before reading any data.
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"),
                 "trainer.logger=wandb"]) == 2
    assert "pip install 'galaxytune[wandb]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_config_lists_every_setting_with_its_default_range_and_help(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    leaves = settings()
    assert len(leaves) > 90
    for item in leaves:
        assert item.help and item.allowed, item.key
        assert f"\n{item.key} = " in out, item.key
        assert f"    {item.help}\n" in out, item.key
    assert "finetune.lr = 0.001  (number, above 0)" in out
    assert "data.leakage = warn  (warn | fail | off)" in out
    assert "finetune.warmup_epochs = 1.0  (number, between 0 and finetune.epochs)" in out
    assert main(["config", "finetune"]) == 0
    keys = re.findall(r"^([\w.]+) = ", capsys.readouterr().out, re.M)
    assert keys and all(k.startswith("finetune.") for k in keys) and "finetune.mirror_swap" in keys
    assert main(["config", "fintune.lr"]) == 2
    assert "Did you mean finetune.lr?" in capsys.readouterr().err


def test_config_yaml_is_a_commented_config_that_loads_back_as_the_defaults(tmp_path, capsys):
    assert main(["config", "--yaml"]) == 0
    text = capsys.readouterr().out
    assert "  # Peak learning rate of the top layer group" in text and "  lr: 0.001  # number, above 0" in text
    (tmp_path / "defaults.yaml").write_text(text)
    assert load_config(tmp_path / "defaults.yaml") == Config()
    assert main(["config", "--yaml", "data.labels.binary.threshold"]) == 0
    part = capsys.readouterr().out
    (tmp_path / "part.yaml").write_text(part.replace("0.5", "0.7"))
    assert load_config(tmp_path / "part.yaml").data.labels.binary.threshold == 0.7


def test_every_numeric_setting_declares_a_range_that_is_enforced():
    """Generic: for each number, a value past each declared bound is refused with a message
    naming the key and what is allowed; the defaults themselves pass."""
    load_config()
    numeric = [s for s in settings() if s.hint in (int, float)]
    assert numeric
    for item in numeric:
        low, high = item.meta["low"], item.meta["high"]
        assert low is not None or high is not None, f"{item.key} declares no range"
        for bound, step in ((low, -1), (high, 1)):
            if bound is None:
                continue
            limit = Config().get(bound) if isinstance(bound, str) else bound
            bad = limit + step if item.hint is int or not item.meta["low_open" if step < 0 else "high_open"] \
                else limit
            if item.hint is float:
                bad = float(bad) + step * 1e-3
            with pytest.raises(ConfigError, match=rf"^{re.escape(item.key)}=\S+ must be .*(between|above|below|at)"):
                load_config(overrides=[f"{item.key}={bad}"])


def test_choice_lists_agree_with_the_modules_that_own_them():
    from galaxytune.training.losses import QUESTION_LOSSES

    choices = {s.key: s.meta["choices"] for s in settings()}
    assert set(choices["finetune.question_loss"]) == set(QUESTION_LOSSES)
    with pytest.raises(ConfigError, match=r"^trainer.logger='mlflow' is not one of csv, tensorboard, wandb\.$"):
        load_config(overrides=["trainer.logger=mlflow"])


def test_lines_reach_a_log_file_as_they_happen(tmp_path, monkeypatch):
    from galaxytune.console import console_logging, logger

    with open(tmp_path / "run.log", "w") as handle:
        monkeypatch.setattr(sys, "stdout", handle)
        console_logging()
        logger.info("transfer epoch 1/2")
        assert (tmp_path / "run.log").read_text() == "transfer epoch 1/2\n"  # flushed, the file still open
