"""Dataset registry and downloads, against a real HTTP server on 127.0.0.1 serving files the tests make."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import LocalHTTPServer, QuietHandler

from galaxytune.cli import main
from galaxytune.datasets import registry
from galaxytune.datasets.download import unpack
from galaxytune.datasets.registry import Dataset, RemoteFile
from galaxytune.errors import DataError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: many download chunks, so a cut leaves some on disk


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server(LocalHTTPServer):
    """Serves ``root`` over HTTP; ``ranges`` honours Range requests, ``cut_next`` truncates one transfer."""

    def __init__(self, root: Path):
        self.root, self.ranges, self.cut_next, self.log = root, True, False, []
        super().__init__(self._handler())

    def url(self, name: str) -> str:
        return f"{self.address}/{name}"

    def _handler(self):
        server = self

        class Handler(QuietHandler):
            def do_GET(self):
                data = (server.root / self.path.lstrip("/")).read_bytes()
                requested = self.headers.get("Range")
                start = int(requested[len("bytes="):].split("-")[0]) if requested and server.ranges else 0
                server.log.append((self.path, requested, 206 if start else 200))
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))  # always the full length
                self.end_headers()
                if server.cut_next:  # send half, then close the connection
                    server.cut_next = False
                    body = body[: len(body) // 2]
                self.wfile.write(body)

        return Handler


@pytest.fixture
def server(tmp_path):
    (tmp_path / "www").mkdir()
    srv = Server(tmp_path / "www")
    yield srv
    srv.close()


def serve(server: Server, name: str, data: bytes, known_hash: str | None = "right", unpack: bool = False) -> Dataset:
    """Put ``data`` on the server and return a one-file dataset pointing at it."""
    (server.root / name).write_bytes(data)
    if known_hash == "right":
        known_hash = f"sha256:{sha256(data)}"
    file = RemoteFile(name, server.url(name), known_hash, len(data), unpack)
    return Dataset("tiny", "Tiny", "a test set", "CC0", "Nobody 2024, doi:10.0/none", server.url(""), "1 MB",
                   (file,))


def download(dataset: Dataset, root: Path, **kwargs) -> list[Path]:
    return registry.download(dataset.name, root, progressbar=False, registry={dataset.name: dataset}, **kwargs)


def test_a_good_download_lands_under_its_name_with_nothing_left_beside_it(server, tmp_path):
    dataset = serve(server, "cube.h5", PAYLOAD)
    [path] = download(dataset, tmp_path / "data")
    assert path == tmp_path / "data" / "tiny" / "cube.h5"
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in path.parent.iterdir()] == ["cube.h5"]
    # A second call finds the verified file and does not download again.
    assert download(dataset, tmp_path / "data") == [path] and len(server.log) == 1


def test_a_wrong_hash_is_one_clear_error_and_leaves_nothing_that_looks_valid(server, tmp_path):
    wrong = "0" * 64
    dataset = serve(server, "cube.h5", PAYLOAD, known_hash=f"sha256:{wrong}")
    with pytest.raises(DataError) as err:
        download(dataset, tmp_path)
    message = str(err.value)
    assert "cube.h5" in message and wrong in message and sha256(PAYLOAD) in message
    assert list((tmp_path / "tiny").iterdir()) == []  # no file, no partial, no pooch temporary


def test_a_transfer_cut_off_halfway_fails_clearly_and_the_next_attempt_resumes(server, tmp_path):
    dataset = serve(server, "cube.h5", PAYLOAD)
    server.cut_next = True
    with pytest.raises(DataError, match="run the same command again to resume") as err:
        download(dataset, tmp_path)
    partial = tmp_path / "tiny" / ".cube.h5.part"
    kept = partial.stat().st_size
    assert 0 < kept < len(PAYLOAD) and str(kept) in str(err.value)
    assert not (tmp_path / "tiny" / "cube.h5").exists()

    [path] = download(dataset, tmp_path)
    assert path.read_bytes() == PAYLOAD and not partial.exists()
    assert server.log[-1] == ("/cube.h5", f"bytes={kept}-", 206)  # only the missing bytes were sent


def test_a_server_without_ranges_makes_the_retry_start_over(server, tmp_path):
    dataset = serve(server, "cube.h5", PAYLOAD)
    server.ranges, server.cut_next = False, True
    with pytest.raises(DataError):
        download(dataset, tmp_path)
    kept = (tmp_path / "tiny" / ".cube.h5.part").stat().st_size
    [path] = download(dataset, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.log[-1] == ("/cube.h5", f"bytes={kept}-", 200)  # asked to resume, got the whole file


def test_an_unknown_hash_is_refused_unless_no_verify_and_then_warns_with_the_sha256(server, tmp_path, capsys):
    dataset = serve(server, "table.csv.gz", PAYLOAD, known_hash=None)
    with pytest.raises(DataError, match=r"hash of table\.csv\.gz \(tiny\) is unknown.*--no-verify"):
        download(dataset, tmp_path)
    assert server.log == [] and not (tmp_path / "tiny").exists()
    [path] = download(dataset, tmp_path, verify=False)
    assert path.read_bytes() == PAYLOAD
    err = capsys.readouterr().err
    assert "WITHOUT a hash check" in err and sha256(PAYLOAD) in err


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buffer.getvalue()


def test_a_downloaded_archive_is_unpacked_into_its_own_folder(server, tmp_path):
    dataset = serve(server, "images.zip", zip_bytes({"images/1.jpg": b"one", "images/2.jpg": b"two"}), unpack=True)
    [folder] = download(dataset, tmp_path)
    assert folder == tmp_path / "tiny" / "images"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg")) == ["images/1.jpg", "images/2.jpg"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["images", "images.zip"]  # no half-unpacked folder


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
@pytest.mark.parametrize("evil", ["../evil.txt", "good/../../evil.txt", "ABSOLUTE"])
def test_archive_members_that_would_land_outside_are_refused(tmp_path, kind, evil):
    outside = tmp_path / "evil.txt"
    name = outside.as_posix() if evil == "ABSOLUTE" else evil
    members = {"fine.txt": b"ok", name: b"pwned"}
    archive = tmp_path / "dl" / f"bundle.{kind}"
    archive.parent.mkdir()
    archive.write_bytes(zip_bytes(members) if kind == "zip" else tar_bytes(members))
    with pytest.raises(DataError, match="could land outside the target folder"):
        unpack(archive, archive.parent)
    assert not outside.exists()
    assert sorted(p.name for p in archive.parent.iterdir()) == [archive.name]  # nothing unpacked at all


@pytest.mark.parametrize("target", ["../../etc", "/etc"])
def test_tar_links_pointing_outside_are_refused(tmp_path, target):
    archive = tmp_path / "links.tar.gz"
    archive.write_bytes(tar_bytes({"a.txt": b"a"}, links={"escape": target}))
    with pytest.raises(DataError, match="link 'escape'"):
        unpack(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_safe_tar_unpacks(tmp_path):
    archive = tmp_path / "set.tar.gz"
    archive.write_bytes(tar_bytes({"set/a.txt": b"a"}, links={"set/b.txt": "a.txt"}))
    folder = unpack(archive, tmp_path)
    assert (folder / "set" / "a.txt").read_bytes() == b"a"
    assert (folder / "set" / "b.txt").read_bytes() == b"a"


def test_data_list_and_info_show_the_real_registry(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("galaxy10_decals", "galaxy_mnist", "gz2_hart16"):
        assert name in out
    assert "17,736 galaxies" in out

    assert main(["data", "info", "galaxy10_decals"]) == 0
    out = capsys.readouterr().out
    assert "doi:10.1093/mnras/sty3217" in out and "licence:" in out
    assert "sha256:19aefc477c41bb7f77ff07599a6b82a038dc042f889a111b0d4d98bb755c1571" in out
    assert "https://zenodo.org/records/10845026/files/Galaxy10_DECals.h5" in out

    assert main(["data", "info", "gz2_hart16"]) == 0
    out = capsys.readouterr().out
    assert "doi:10.1093/mnras/stw1588" in out and "UNKNOWN (download needs --no-verify)" in out


def test_registry_entries_are_complete():
    for dataset in registry.REGISTRY.values():
        assert dataset.licence and "doi:" in dataset.citation and dataset.description
        for file in dataset.files:
            assert file.url.startswith("https://") and file.url.endswith(file.name)
            if file.known_hash is not None:
                alg, _, digest = file.known_hash.partition(":")
                assert len(digest) == {"md5": 32, "sha256": 64}[alg] and int(digest, 16) >= 0


def test_unknown_dataset_names_the_known_ones(capsys):
    assert main(["data", "info", "galaxy11"]) == 2
    err = capsys.readouterr().err
    assert "Unknown dataset 'galaxy11'; known datasets: galaxy10_decals, galaxy_mnist, gz2_hart16" in err
    assert "Traceback" not in err
    assert main(["data", "download", "galaxy11"]) == 2


def test_cli_download_into_dir(server, tmp_path, monkeypatch, capsys):
    dataset = serve(server, "cube.h5", PAYLOAD)
    monkeypatch.setattr(registry, "REGISTRY", {"tiny": dataset})
    assert main(["data", "list"]) == 0 and capsys.readouterr().out.startswith("tiny")
    assert main(["data", "download", "tiny", "--dir", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "d" / "tiny" / "cube.h5")

    monkeypatch.setattr(registry, "REGISTRY", {"tiny": serve(server, "t.csv", b"a,b\n", known_hash=None)})
    assert main(["data", "download", "tiny", "--dir", str(tmp_path / "e")]) == 2
    assert "--no-verify" in capsys.readouterr().err
    assert main(["data", "download", "tiny", "--dir", str(tmp_path / "e"), "--no-verify"]) == 0
    assert (tmp_path / "e" / "tiny" / "t.csv").read_bytes() == b"a,b\n"


@pytest.mark.parametrize("name", ["images.zip", "set.tar.gz", "table.csv.gz"])
def test_an_archive_that_is_not_one_is_a_clear_error(tmp_path, name):
    archive = tmp_path / name
    archive.write_bytes(b"<html>Service unavailable</html>")  # what an unchecked download may hold
    with pytest.raises(DataError, match=f"Cannot unpack .*{name}.*download it again"):
        unpack(archive, tmp_path)
