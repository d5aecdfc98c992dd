"""Image folders: labelled ones (``train/<class>/<image>``, or the class folders alone) give a
list of :class:`Sample` per split on disk; unlabelled ones, the images to predict.
"""

from __future__ import annotations

from pathlib import Path

from galaxytune.data.readers.fits import FITS_SUFFIXES
from galaxytune.data.readers.hdf5 import HDF5_SUFFIXES, file_of, row_paths
from galaxytune.data.samples import SPLIT_ALIASES, Sample, is_file
from galaxytune.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", *FITS_SUFFIXES)


def is_image(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_EXTENSIONS) and not path.name.startswith(".")


def _class_folder(folder: Path) -> list[Sample]:
    samples = []
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"{folder} holds no class folders. Expected {folder}/<class>/<image>.jpg "
            "(or train/, val/ and test/ folders above the class folders)."
        )
    for class_dir in classes:
        images = sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image(p))
        if not images:
            raise DataError(
                f"Class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}). "
                "Add images or remove the folder."
            )
        samples += [Sample(p, class_dir.name) for p in images]
    return samples


def folder_samples(root: Path, split_folders: dict[str, str]) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {}
    named = set(split_folders.values())
    for split, aliases in SPLIT_ALIASES.items():
        names = [split_folders[split]] if split in split_folders else [n for n in aliases if n not in named]
        if split in split_folders and not (root / split_folders[split]).is_dir():
            raise DataError(f"data.split_folders names {root / split_folders[split]} for the {split} split, "
                            "but there is no such folder.")
        for name in names:
            if (root / name).is_dir():
                found[split] = _class_folder(root / name)
                break
    if "train" in found:
        return found
    if found:
        raise DataError(f"{root} has {', '.join(found)} but no train/ folder of class folders.")
    # No split folders: the class folders sit directly under the root.
    return {"train": _class_folder(root)}


def find_images(paths: list[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively) under the folders given; an HDF5 file
    stands for all its rows, a row path (``file.h5::17``) for one."""
    found: list[Path] = []
    for item in paths:
        path = Path(item).expanduser()
        try:
            folder = path.is_dir()
        except OSError:  # a name the OS refuses (too long, ...): reported as not existing
            folder = False
        if folder:
            found += sorted(p for p in path.rglob("*") if p.is_file() and is_image(p))
        elif is_file(path) and path.name.lower().endswith(HDF5_SUFFIXES):
            found += row_paths(path)
        elif is_file(file_of(path)):
            found.append(path)
        else:
            raise DataError(f"{path} does not exist.")
    if not found:
        raise DataError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(str, paths))}.")
    return found
