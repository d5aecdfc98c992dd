"""Command line: ``galaxytune train | cv | evaluate | predict | export | demo | data | config``."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from galaxytune.errors import GalaxytuneError
from galaxytune.files import WRITE_ERRNOS
from galaxytune.training.interrupt import RunInterrupted

TTA_HELP = ("average over the 8 rotations and flips, swapping mirrored classes back "
            "(default: on only for models trained with decision.tta=true)")


def _add_columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path-column", default=None, help="CSV column with image paths (default: filename)")
    parser.add_argument("--label-column", default=None, help="CSV column with class labels (default: label)")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """The options that make a training config (read by :func:`_config`)."""
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--model", help="timm model name, hf-hub:OWNER/REPO or local-dir:FOLDER (model.name)")
    parser.add_argument("--weights", help="'hub', 'none' or a local weights file (model.weights)")
    _add_columns(parser)
    parser.add_argument("overrides", nargs="*", help="settings as section.key=value, e.g. finetune.epochs=5")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galaxytune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="run the staged recipe on labelled images")
    p.add_argument("--data", help="image folder (train/, val/, test/) or CSV catalog")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out with its own config (no --data or settings)")
    _add_config_options(p)

    p = sub.add_parser("cv", help="K-fold cross-validation of the whole recipe (resumes if interrupted)")
    p.add_argument("--data", required=True, help="image folder or CSV catalog (all splits are pooled)")
    p.add_argument("--out", required=True, help="folder for the fold runs and the summary")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--overwrite", action="store_true", help="replace a cross-validation already in --out")
    _add_config_options(p)

    p = sub.add_parser("evaluate", help="score a trained model on a labelled set")
    p.add_argument("--model", required=True, help="run folder of a trained model, or an exported .onnx file")
    p.add_argument("--data", required=True, help="image folder or CSV catalog with labels")
    p.add_argument("--split", choices=["all", "train", "val", "test"],
                   help="default: the run's test split on its own data, else every labelled image")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, help=TTA_HELP)
    p.add_argument("--report", help="folder for report.html (default: MODEL/evaluation-<data>-<split>)")
    _add_columns(p)

    p = sub.add_parser("predict", help="predict classes of new images")
    p.add_argument("--model", required=True, help="run folder of a trained model, or an exported .onnx file")
    p.add_argument("images", nargs="+", help="image files, folders, or a CSV catalog")
    p.add_argument("--out", required=True, help="CSV file to write (rows are appended batch by batch)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, help=TTA_HELP)
    p.add_argument("--resume", action="store_true",
                   help="continue a cut-off run: skip the images already in --out (or --out.partial), append the rest")
    p.add_argument("--shard", metavar="I/N",
                   help="predict only part I of N (0 <= I < N) of the images, listed in a fixed order; "
                        "the N CSVs concatenated in order (header once) are the rows of one run")
    p.add_argument("--batch-size", type=int, default=64, help="images decoded and predicted at a time (default: 64)")
    p.add_argument("--workers", type=int, default=-1,
                   help="image decoding processes (default: with a GPU, CPUs - 1, at most 8; on the CPU, "
                        "the cores that its threads leave free)")
    p.add_argument("--device", help="where a PyTorch model runs, e.g. cpu, cuda, cuda:1 (default: cuda if there is "
                                    "one, else cpu); an .onnx model runs on the CPU")
    _add_columns(p)

    p = sub.add_parser("export", help="export a trained model to ONNX (decision rule included)")
    p.add_argument("--model", required=True, help="run folder of a trained model")
    p.add_argument("--out", help="ONNX file to write (default: MODEL/models/model.onnx)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version (default: 18)")
    p.add_argument("--int8", action="store_true",
                   help="also write an int8 model (OUT with .int8.onnx), statically quantized with ONNX Runtime, "
                        "calibrated on half the run's validation images and checked on the other half")
    p.add_argument("--calibration", type=int, default=512,
                   help="with --int8: at most this many validation images calibrate (default: 512)")

    p = sub.add_parser("demo", help="train on built-in synthetic galaxies (no data needed)")
    p.add_argument("--out", default="runs/demo", help="run folder to write (default: runs/demo)")
    p.add_argument("--data-dir", help="where to cache the synthetic images (default: ~/.cache/galaxytune)")
    p.add_argument("--weights", default="hub", help="'hub' (falls back to random when offline), 'none' or a file")
    p.add_argument("--per-class", type=int, default=600, help="synthetic images per class")
    p.add_argument("overrides", nargs="*", help="settings as section.key=value")

    p = sub.add_parser("data", help="list, describe and download public galaxy datasets")
    data = p.add_subparsers(dest="data_command", required=True)
    data.add_parser("list", help="the datasets galaxytune knows")
    data.add_parser("info", help="files, hashes, licence and citation of one dataset").add_argument("name")
    p = data.add_parser("download", help="download, verify and unpack a dataset (resumes if interrupted)")
    p.add_argument("name")
    p.add_argument("--dir", help="files go to DIR/NAME (default: ~/.cache/galaxytune/datasets/NAME)")
    p.add_argument("--no-verify", action="store_true", help="allow files whose hash is unknown (warns loudly)")

    p = sub.add_parser("config", help="list every setting: its default, what it allows and what it does")
    p.add_argument("key", nargs="?", default="", help="only this section or key, e.g. finetune or finetune.lr")
    p.add_argument("--yaml", action="store_true", help="print the defaults as a commented YAML config file")
    return parser


def _config(args):
    """The config from --config, the shortcut flags and the key=value overrides (in that order)."""
    from galaxytune.config import load_config
    from galaxytune.training.loggers import check_logger

    flags = {"data": {"path": args.data}, "model": {}}
    for flag, section, key in (("model", "model", "name"), ("weights", "model", "weights"),
                               ("path_column", "data", "path_column"), ("label_column", "data", "label_column")):
        if getattr(args, flag):
            flags[section][key] = getattr(args, flag)
    cfg = load_config(args.config, list(args.overrides), flags=flags)
    check_logger(cfg.trainer)  # a missing package stops the run before any data is read
    return cfg


def _train(args) -> None:
    from galaxytune.errors import ConfigError
    from galaxytune.training.pipeline import resume_run, train

    if args.resume:
        given = [f for f in ("data", "config", "model", "weights", "path_column", "label_column") if getattr(args, f)]
        if given or args.overrides or args.overwrite:
            raise ConfigError("--resume continues a run with its own config: give only --out "
                              f"(not {', '.join(['--' + f.replace('_', '-') for f in given] + args.overrides)}"
                              f"{' --overwrite' if args.overwrite else ''}).")
        result = resume_run(args.out)
    elif not args.data:
        raise ConfigError("train needs --data (or --resume, to continue an interrupted run in --out).")
    else:
        result = train(_config(args), args.out, args.overwrite)
    print(f"Run folder: {result.run_dir}")


def _cv(args) -> None:
    from galaxytune.evaluation.cross_validation import cross_validate
    from galaxytune.training.pipeline import train

    cross_validate(_config(args), args.out, args.folds, train, args.overwrite)
    print(f"Summary: {Path(args.out) / 'cv_summary.md'}")


def _run_folder(model: str) -> Path:
    """The run folder of a model given as that folder or as a file exported into it (ONNX)."""
    from galaxytune.run_folder import RunFolder

    path = Path(model)
    if path.is_dir():
        return path
    return next((p for p in path.parents[:2] if RunFolder(p).config.is_file()), path.parent)


def _evaluate(args) -> None:
    from galaxytune.evaluation.evaluate import evaluate
    from galaxytune.inference.predict import Predictor
    from galaxytune.report.html import write_evaluation_report

    predictor = Predictor.load(args.model)
    home = _run_folder(args.model)
    result = evaluate(
        predictor, args.data, args.split, args.path_column, args.label_column, args.tta,
        run_dir=home,
    )
    folder = Path(args.report or home / f"evaluation-{Path(args.data).stem}-{args.split or 'default'}")
    report = write_evaluation_report(
        folder, predictor.classes, result.y_true, result.predictions.probabilities, result.predictions.paths,
        title=f"{args.model} on {args.data} ({args.split or 'default split'})", info=predictor.info,
    )
    if args.json:
        print(json.dumps(result.metrics))
    else:
        print(f"Report: {report}")
        for key, value in result.metrics.items():
            print(f"{key:>18}: {value:.4f}" if isinstance(value, float) else f"{key:>18}: {value}")


def _predict(args) -> None:
    from galaxytune.data.readers.catalog import catalog_paths
    from galaxytune.errors import ConfigError
    from galaxytune.inference import predict as stream
    from galaxytune.training.interrupt import interruptible

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be 1 or more.")
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    predictor = stream.Predictor.load(args.model, args.device)
    images: list[str | Path] = []
    for item in args.images:
        if item.lower().endswith(".csv") and Path(item).is_file():
            images += catalog_paths(Path(item), args.path_column or "filename")
        else:
            images.append(item)
    paths = predictor.image_paths(images)
    if args.shard:
        paths = stream.shard(paths, *stream.parse_shard(args.shard))
    out = Path(args.out)
    skipped = 0
    if args.resume:
        done = stream.done_paths(out, predictor.classes)
        todo = [p for p in paths if stream.spreadsheet_safe(str(p)) not in done]
        skipped, paths = len(paths) - len(todo), todo
        print(f"Resuming {out}: {skipped} image(s) already predicted, {len(paths)} to go.")
    unreadable: list = []
    batches = predictor.stream(paths, args.batch_size, args.workers, args.tta)
    try:
        with interruptible():
            written = stream.write_predictions(batches, out, predictor.classes, args.resume, unreadable)
    except RunInterrupted as exc:
        exc.where = (f"; the rows written so far are in {out}.partial: run the same command with --resume "
                     "to predict the rest")
        raise
    print(f"Wrote {written} predictions to {args.out}" + (f" ({skipped} already there)" if skipped else ""))
    if unreadable:
        print(f"Skipped {len(unreadable)} unreadable image(s):")
        for path, err in unreadable[:20]:
            print(f"  {path}: {err}")
        if len(unreadable) > 20:
            print(f"  ... and {len(unreadable) - 20} more")


def _export(args) -> None:
    from galaxytune.inference.onnx import export_onnx

    run = Path(args.model)
    run = run.parent if run.name == "models" and not (run / "splits.csv").is_file() else run
    if args.int8:
        from galaxytune.inference.quantize import export_int8, validation_rows

        validation_rows(run)  # no calibration images: say so before the (slow) export
    path = export_onnx(args.model, args.out, args.opset)
    print(f"Wrote {path} (checked against PyTorch with ONNX Runtime). Use it with "
          f"`galaxytune predict --model {path} IMAGES --out predictions.csv` or any ONNX runtime.")
    if args.int8:
        for line in export_int8(run, path, calibration=args.calibration).lines():
            print(line)


def _demo(args) -> None:
    from galaxytune.demo import run_demo

    result = run_demo(args.out, args.data_dir, args.weights, args.per_class, args.overrides)
    print(f"Run folder: {result.run_dir}")


def _data(args) -> None:
    from galaxytune.datasets import registry

    if args.data_command == "list":
        print(registry.list_text())
    elif args.data_command == "info":
        print(registry.info_text(args.name))
    else:
        for path in registry.download(args.name, args.dir, verify=not args.no_verify):
            print(path)


def _settings(args) -> None:
    from galaxytune.config import defaults_yaml, describe_settings

    print(defaults_yaml(args.key) if args.yaml else describe_settings(args.key))


# The option choosing where each command writes, for the hint after a failed write.
OUTPUT_OPTIONS = {"evaluate": "--report", "data": "--dir"}


def os_error_line(exc: OSError, output_option: str = "--out") -> str:
    """One line for a failed read or write: the file (or folder), the system's reason, what to do."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f" (free space or choose another {output_option})"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied" if reason.lower() == "permission denied" else f"permission denied: {reason}"
        hint = f" (check the permissions or choose another {output_option})"
    elif exc.errno in (errno.EROFS, errno.EFBIG):
        hint = f" (choose another {output_option})"
    else:
        hint = ""
    if exc.filename is None:
        return f"error: {reason}{hint}"
    verb = "cannot write" if exc.errno in WRITE_ERRNOS else "cannot access"
    return f"error: {verb} {exc.filename}: {reason}{hint}"


def main(argv: list[str] | None = None) -> int:
    from galaxytune.console import console_logging

    args = build_parser().parse_args(argv)
    console_logging()  # progress lines (galaxytune's logger) on stdout, flushed as they come
    handlers = {
        "train": _train, "cv": _cv, "evaluate": _evaluate, "predict": _predict, "export": _export, "demo": _demo,
        "data": _data, "config": _settings,
    }
    handler = handlers[args.command]
    try:
        handler(args)
    except GalaxytuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        print(f"galaxytune: {exc}", file=sys.stderr)
        return exc.exit_status
    except OSError as exc:  # a full disk, a folder one may not write ... (atomic writes left nothing half-written)
        print(os_error_line(exc, OUTPUT_OPTIONS.get(args.command, "--out")), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
