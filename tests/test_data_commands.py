"""`bench data download` against a local HTTP server (resume, checksum) and `bench data check`."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.data import download
from tests.release_fixtures import HC18_CSV, write_hc18_release

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


class Server:
    """Serves fixed bytes per path on 127.0.0.1, honouring ``Range: bytes=N-`` unless told not to."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.ranges: list[str | None] = []  # the Range header of every request, in order
        self.cut_first_after: int | None = None  # send only this many bytes of the first response
        self.honour_ranges = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
                body = server.files.get(self.path.split("?")[0])
                server.ranges.append(self.headers.get("Range"))
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                requested = self.headers.get("Range")
                if requested and server.honour_ranges:
                    start = int(requested.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.cut_first_after is not None:
                    payload, server.cut_first_after = payload[: server.cut_first_after], None
                    self.close_connection = True
                self.wfile.write(payload)

            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def hc18_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A small HC18-format zip and CSV behind a local server, named by a patched manifest."""
    release = write_hc18_release(tmp_path / "source", count=10)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted((release / "training_set").iterdir()):
            bundle.write(path, f"training_set/{path.name}")  # the release zip's own top folder
    files = {"/training_set.zip": buffer.getvalue(), f"/{HC18_CSV}": (release / HC18_CSV).read_bytes()}
    server = Server(files)
    manifest = tuple(
        download.RemoteFile(
            f"{server.url}{path}?download=1",
            path[1:],
            hashlib.md5(body).hexdigest(),
            unpack=path.endswith(".zip"),
        )
        for path, body in files.items()
    )
    monkeypatch.setattr(download, "HC18_FILES", manifest)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=10)


def test_download_resumes_verifies_unpacks_and_checks(tmp_path, hc18_server):
    root = tmp_path / "data"
    zip_size = len(hc18_server.files["/training_set.zip"])
    hc18_server.cut_first_after = zip_size // 3
    first = invoke("data", "download", "hc18", "--data-root", str(root))
    assert first.exit_code == 2 and "interrupted" in first.output and "resume" in first.output
    partial = root / "hc18/.bench/downloads/training_set.zip.part"
    assert partial.stat().st_size == zip_size // 3

    second = invoke("data", "download", "hc18", "--data-root", str(root))
    assert second.exit_code == 0, second.output
    assert hc18_server.ranges[:2] == [None, f"bytes={zip_size // 3}-"]  # the second request resumed
    assert len(list((root / "hc18/training_set").glob("*_HC.png"))) == 10
    assert (root / "hc18" / HC18_CSV).read_bytes() == hc18_server.files[f"/{HC18_CSV}"]
    assert not list((root / "hc18/.bench").rglob("*.zip*"))  # nothing left behind but the tool's folder

    check = invoke("data", "check", "hc18", "--data-root", str(root))
    assert check.exit_code == 0, check.output
    for fragment in ("found:     10", "usable:    10", "train 7, val 1, test 2", "640×640", "hc18 is usable"):
        assert fragment in check.output, check.output

    again = invoke("data", "download", "hc18", "--data-root", str(root))
    assert again.exit_code == 0 and "already" in again.output and len(hc18_server.ranges) == 3


def test_download_accepts_a_mirror_with_the_csv_inside_the_image_folder(tmp_path, hc18_server):
    root = tmp_path / "data"
    assert invoke("data", "download", "hc18", "--data-root", str(root)).exit_code == 0
    requests = len(hc18_server.ranges)
    (root / "hc18" / HC18_CSV).rename(root / "hc18" / "training_set" / HC18_CSV)  # a layout the loader reads
    again = invoke("data", "download", "hc18", "--data-root", str(root))
    assert again.exit_code == 0 and "already" in again.output, again.output
    assert len(hc18_server.ranges) == requests


def test_download_with_a_wrong_checksum_fails_and_discards_the_file(tmp_path, hc18_server, monkeypatch):
    wrong = tuple(download.RemoteFile(r.url, r.name, "0" * 32, r.unpack) for r in download.HC18_FILES)
    monkeypatch.setattr(download, "HC18_FILES", wrong)
    result = invoke("data", "download", "hc18", "--data-root", str(tmp_path))
    assert result.exit_code == 2 and "MD5" in result.output and "0" * 32 in result.output
    assert not list((tmp_path / "hc18/.bench/downloads").iterdir())
    assert not (tmp_path / "hc18/training_set").exists()


def test_download_starts_over_when_the_server_ignores_the_range(tmp_path, hc18_server):
    downloads = tmp_path / "hc18/.bench/downloads"
    downloads.mkdir(parents=True)
    (downloads / "training_set.zip.part").write_bytes(b"stale bytes of another file")
    hc18_server.honour_ranges = False
    result = invoke("data", "download", "hc18", "--data-root", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert hc18_server.ranges[0] == "bytes=27-"
    assert len(list((tmp_path / "hc18/training_set").glob("*HC_Annotation.png"))) == 20  # _HC and _2HC


def test_download_of_registered_datasets_says_where_and_how(tmp_path):
    for dataset, fragments in (
        ("camus", ("#collection/6373703d73e9f0047faa1bc8", "Leclerc", "patientXXXX/patientXXXX_2CH_ED.nii.gz")),
        ("acdc", ("#collection/637218c173e9f0047faa00fb", "CC BY-NC-SA 4.0", "Bernard", "frameXX_gt.nii.gz")),
    ):
        result = invoke("data", "download", dataset, "--data-root", str(tmp_path))
        assert result.exit_code == 0, result.output
        for fragment in fragments:
            assert fragment in result.output, result.output
    assert not any(tmp_path.iterdir())  # nothing is fetched or written


def test_check_fails_with_exit_2_when_missing_or_unusable(tmp_path):
    missing = invoke("data", "check", "acdc", "--data-root", str(tmp_path))
    assert missing.exit_code == 2
    assert f"ACDC (acdc): no release folder under '{tmp_path / 'acdc'}'" in missing.output
    assert "Expected layout: <data_root>/acdc/training/patientNNN/" in missing.output
    (tmp_path / "acdc").mkdir()
    empty = invoke("data", "check", "acdc", "--data-root", str(tmp_path))
    assert empty.exit_code == 2 and "no patientNNN folders found" in empty.output

    write_hc18_release(tmp_path, count=1)  # one subject cannot fill three splits
    unusable = invoke("data", "check", "hc18", "--data-root", str(tmp_path))
    assert unusable.exit_code == 2, unusable.output
    assert "usable:    1" in unusable.output and "no images in its val and test split" in unusable.output
