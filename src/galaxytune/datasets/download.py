"""Resumable, hash-checked downloads through pooch, and archive unpacking that stays inside its folder.

pooch 1.9 streams every download into a fresh temporary file and deletes it on any failure, so an
interrupted transfer always starts again from byte 0. :class:`ResumingDownloader` plugs into pooch's
downloader API and keeps the bytes received so far in ``.<name>.part`` beside the target; the next
attempt asks the server for the rest with an HTTP Range request. pooch still owns the hash check and
the final rename, so a file only ever appears under its own name once its hash matched.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import pooch
import requests

from galaxytune.console import interactive
from galaxytune.errors import DataError
from galaxytune.files import atomic_path

CHUNK = 1 << 16  # small enough that a cut transfer keeps nearly all it received


class ResumingDownloader:
    """A pooch downloader that appends to ``partial`` from where an earlier attempt stopped."""

    def __init__(self, partial: Path, progressbar: bool = True, timeout: float = 60):
        self.partial = Path(partial)
        self.progressbar = progressbar
        self.timeout = timeout

    def __call__(self, url: str, output_file: str, pooch_obj) -> None:
        start = self.partial.stat().st_size if self.partial.exists() else 0
        # identity: byte ranges and the hash refer to the file as stored, not a gzip transfer encoding
        headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={start}-"} if start else {})
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
            # 416: nothing left past `start`, i.e. the partial file is already whole. pooch's hash
            # check decides whether it is good; if not, it is deleted and the next try starts afresh.
            if not (start and response.status_code == 416):
                response.raise_for_status()
                resumed = bool(start) and response.status_code == 206
                if resumed and _range_start(response) != start:
                    self.partial.unlink()
                    raise DataError(f"{url} answered a resume request with the wrong byte range; the partial "
                                    "download was discarded, run the same command again to start afresh")
                self._receive(response, start if resumed else 0)
        # pooch hashes output_file and renames it into place; the partial file is used up either way.
        os.replace(self.partial, output_file)

    def _receive(self, response: requests.Response, start: int) -> None:
        from tqdm.auto import tqdm

        total = start + int(response.headers.get("Content-Length", 0)) or None
        with open(self.partial, "ab" if start else "wb") as out, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, disable=not (self.progressbar and interactive()),
            file=sys.stderr,
        ) as bar:
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def _range_start(response: requests.Response) -> int | None:
    """The first byte of a 206 answer, from ``Content-Range: bytes START-END/TOTAL``."""
    unit, _, spec = response.headers.get("Content-Range", "").partition(" ")
    first = spec.split("-", 1)[0]
    return int(first) if unit == "bytes" and first.isdigit() else None


def fetch(url: str, known_hash: str | None, folder: Path, name: str, progressbar: bool = True) -> Path:
    """Download ``url`` to ``folder/name`` unless a file with the right hash is already there."""
    folder = Path(folder)
    partial = folder / f".{name}.part"
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # our messages replace pooch's "use this value as known_hash" advice
    try:
        return Path(pooch.retrieve(url, known_hash, fname=name, path=folder,
                                   downloader=ResumingDownloader(partial, progressbar)))
    except requests.RequestException as exc:
        kept = partial.stat().st_size if partial.exists() else 0
        resume = f" {kept} bytes are kept in {partial}; run the same command again to resume." if kept else ""
        raise DataError(f"Download of {name} from {url} failed: {exc}.{resume}") from exc
    except ValueError as exc:  # pooch's hash mismatch; it has already deleted the download
        raise DataError(f"{exc} (source: {url})") from exc
    except OSError as exc:  # a folder that cannot be created or written, a full disk
        raise DataError(f"Cannot save {name} in {folder}: {exc}. Choose another folder with --dir.") from exc
    finally:
        logger.setLevel(level)


def unpack(path: Path, folder: Path) -> Path:
    """Unpack a zip, tar or single-file .gz into ``folder`` (once); return what was unpacked."""
    try:
        return _unpack(Path(path), Path(folder))
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as exc:
        # e.g. an HTML error page saved under the archive's name by an unchecked (--no-verify) download
        reason = " ".join(str(exc).split())
        raise DataError(
            f"Cannot unpack {path}: {type(exc).__name__}: {reason}. Delete it and download it again."
        ) from exc


def _unpack(path: Path, folder: Path) -> Path:
    name = path.name
    if name.endswith(".zip"):
        return _unpack_into(folder / name[: -len(".zip")], lambda tmp: _extract_zip(path, tmp))
    for ext in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"):
        if name.endswith(ext):
            return _unpack_into(folder / name[: -len(ext)], lambda tmp: _extract_tar(path, tmp))
    if name.endswith(".gz"):
        target = folder / name[: -len(".gz")]
        if not target.exists():
            with gzip.open(path, "rb") as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
        return target
    raise DataError(f"Do not know how to unpack {path}: expected .zip, .tar(.gz|.bz2|.xz), .tgz or .gz")


def _unpack_into(target: Path, extract) -> Path:
    """Extract into a hidden sibling folder, then rename: a half-unpacked folder never looks complete."""
    if target.exists():
        return target
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        extract(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_member(archive: Path, name: str, what: str = "member") -> None:
    """Refuse absolute paths and any '..' part, whichever OS the archive was made on."""
    parts = PureWindowsPath(name).parts  # splits on both / and \
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor or ".." in parts:
        raise DataError(f"Refusing to unpack {archive}: {what} {name!r} is absolute or has a '..' part, "
                        "so it could land outside the target folder")


def _extract_zip(archive: Path, folder: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for member in members:  # check every name before writing anything
            _check_member(archive, member.filename)
        zf.extractall(folder, members)


def _extract_tar(archive: Path, folder: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            _check_member(archive, member.name)
            if member.issym() or member.islnk():
                _check_member(archive, member.linkname, f"link {member.name!r} ->")
            elif not (member.isfile() or member.isdir()):
                raise DataError(f"Refusing to unpack {archive}: {member.name!r} is not a regular file or folder")
        # The "data" filter (Python 3.12, backported to 3.10.12/3.11.4) re-checks each path as it is
        # written, following links already extracted; older Pythons rely on the checks above.
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(folder, members, **extra)
