"""Read chosen columns of large CSV tables (plain or .gz), with errors that name file and column.

Vote tables are wide (the GZ2 table has 231 columns and 240k rows): only the columns a run
needs are kept.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import math
from pathlib import Path

import numpy as np

from galaxytune.errors import DataError


def _open(path: Path):
    # utf-8-sig: spreadsheet programs often start a CSV with a byte-order mark.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return open(path, newline="", encoding="utf-8-sig")


def _unreadable(path: Path, exc: Exception) -> DataError:
    return DataError(f"{path} is not a readable UTF-8 CSV file ({exc}). Save it as UTF-8 CSV.")


def read_header(path: Path) -> list[str]:
    try:
        with _open(path) as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as exc:
        raise _unreadable(path, exc) from None
    if not header:
        raise DataError(f"{path} is empty; expected a CSV table with a header line.")
    return header


def separator_hint(header: list[str]) -> str:
    """What to do when a header read as one column is really split by ';', tabs or '|'."""
    for sep, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
        if len(header) == 1 and sep in header[0]:
            return f" The file looks {name}-separated: save it comma-separated."
    return ""


def missing_column(path: Path, column: str, available: list[str], setting: str) -> DataError:
    close = difflib.get_close_matches(column, available, n=3, cutoff=0.6)
    hint = f"Close column names: {', '.join(close)}" if close else f"Its columns start: {', '.join(available[:8])}"
    fix = separator_hint(available) or f" Correct {setting}."
    return DataError(f"{path} has no column '{column}' (named in {setting}). {hint}.{fix}")


def require(path: Path, available: list[str], wanted: dict[str, str]) -> None:
    """Fail on the first of ``wanted`` (column -> the setting naming it) that ``available`` lacks."""
    names = set(available)
    for column, setting in wanted.items():
        if column not in names:
            raise missing_column(path, column, available, setting)


def read_columns(path: Path, columns: list[str]) -> dict[str, list[str]]:
    """The text of ``columns`` (all present in the header) for every row."""
    header = read_header(path)
    index = [header.index(c) for c in columns]
    rows = []
    try:
        with _open(path) as handle:
            reader = csv.reader(handle)
            next(reader)
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    if not row:
                        continue  # a blank line
                    raise DataError(f"{path} line {line}: {len(row)} fields where the header has {len(header)}.")
                rows.append([row[i] for i in index])
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as exc:
        raise _unreadable(path, exc) from None
    if not rows:
        raise DataError(f"{path} has a header but no rows.")
    return {c: [r[k] for r in rows] for k, c in enumerate(columns)}


def numbers(path: Path, column: str, texts: list[str]) -> np.ndarray:
    """A column as floats; an empty cell (a question nobody was asked) is NaN."""
    out = np.empty(len(texts))
    for i, text in enumerate(texts):
        text = text.strip()
        try:
            out[i] = float(text) if text else math.nan
        except ValueError:
            raise DataError(f"{path} line {i + 2}: column '{column}' holds '{text}', not a number.") from None
    return out
