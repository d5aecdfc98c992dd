"""K-fold cross-validation: disjoint test folds, a summary, and resuming after an interruption."""

import csv

from conftest import FAST, write_folder

from galaxytune.cli import main
from galaxytune.config import load_config
from galaxytune.evaluation.cross_validation import cross_validate
from galaxytune.training.pipeline import train


def test_cv_runs_every_fold_then_resumes_without_redoing_any(tmp_path, weights_file, capsys):
    data = write_folder(tmp_path / "data", {"red": 12, "green": 12, "blue": 12})
    out = tmp_path / "cv"
    args = ["cv", "--data", str(data), "--out", str(out), "--folds", "3", "--weights", str(weights_file), *FAST,
            "transfer.epochs=2", "finetune.enabled=false"]
    assert main(args) == 0
    tests = [{r["filename"] for r in csv.DictReader(open(out / f"fold_{i}" / "folds.csv")) if r["split"] == "test"}
             for i in range(3)]
    assert sum(map(len, tests)) == 36 and not (tests[0] & tests[1] or tests[0] & tests[2] or tests[1] & tests[2])
    summary = list(csv.DictReader(open(out / "cv_summary.csv")))
    assert [r["stage"] for r in summary] == ["transfer", "decision"] and summary[0]["folds"] == "3"
    assert "±" in (out / "cv_summary.md").read_text()

    # An interruption: fold 1 was killed before its run folder was complete. Only it runs again.
    (out / "fold_1" / "fold_complete").unlink()
    (out / "fold_1" / "report.html").unlink()
    ran = []
    cfg = load_config(overrides=[f"data.path={data}", f"model.weights={weights_file}", *FAST,
                                 "transfer.epochs=2", "finetune.enabled=false"])
    cross_validate(cfg, out, 3, lambda c, run_dir, **kw: ran.append(run_dir) or train(c, run_dir, **kw))
    assert ran == [out / "fold_1"] and (out / "fold_1" / "report.html").is_file()

    # Other settings into the same folder are refused, not summarised with the old folds.
    assert main([*args[:6], "2", *args[7:]]) == 2
    assert "holds a cross-validation with other folds (3 folds)" in capsys.readouterr().err
    assert main([*args[:5], "--folds", "3", *args[7:], "transfer.lr=0.01"]) == 2
    assert "with other config" in capsys.readouterr().err
    assert main([*args[:6], "2", *args[7:], "--overwrite"]) == 0
    assert not (out / "fold_2").exists()
    assert [r["folds"] for r in csv.DictReader(open(out / "cv_summary.csv"))] == ["2", "2"]


def test_cv_needs_enough_images_per_class(tmp_path, capsys):
    data = write_folder(tmp_path / "data", {"red": 12, "green": 2})
    assert main(["cv", "--data", str(data), "--out", str(tmp_path / "cv"), "--folds", "3"]) == 2
    assert "only 2 image(s): too few for 3 folds" in capsys.readouterr().err


def test_cv_needs_two_folds(tmp_path, capsys):
    assert main(["cv", "--data", str(tmp_path), "--out", str(tmp_path / "cv"), "--folds", "1"]) == 2
    assert "--folds 2 or more" in capsys.readouterr().err
