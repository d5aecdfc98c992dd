"""Shared fixtures: tiny image datasets, a weights file and local HTTP servers, all made by the
tests themselves."""

from __future__ import annotations

import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

# Offline by design: nothing here may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The disk cache of decoded images and features (galaxytune.cache) starts empty for each session.
os.environ["GALAXYTUNE_CACHE"] = tempfile.mkdtemp(prefix="galaxytune-test-cache-")
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED = Path(os.environ.get("GALAXYTUNE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
COLOURS = {"red": 0, "green": 1, "blue": 2}


class LocalHTTPServer:
    """A real HTTP server on 127.0.0.1 (a free port) answering with ``handler`` in a background
    thread: what code that downloads is tested against, since no test may reach the internet."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.address = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # no access log in the test output
        pass


# Settings that make a full train run take seconds on a CPU.
FAST = [
    "data.image_size=32", "data.num_workers=0", "transfer.epochs=4", "transfer.patience=4",
    "finetune.epochs=2", "finetune.batch_size=16", "trainer.progress=false",
]


def draw(label: str, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """A noisy image whose class is the colour of a bright square: learnable in a few steps."""
    pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    lo, hi = size // 4, 3 * size // 4
    # Unknown labels get a channel from their name, so any class name works.
    pixels[lo:hi, lo:hi, COLOURS.get(label, sum(map(ord, label)) % 3)] = 230
    return pixels


def write_folder(root: Path, counts: dict[str, int], seed: int = 0, ext: str = ".png", size: int = 40) -> Path:
    """``root/<class>/<i><ext>`` with counts[class] images each."""
    rng = np.random.default_rng(seed)
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(draw(label, rng, size)).save(root / label / f"{label}_{i}{ext}")
    return root


@pytest.fixture
def tiny_split(tmp_path: Path) -> Path:
    """An image-folder dataset with train/, val/ and test/ folders."""
    root = tmp_path / "data"
    for split, n, seed in (("train", 16, 0), ("val", 6, 1), ("test", 6, 2)):
        write_folder(root / split, dict.fromkeys(COLOURS, n), seed)
    return root


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> Path:
    """A mobilenetv1_100 state dict (random init, 1000-class head) as safetensors."""
    import timm

    path = tmp_path_factory.mktemp("weights") / "mobilenetv1_100.safetensors"
    # Seeded and on its own random state: the weights are the same whichever test asks first,
    # and that test's random numbers are not consumed.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = timm.create_model("mobilenetv1_100", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
