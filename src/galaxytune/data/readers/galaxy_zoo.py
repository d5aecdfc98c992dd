"""Galaxy Zoo vote tables and where their images lie.

- GZ2 (Hart et al. 2016, ``gz2_hart16.csv[.gz]``): images through ``gz2_filename_mapping.csv``
  (objid -> asset_id -> ``images/<asset_id>.jpg``), or a path column if the table has one;
- Kaggle's Galaxy Challenge (``training_solutions_rev1.csv``): ``images_training_rev1/<GalaxyID>.jpg``;
  its ``ClassQ.A`` columns are also offered under the GZ2 names as per-question fractions;
- GZ DECaLS (``gz_decals_volunteers_*.csv``): ``<any folder>/Jxxx/<iauname>.png``;
- any CSV with vote columns and an image-path column.

Only the columns the labels need are read (see :func:`galaxytune.data.vote_labels.wanted_columns`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from galaxytune.config import DataConfig
from galaxytune.data.csv_table import numbers, read_columns, read_header, require
from galaxytune.data.questions import Question, count_columns, find_questions
from galaxytune.data.vote_labels import Catalog, wanted_columns
from galaxytune.errors import ConfigError, DataError

GZ2_TABLES = ("gz2_hart16.csv", "gz2_hart16.csv.gz")
GZ2_MAPPING = "gz2_filename_mapping.csv"
GZ2_FIRST_QUESTION = [f"t01_smooth_or_features_{a}_count" for a in ("a01_smooth", "a02_features_or_disk",
                                                                    "a03_star_or_artifact")]
KAGGLE_TABLE = "training_solutions_rev1.csv"
KAGGLE_IMAGES = "images_training_rev1"
DECALS_VOTES = "smooth-or-featured_total-votes"
# Kaggle question number -> the GZ2 question and answers it asks, in Kaggle's answer order.
KAGGLE_QUESTIONS = {
    1: ("t01_smooth_or_features", ("a01_smooth", "a02_features_or_disk", "a03_star_or_artifact")),
    2: ("t02_edgeon", ("a04_yes", "a05_no")),
    3: ("t03_bar", ("a06_bar", "a07_no_bar")),
    4: ("t04_spiral", ("a08_spiral", "a09_no_spiral")),
    5: ("t05_bulge_prominence", ("a10_no_bulge", "a11_just_noticeable", "a12_obvious", "a13_dominant")),
    6: ("t06_odd", ("a14_yes", "a15_no")),
    7: ("t07_rounded", ("a16_completely_round", "a17_in_between", "a18_cigar_shaped")),
    8: ("t08_odd_feature", ("a19_ring", "a20_lens_or_arc", "a21_disturbed", "a22_irregular", "a23_other",
                            "a24_merger", "a38_dust_lane")),
    9: ("t09_bulge_shape", ("a25_rounded", "a26_boxy", "a27_no_bulge")),
    10: ("t10_arms_winding", ("a28_tight", "a29_medium", "a30_loose")),
    11: ("t11_arms_number", ("a31_1", "a32_2", "a33_3", "a34_4", "a36_more_than_4", "a37_cant_tell")),
}


def _questions(cfg: DataConfig, header: list[str]) -> list[Question]:
    return find_questions(header) if cfg.labels.questions == "auto" else []


def _table(path: Path, names: tuple[str, ...], what: str) -> Path:
    if path.is_file():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    raise DataError(f"{path} holds no {what} ({' or '.join(names)}). Pass the table itself as the data path.")


def _by_path_column(table: Path, texts: list[str]) -> list[Path | None]:
    return [table.parent / t.strip() if t.strip() else None for t in texts]


def read_vote_csv(path: Path, cfg: DataConfig) -> Catalog:
    header = read_header(path)
    wanted = wanted_columns(cfg, cfg.labels.votes, header)
    require(path, header, {cfg.path_column: "data.path_column (--path-column)", **wanted})
    questions = _questions(cfg, header)
    columns = read_columns(path, list(dict.fromkeys([cfg.path_column, *wanted, *count_columns(questions)])))
    return Catalog(path, _by_path_column(path, columns[cfg.path_column]), columns, cfg.labels.votes, questions)


def _gz2_images(table: Path, objids: list[str]) -> list[Path | None]:
    mapping = table.parent / GZ2_MAPPING
    if not mapping.is_file():
        raise DataError(
            f"{table} has no image-path column and there is no {GZ2_MAPPING} next to it. Put the GZ2 image "
            f"release's {GZ2_MAPPING} (objid -> asset_id) and its images/ folder there, or add a path column "
            "named by data.path_column."
        )
    header = read_header(mapping)
    require(mapping, header, {"objid": "the GZ2 image release", "asset_id": "the GZ2 image release"})
    ids = read_columns(mapping, ["objid", "asset_id"])
    asset = {o.strip(): a.strip() for o, a in zip(ids["objid"], ids["asset_id"])}
    folder = _gz2_image_folder(table.parent)
    return [folder / f"{asset[o.strip()]}.jpg" if o.strip() in asset else None for o in objids]


def _gz2_image_folder(root: Path) -> Path:
    """``images/`` next to the table, or where ``galaxytune data download gz2_hart16`` unpacks
    the image release (``images_gz2/``, with or without an ``images/`` level inside)."""
    for folder in (root / "images", root / "images_gz2" / "images", root / "images_gz2"):
        if folder.is_dir():
            return folder
    return root / "images"


def _gz2_votes(header: list[str]) -> str:
    """Every volunteer answers the first question, so its counts add up to the classifications."""
    if "total_classifications" in header:
        return "total_classifications"
    return " + ".join(GZ2_FIRST_QUESTION) if set(GZ2_FIRST_QUESTION) <= set(header) else ""


def read_gz2(path: Path, cfg: DataConfig) -> Catalog:
    table = _table(path, GZ2_TABLES, "GZ2 vote table (Hart et al. 2016)")
    header = read_header(table)
    votes = cfg.labels.votes or _gz2_votes(header)
    wanted = wanted_columns(cfg, votes, header)
    key = cfg.path_column if cfg.path_column in header else "dr7objid"
    require(table, header, {key: "the GZ2 table (dr7objid) or data.path_column", **wanted})
    questions = _questions(cfg, header)
    columns = read_columns(table, list(dict.fromkeys([key, *wanted, *count_columns(questions)])))
    paths = _by_path_column(table, columns[key]) if key == cfg.path_column else _gz2_images(table, columns[key])
    return Catalog(table, paths, columns, votes, questions)


def kaggle_columns() -> dict[str, tuple[int, int]]:
    """GZ2 fraction column name -> (Kaggle question, answer), e.g.
    ``t01_smooth_or_features_a01_smooth_fraction`` -> (1, 1) for ``Class1.1``."""
    return {f"{question}_{answer}_fraction": (q, a + 1)
            for q, (question, answers) in KAGGLE_QUESTIONS.items() for a, answer in enumerate(answers)}


def _kaggle_fraction(columns: dict, question: int, answer: int, table: Path) -> np.ndarray:
    """Kaggle's values are shares of all volunteers; dividing by the question's total gives the
    share of those who answered it, as in the GZ2 ``_fraction`` columns."""
    n_answers = len(KAGGLE_QUESTIONS[question][1])
    values = [numbers(table, f"Class{question}.{a}", columns[f"Class{question}.{a}"]) for a in range(1, n_answers + 1)]
    total = np.sum(values, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, values[answer - 1] / total, np.nan)


def read_kaggle(path: Path, cfg: DataConfig) -> Catalog:
    table = _table(path, (KAGGLE_TABLE,), "Kaggle Galaxy Challenge table")
    header = read_header(table)
    if cfg.labels.min_votes > 0:
        raise ConfigError(f"{table} holds vote fractions but no vote counts: set data.labels.min_votes=0.")
    wanted = wanted_columns(cfg, "", header)
    named = kaggle_columns()
    require(table, header + list(named), {"GalaxyID": "the Kaggle table", **wanted})
    questions = {named[c][0] for c in wanted if c in named}
    raw = [f"Class{q}.{a}" for q in sorted(questions) for a in range(1, len(KAGGLE_QUESTIONS[q][1]) + 1)]
    columns: dict = read_columns(table, list(dict.fromkeys(["GalaxyID", *raw, *(c for c in wanted if c in header)])))
    for name in (c for c in wanted if c in named and c not in header):
        columns[name] = _kaggle_fraction(columns, *named[name], table)
    paths = [table.parent / KAGGLE_IMAGES / f"{g.strip()}.jpg" for g in columns["GalaxyID"]]
    return Catalog(table, paths, columns, "")


def _decals_table(path: Path) -> Path:
    if path.is_file():
        return path
    tables = sorted(path.glob("gz_decals_volunteers_*.csv"))
    if len(tables) != 1:
        found = ", ".join(t.name for t in tables) or "none"
        raise DataError(f"{path}: expected one gz_decals_volunteers_*.csv table, found {found}. "
                        "Pass the table to use as the data path (the releases name their answers differently).")
    return tables[0]


def read_decals(path: Path, cfg: DataConfig) -> Catalog:
    table = _decals_table(path)
    header = read_header(table)
    votes = cfg.labels.votes or (DECALS_VOTES if DECALS_VOTES in header else "")
    wanted = wanted_columns(cfg, votes, header)
    require(table, header, {"iauname": "the GZ DECaLS table", **wanted})
    questions = _questions(cfg, header)
    columns = read_columns(table, list(dict.fromkeys(["iauname", *wanted, *count_columns(questions)])))
    # Images are <part folder>/Jxxx/<iauname>.png, whichever of the archive's parts holds them.
    found = {p.stem: p for p in table.parent.glob("*/J*/*.png")}
    return Catalog(table, [found.get(name.strip()) for name in columns["iauname"]], columns, votes, questions)


READERS = {"csv": read_vote_csv, "gz2": read_gz2, "kaggle_gz": read_kaggle, "gz_decals": read_decals}
