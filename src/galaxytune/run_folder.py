"""The run folder: every file a run writes and reads, the lock that keeps it to one run, and the
run's state (which stage and epoch it reached, and whether it finished).

Nothing else spells out a run's file names: ``train``, ``cv``, ``evaluate``, ``predict``, the
report and the benchmarks all go through :class:`RunFolder`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from galaxytune.data.samples import Sample
from galaxytune.errors import ConfigError
from galaxytune.files import atomic_path, write_json, write_tensors

SPLITS = ("val", "test")


class RunFolder:
    """The files of one ``galaxytune train`` run."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        p = self.path
        self.config = p / "config.yaml"
        self.splits = p / "splits.csv"
        self.epoch_metrics = p / "metrics.csv"
        self.stage_table = p / "stage_table.csv"
        self.stage_table_md = p / "stage_table.md"
        self.stage_gains = p / "stage_gains.csv"
        self.stage_outputs = p / "stage_outputs.npz"
        self.stages = p / "stages.json"
        self.report = p / "report.html"
        self.leakage = p / "leakage.csv"
        self.leakage_summary = p / "leakage.json"
        self.unreadable = p / "unreadable_images.csv"
        self.logs = p / "logs"
        self.checkpoints = p / "checkpoints"
        self.models = p / "models"
        self.plots = p / "plots"
        self.lr_sweep_plot = self.plots / "lr_sweep.png"  # finetune.find_lr; the report shows it
        self.state_file = p / "state.json"
        self.lock_file = p / ".lock"

    def outputs(self) -> list[Path]:
        """Everything a run writes (the lock file aside): cleared before a run replaces another."""
        return [self.config, self.splits, self.epoch_metrics, self.stage_table, self.stage_table_md,
                self.stage_gains, self.stage_outputs, self.stages, self.report, self.leakage, self.leakage_summary,
                self.unreadable,
                self.logs, self.checkpoints, self.models, self.plots, self.state_file]

    def epoch_log(self, stage: str) -> Path:
        """Lightning's CSV log of one stage's epochs."""
        return self.logs / stage / "metrics.csv"

    def epoch_logs(self, stage: str) -> list[Path]:
        """The stage's CSV logs in the order they were written: the parts before each resume first."""
        parts = sorted(self.epoch_log(stage).parent.glob("metrics.part*.csv"), key=lambda p: int(p.stem[12:]))
        return [*parts, self.epoch_log(stage)]

    def set_aside_epoch_log(self, stage: str) -> None:
        """Keep the log of the epochs before a resume: Lightning's CSV logger starts its file afresh."""
        log = self.epoch_log(stage)
        if log.is_file():
            log.rename(log.with_name(f"metrics.part{len(self.epoch_logs(stage)) - 1}.csv"))

    def best_checkpoint(self, stage: str) -> Path:
        return self.checkpoints / f"{stage}.ckpt"

    def last_checkpoint(self, stage: str) -> Path:
        """The full training state (optimizer, schedule, epoch) after the stage's latest epoch."""
        return self.checkpoints / f"{stage}-last.ckpt"

    def _stage_record(self, stage: str) -> Path:
        return self.checkpoints / f"{stage}.done.npz"

    def _stage_weights(self, stage: str) -> Path:
        return self.checkpoints / f"{stage}.done.safetensors"

    # -- whole-run state -------------------------------------------------------------------------

    def holds_run(self) -> bool:
        """Whether training has written anything here (a run that stopped earlier, on bad data say,
        left nothing worth keeping)."""
        return any(p.exists() for p in (self.checkpoints, self.models, self.stage_table))

    def read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.state_file} cannot be read ({exc}); pass --overwrite to start the run "
                              "again.") from None

    def update_state(self, **changes) -> None:
        """Merge ``changes`` into ``state.json`` (written atomically, with the time)."""
        state = self.read_state() | changes | {"updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(self.state_file, state)

    def interruption_note(self) -> str:
        """Where an interrupted run stopped, what it kept and how to go on."""
        state = self.read_state()
        stage, epoch = state.get("stage"), state.get("epoch")
        at = ""
        if stage:
            at = f" during {stage}" + (f" (epoch {epoch} of {state.get('epochs')} finished)" if epoch else "")
        return (f"{at}. The run so far is kept in {self.path}; continue it with: "
                f"galaxytune train --resume --out {self.path}")

    def clear(self) -> None:
        for path in self.outputs():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def prepare(self, overwrite: bool, resume: bool) -> None:
        """Make the folder ready for a new run (``overwrite``) or for resuming one (``resume``).

        Refuses to mix two runs in one folder: stale curves or gains would pass for new ones. A
        folder where an earlier attempt stopped before training (bad data, say) is reused.
        """
        state = self.read_state()
        if resume:
            if not self.config.is_file() or not state:
                raise ConfigError(f"{self.path} holds no run to resume. Start one with galaxytune train --data ... "
                                  f"--out {self.path}.")
            if state.get("status") == "done":
                raise ConfigError(f"The run in {self.path} finished already: there is nothing to resume.")
            return
        if self.holds_run() and not overwrite:
            status = state.get("status", "done")
            resume_hint = "pass --resume to continue it, " if status != "done" and self.config.is_file() else ""
            raise ConfigError(f"{self.path} already holds a run ({status}): {resume_hint}choose another --out, "
                              "or pass --overwrite to replace it.")
        self.clear()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder for one run: a second run into it is refused while this one lives.

        The lock is an OS file lock, released by the OS when the process dies however it dies.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.lock_file, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = self.read_state()
            who = f" (process {holder['pid']}, since {holder.get('started', '?')})" if "pid" in holder else ""
            raise ConfigError(f"{self.path} is in use by another galaxytune run{who}. Wait for it to finish, "
                              "or choose another --out.") from None
        try:
            yield
        finally:
            lock.release()

    # -- finished stages, kept so that --resume skips them ---------------------------------------

    def save_stage(self, summary: dict, logits: dict[str, np.ndarray], weights: dict) -> None:
        """A finished stage: its summary, val/test logits and the network's weights after it."""
        write_tensors(self._stage_weights(summary["stage"]), weights)
        with atomic_path(self._stage_record(summary["stage"])) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, summary=json.dumps(summary), **logits)

    def load_stage(self, stage: str) -> tuple[dict, dict[str, np.ndarray], dict] | None:
        """What :meth:`save_stage` kept of ``stage``, or None if the stage did not finish."""
        from safetensors.torch import load_file

        record, weights = self._stage_record(stage), self._stage_weights(stage)
        if not (record.is_file() and weights.is_file()):
            return None
        with np.load(record) as npz:
            logits = {k: npz[k] for k in npz.files if k != "summary"}
            summary = json.loads(str(npz["summary"]))
        return summary, logits, load_file(str(weights))

    def drop_resume_files(self) -> None:
        """The finished run needs neither the stage records nor the full training states."""
        for path in self.checkpoints.glob("*.done.*"):
            path.unlink()
        for path in self.checkpoints.glob("*-last.ckpt"):
            path.unlink()

    # -- outputs read by evaluate, the report and the benchmarks --------------------------------

    def read_splits(self) -> dict[str, list[Sample]]:
        """The samples of each split, as ``splits.csv`` records them (in its order)."""
        found: dict[str, list[Sample]] = {}
        with open(self.splits, newline="") as handle:
            for row in csv.DictReader(handle):
                found.setdefault(row["split"], []).append(Sample(Path(row["path"]), row["label"]))
        return found

    def write_stage_outputs(self, targets: dict[str, np.ndarray], paths: dict[str, list], logits: dict) -> None:
        """Each stage's val and test logits (``logits[stage][split]``), with the targets and paths."""
        arrays = {f"y_{s}": targets[s] for s in SPLITS} | {f"{s}_paths": np.array([str(p) for p in paths[s]])
                                                            for s in SPLITS}
        arrays |= {f"{stage}_{s}": per_split[s] for stage, per_split in logits.items() for s in SPLITS}
        with atomic_path(self.stage_outputs) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    def read_stage_outputs(self) -> tuple[dict[str, np.ndarray], dict[str, list[str]], dict[str, dict]]:
        """Targets, paths and per-stage logits, as :meth:`write_stage_outputs` was given them."""
        with np.load(self.stage_outputs) as npz:
            targets = {s: npz[f"y_{s}"] for s in SPLITS}
            paths = {s: npz[f"{s}_paths"].tolist() for s in SPLITS}
            stages = [k[: -len("_val")] for k in npz.files if k.endswith("_val") and not k.startswith("y_")]
            logits = {stage: {s: npz[f"{stage}_{s}"] for s in SPLITS} for stage in stages}
        return targets, paths, logits


def process_facts() -> dict:
    """Who holds the run: shown when a second run is refused."""
    return {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
