"""Finding, splitting and decoding labelled images, and the errors bad input gets."""

import csv
import gzip

import numpy as np
import pytest
from conftest import write_folder
from PIL import Image

from galaxytune.config import DataConfig
from galaxytune.data.formats import find_labelled, find_samples
from galaxytune.data.images import read_image
from galaxytune.data.pixels import to_uint8
from galaxytune.data.prepare import prepare
from galaxytune.data.readers.catalog import catalog_paths
from galaxytune.data.samples import split_name
from galaxytune.data.splits import make_splits
from galaxytune.errors import DataError
from galaxytune.run_folder import RunFolder


def test_folders_with_all_splits(tiny_split):
    found = find_labelled(tiny_split, "filename", "label")
    assert set(found) == {"train", "val", "test"}
    assert len(found["train"]) == 48 and {s.label for s in found["val"]} == {"red", "green", "blue"}


def test_missing_val_and_test_are_carved_stratified_and_reproducibly(tmp_path):
    root = write_folder(tmp_path / "d" / "train", {"a": 40, "b": 20})
    found = find_labelled(root.parent, "f", "l")
    one = make_splits(found, 0.2, 0.2, seed=3)
    two = make_splits(found, 0.2, 0.2, seed=3)
    assert [s.path for s in one["test"]] == [s.path for s in two["test"]]
    assert len(one["test"]) == 12 and len(one["val"]) == 12
    assert sum(s.label == "b" for s in one["test"]) == 4  # stratified: a third of the pool is b
    paths = [set(s.path for s in one[k]) for k in ("train", "val", "test")]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])


def test_prepare_writes_splits_csv(tmp_path):
    write_folder(tmp_path / "d", {"a": 12, "b": 12})  # class folders directly under the root
    cfg = DataConfig(path=str(tmp_path / "d"), image_size=16, num_workers=0)
    prepared = prepare(cfg, RunFolder(tmp_path))
    rows = list(csv.DictReader(open(tmp_path / "splits.csv")))
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert len(rows) == 24 and prepared.classes == ["a", "b"]
    assert prepared.sets["train"].pixels.shape[1:] == (3, 16, 16)


def test_csv_catalog_with_chosen_columns_and_split_column(tmp_path):
    write_folder(tmp_path / "img", {"x": 6, "y": 6})
    rows = [("img/" + p.parent.name + "/" + p.name, p.parent.name) for p in sorted((tmp_path / "img").rglob("*.png"))]
    with open(tmp_path / "cat.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "morph", "split"])
        for i, (path, label) in enumerate(rows):
            w.writerow([path, label, "val" if i % 3 == 0 else "train"])
    found = find_labelled(tmp_path / "cat.csv", "file", "morph")
    assert set(found) == {"train", "val"} and len(found["val"]) == 4
    with pytest.raises(DataError, match="no column 'filename'.*--path-column"):
        find_labelled(tmp_path / "cat.csv", "filename", "morph")


def test_gzipped_csv_catalog_is_read_like_a_plain_one(tmp_path):
    write_folder(tmp_path / "img", {"x": 6, "y": 6})
    rows = "".join(f"img/{p.parent.name}/{p.name},{p.parent.name},{'Valid' if i % 3 == 0 else ''}\n"
                   for i, p in enumerate(sorted((tmp_path / "img").rglob("*.png"))))
    with gzip.open(tmp_path / "cat.csv.gz", "wt", encoding="utf-8") as f:
        f.write("filename,label,split\n" + rows)
    found = find_labelled(tmp_path / "cat.csv.gz", "filename", "label")
    assert set(found) == {"train", "val"} and len(found["val"]) == 4 and len(found["train"]) == 8
    # Detected as a catalog and read by the same reader, as data.path with the format found by itself.
    samples = find_samples(DataConfig(path=str(tmp_path / "cat.csv.gz")))
    assert {k: len(v) for k, v in samples.items()} == {"train": 8, "val": 4}
    assert catalog_paths(tmp_path / "cat.csv.gz", "filename")[0] == tmp_path / rows.split(",")[0]


def test_csv_row_with_missing_file_is_named(tmp_path):
    (tmp_path / "cat.csv").write_text("filename,label\nnope/gone.png,a\n")
    with pytest.raises(DataError, match=r"line 2: .*nope/gone\.png"):
        find_labelled(tmp_path / "cat.csv", "filename", "label")


def test_missing_path_and_empty_class_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_labelled(tmp_path / "absent", "f", "l")
    write_folder(tmp_path / "d" / "train", {"a": 3})
    (tmp_path / "d" / "train" / "empty").mkdir()
    with pytest.raises(DataError, match=r"train/empty holds no images"):
        find_labelled(tmp_path / "d", "f", "l")


def test_val_label_missing_from_train_and_single_class_val(tmp_path):
    write_folder(tmp_path / "d" / "train", {"a": 4, "b": 4})
    write_folder(tmp_path / "d" / "val", {"a": 2, "c": 2})
    write_folder(tmp_path / "d" / "test", {"a": 2, "b": 2})
    with pytest.raises(DataError, match="val split has class.*c.*train split lacks"):
        make_splits(find_labelled(tmp_path / "d", "f", "l"), 0.2, 0.2, 0)
    write_folder(tmp_path / "e" / "train", {"a": 4, "b": 4})
    write_folder(tmp_path / "e" / "val", {"a": 2})
    write_folder(tmp_path / "e" / "test", {"a": 2, "b": 2})
    with pytest.raises(DataError, match="val split holds a single class"):
        make_splits(find_labelled(tmp_path / "e", "f", "l"), 0.2, 0.2, 0)


def test_corrupt_and_truncated_images_are_skipped_and_listed(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 10, "b": 10}, ext=".jpg")
    (root / "a" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    good = (root / "b" / "b_0.jpg").read_bytes()
    (root / "b" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    cfg = DataConfig(path=str(root), image_size=16, num_workers=0)
    prepared = prepare(cfg, RunFolder(tmp_path))
    listed = {r["path"] for r in csv.DictReader(open(tmp_path / "unreadable_images.csv"))}
    assert listed == {str(root / "a" / "garbage.jpg"), str(root / "b" / "truncated.jpg")}
    assert sum(len(s) for s in prepared.sets.values()) == 20


def test_greyscale_16bit_and_non_square_images_become_rgb_squares(tmp_path):
    grey = np.tile(np.arange(60, dtype=np.uint8), (40, 1))
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    Image.fromarray(grey.astype(np.uint16) * 1000).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g.png", 24)
    assert out.shape == (3, 24, 24) and out.dtype == np.uint8
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])
    out16 = read_image(tmp_path / "g16.png", 24)
    assert out16.max() > 200 and out16.min() < 60
    # The centre crop keeps the middle of the wide image: the left/right extremes are cut.
    assert out[0, 12, 0] > grey[20, 0] and out[0, 12, -1] < grey[20, -1]


def test_csv_with_byte_order_mark_and_non_utf8_csv(tmp_path):
    write_folder(tmp_path / "img", {"x": 2})
    (tmp_path / "bom.csv").write_text("filename,label\nimg/x/x_0.png,x\n", encoding="utf-8-sig")
    assert len(find_labelled(tmp_path / "bom.csv", "filename", "label")["train"]) == 1
    (tmp_path / "latin.csv").write_bytes("filename,label\nimg/x/x_0.png,galáxia\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.csv is not a readable UTF-8 CSV"):
        find_labelled(tmp_path / "latin.csv", "filename", "label")


def test_split_names_take_aliases_in_any_case_and_name_the_line_otherwise():
    assert [split_name(t, "t.csv line 2") for t in ("", " Train", "VALID", "validation", "test")] == [
        "train", "train", "val", "val", "test"]
    with pytest.raises(DataError, match="t.csv line 2: split 'holdout' is not train/val/test"):
        split_name(" holdout ", "t.csv line 2")


def test_pixels_of_any_type_scale_to_uint8_over_their_finite_range():
    assert to_uint8(np.array([[0, 1000], [500, 1000]], np.uint16)).tolist() == [[0, 255], [127, 255]]
    assert to_uint8(np.array([np.nan, -np.inf, 2.0, 4.0, np.inf])).tolist() == [0, 0, 0, 255, 255]
    assert not to_uint8(np.full((2, 2), 7.0)).any()
