"""The on-disk cache shared by runs: decoded images and stage-1 features.

A second run on the same images (other finetune settings, another seed) then skips decoding
and the frozen-backbone feature pass. Entries are keyed by a SHA-256 over everything their
content depends on: the images' stored bytes (not their names or dates), the input size and
crop, and for features the model, its weights file and its input stretch. A changed image or
setting is a new key, never a stale hit. Entries are written atomically; delete the folder
to reclaim the space (``galaxytune`` never prunes it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from galaxytune.files import atomic_path

log = logging.getLogger(__name__)


def cache_home() -> Path:
    """``$GALAXYTUNE_CACHE``, else ``$XDG_CACHE_HOME/galaxytune`` (``~/.cache/galaxytune``)."""
    if os.environ.get("GALAXYTUNE_CACHE"):
        return Path(os.environ["GALAXYTUNE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "galaxytune"


def key_of(*parts) -> str:
    """A SHA-256 over JSON-able ``parts`` (lists of digests included)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_arrays(folder: Path, kind: str, key: str) -> dict[str, np.ndarray] | None:
    """A cached entry's arrays, or None when there is none (or it cannot be read)."""
    path = folder / f"{kind}-{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as entry:
            return {name: entry[name] for name in entry.files}
    except (OSError, ValueError):  # a damaged entry is a miss, and is rewritten
        return None


def save_arrays(folder: Path, kind: str, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write an entry; a cache that cannot be written (read-only, disk full) is skipped."""
    try:
        with atomic_path(folder / f"{kind}-{key}.npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    except OSError as exc:
        log.warning(f"Warning: could not write the cache in {folder} ({exc}); the run goes on without it.")
