"""Writing files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""Errors that only a write gives: a full disk or quota, a file too large, a read-only file system."""


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    An OSError about the temporary file (or a write error that names no file, as a full disk
    gives from ``write()``) is raised again naming ``path``, the file the user asked for.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The process id keeps concurrent writers (several processes of one run) apart.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename in (str(tmp), tmp) or (exc.filename is None and exc.errno in WRITE_ERRNOS):
            # OSError(errno, ...) picks the subclass (PermissionError ...) that errno stands for.
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(path: Path, header: list[str], rows) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def write_dict_csv(path: Path, rows: list[dict]) -> None:
    """Rows of dicts with the same keys, the first row's keys as header."""
    write_csv(path, list(rows[0]), ([row[k] for k in rows[0]] for row in rows))


def write_tensors(path: Path, tensors: dict) -> None:
    """Tensors (a state dict) as a safetensors file, written atomically. Serialised here and
    written by Python: safetensors' own file writer reports a full disk as a SafetensorError, not
    as the OSError (with errno and path) every other write gives."""
    from safetensors.torch import save

    with atomic_path(path) as tmp:
        tmp.write_bytes(save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
