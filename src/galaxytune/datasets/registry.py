"""Public galaxy datasets galaxytune can download: where each file lives, its hash, licence and citation.

Every URL and hash below names where it was found. ``known_hash`` is in pooch's ``alg:hex`` form, or
None where no published value was found: such a file is only downloaded with ``verify=False``
(``--no-verify``). ``size`` is the exact byte count, or None where the publisher gives only a rounded
figure (kept in ``approx_size``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from galaxytune.cache import cache_home
from galaxytune.console import STDERR, ensure_console_logging
from galaxytune.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    known_hash: str | None
    size: int | None = None
    unpack: bool = False  # zip/tar archives are unpacked into a folder, .gz files decompressed


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    description: str
    licence: str
    citation: str
    homepage: str
    approx_size: str
    files: tuple[RemoteFile, ...]


GALAXY10_DECALS = Dataset(
    name="galaxy10_decals",
    title="Galaxy10 DECaLS",
    description="17,736 galaxies, 256x256 g/r/z colour cutouts from the DESI Legacy Imaging Surveys in 10 "
                "Galaxy Zoo morphology classes; one HDF5 file (datasets 'images', 'ans', 'ra', 'dec', 'redshift').",
    # Not stated with the file; MultimodalUniverse redistributes it as MIT. Check the Zenodo record.
    licence="not stated by the publisher (MultimodalUniverse mirror: MIT); see Zenodo record 10845026",
    citation="Leung & Bovy 2019, MNRAS 483, 3255, doi:10.1093/mnras/sty3217 (astroNN, Galaxy10); labels: "
             "Walmsley et al. 2022, MNRAS 509, 3966, doi:10.1093/mnras/stab2093; images: Dey et al. 2019, "
             "AJ 157, 168, doi:10.3847/1538-3881/ab089d",
    homepage="https://astronn.readthedocs.io/en/latest/galaxy10.html",
    approx_size="2.54 GB",  # henrysky/Galaxy10 README
    files=(
        RemoteFile(
            "Galaxy10_DECals.h5",
            # Zenodo copy of https://astro.utoronto.ca/~hleung/shared/Galaxy10/Galaxy10_DECals.h5 (same md5,
            # c6b7b4db82b3a5d63d6a7e3e5249b51c, is quoted for both URLs by independent downloaders).
            "https://zenodo.org/records/10845026/files/Galaxy10_DECals.h5",
            # Publisher's SHA256: henrysky/Galaxy10 README and astroNN/datasets/galaxy10.py (henrysky/astroNN).
            "sha256:19aefc477c41bb7f77ff07599a6b82a038dc042f889a111b0d4d98bb755c1571",
        ),
    ),
)

GALAXY_MNIST = Dataset(
    name="galaxy_mnist",
    title="GalaxyMNIST",
    description="10,000 DECaLS galaxies, 64x64 RGB, in 4 confidently labelled Galaxy Zoo DECaLS classes "
                "(smooth round, smooth cigar, edge-on disk, unbarred spiral); canonical 8,000/2,000 train/test HDF5.",
    licence="none stated in github.com/mwalmsley/galaxy_mnist; labels from Galaxy Zoo DECaLS "
            "(doi:10.5281/zenodo.4573248)",
    citation="Walmsley et al. 2022, MNRAS 509, 3966, doi:10.1093/mnras/stab2093 (Galaxy Zoo DECaLS); "
             "acknowledge the DECaLS survey",
    homepage="https://github.com/mwalmsley/galaxy_mnist",
    approx_size="unknown",
    # URLs and md5s: GalaxyMNIST.resources in mwalmsley/galaxy_mnist galaxy_mnist.py (the same pairs are
    # registered in a Julia DataDeps package).
    files=(
        RemoteFile("train_dataset.hdf5.gz", "https://dl.dropboxusercontent.com/s/5a14de0o7slyif9/train_dataset.hdf5.gz",
                   "md5:e408ae294e9b975482dc1abffeb373a6", unpack=True),
        RemoteFile("test_dataset.hdf5.gz", "https://dl.dropboxusercontent.com/s/5rza12nn24cwd2k/test_dataset.hdf5.gz",
                   "md5:7a940e4cea64a8b7cb60339098f74490", unpack=True),
    ),
)

GZ2_HART16 = Dataset(
    name="gz2_hart16",
    title="Galaxy Zoo 2 (Hart et al. 2016 table) with its images",
    description="Galaxy Zoo 2 volunteer votes and vote fractions for SDSS DR7 galaxies (Hart et al. 2016 "
                "debiasing, table 1), the 424x424 JPEG images of the original sample and the objid-to-image map.",
    licence="images: Zenodo record 3565489 (CC BY 4.0 as quoted by third parties, unverified); "
            "table: none stated on data.galaxyzoo.org",
    citation="Willett et al. 2013, MNRAS 435, 2835, doi:10.1093/mnras/stt1458; Hart et al. 2016, MNRAS 461, "
             "3663, doi:10.1093/mnras/stw1588; images: doi:10.5281/zenodo.3565489",
    homepage="https://data.galaxyzoo.org/",
    approx_size="~3.4 GB",  # images_gz2.zip as quoted by third-party downloaders; not published exactly
    files=(
        # data.galaxyzoo.org, "GZ2 - Table 1 - Normal-depth sample with new debiasing method - CSV".
        # No published hash found.
        RemoteFile("gz2_hart16.csv.gz", "https://gz2hart.s3.amazonaws.com/gz2_hart16.csv.gz", None),
        # md5 as used by third-party GZ2 downloaders; not confirmed against the Zenodo record itself.
        RemoteFile("gz2_filename_mapping.csv", "https://zenodo.org/records/3565489/files/gz2_filename_mapping.csv",
                   "md5:7e28465e6dfbf96c0d828c595a5bbd80"),
        # md5 from mwalmsley/galaxy-datasets (the Galaxy Zoo team's gz2 downloader), Zenodo record 3565489.
        RemoteFile("images_gz2.zip", "https://zenodo.org/records/3565489/files/images_gz2.zip",
                   "md5:bc647032d31e50c798770cf4430525c7", unpack=True),
    ),
)

REGISTRY: dict[str, Dataset] = {d.name: d for d in (GALAXY10_DECALS, GALAXY_MNIST, GZ2_HART16)}


def _registry(registry: Mapping[str, Dataset] | None) -> Mapping[str, Dataset]:
    return REGISTRY if registry is None else registry


def get(name: str, registry: Mapping[str, Dataset] | None = None) -> Dataset:
    datasets = _registry(registry)
    if name not in datasets:
        raise DataError(f"Unknown dataset {name!r}; known datasets: {', '.join(sorted(datasets))}")
    return datasets[name]


def _size(nbytes: int | None) -> str:
    return "size unknown" if nbytes is None else f"{nbytes:,} bytes"


def list_text(registry: Mapping[str, Dataset] | None = None) -> str:
    """One line per dataset: name, approximate size, description."""
    datasets = _registry(registry)
    width = max(map(len, datasets), default=0)
    return "\n".join(f"{d.name:<{width}}  {d.approx_size:<12}  {d.description}"
                     for d in (datasets[n] for n in sorted(datasets)))


def info_text(name: str, registry: Mapping[str, Dataset] | None = None) -> str:
    d = get(name, registry)
    lines = [f"{d.title} ({d.name})", d.description, "",
             f"licence:   {d.licence}", f"citation:  {d.citation}", f"homepage:  {d.homepage}",
             f"size:      {d.approx_size}", "files:"]
    for f in d.files:
        lines += [f"  {f.name}  ({_size(f.size)})", f"    url:  {f.url}",
                  f"    hash: {f.known_hash or 'UNKNOWN (download needs --no-verify)'}"]
    return "\n".join(lines)


def default_root() -> Path:
    return cache_home() / "datasets"


def download(name: str, root: str | Path | None = None, verify: bool = True, progressbar: bool = True,
             registry: Mapping[str, Dataset] | None = None) -> list[Path]:
    """Download (and unpack) every file of dataset ``name`` into ``root/name``; return the paths.

    A file whose hash the registry does not know is refused unless ``verify`` is False; then it is
    downloaded with a warning that prints its sha256 for the user to check.
    """
    from galaxytune.datasets.download import fetch, unpack

    dataset = get(name, registry)
    unknown = [f.name for f in dataset.files if f.known_hash is None]
    if unknown and verify:
        raise DataError(
            f"The hash of {', '.join(unknown)} ({name}) is unknown to galaxytune, so the download could not be "
            "verified. Rerun with --no-verify to download it unchecked, then compare the printed sha256 with "
            f"the publisher's ({dataset.homepage})."
        )
    ensure_console_logging()
    folder = Path(root or default_root()) / name
    paths = []
    for file in dataset.files:
        path = fetch(file.url, file.known_hash, folder, file.name, progressbar)
        if file.known_hash is None:
            _warn_unverified(path)
        paths.append(unpack(path, folder) if file.unpack else path)
    return paths


def _warn_unverified(path: Path) -> None:
    from pooch import file_hash

    # On stderr: the download command prints the downloaded paths on stdout.
    log.warning(f"WARNING: {path} was downloaded WITHOUT a hash check (--no-verify): its sha256 is "
                f"{file_hash(str(path))}. Compare it with the publisher's before trusting the data.", extra=STDERR)
