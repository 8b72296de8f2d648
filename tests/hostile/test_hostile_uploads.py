"""The UI's upload quota under attack: many concurrent uploads, huge multi-file requests, a thousand tiny files.

Against a real server with RMBG_UPLOAD_QUOTA_MB=100 and Gradio's upload folder in a test folder,
whose size on disk is what the assertions read.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from live import SERVER_ARGS, Server, run_server

from bgremover.web.quota import PartScanner, is_file_part

MB = 1024 * 1024
QUOTA_MB, MAX_FILES = 100, 20


def test_part_headers_are_found_across_chunk_boundaries() -> None:
    first = b'Content-Disposition: form-data; name="files"; filename="a.png"'
    second = b'Content-Disposition: form-data; name="other"'
    body = b"--xyz\r\n" + first + b"\r\n\r\n--xyz is content\r\n--xyz\r\n" + second + b"\r\n\r\nb\r\n--xyz--\r\n"
    for cut in range(1, len(body)):
        scanner = PartScanner(b"\r\n--xyz")
        assert scanner.feed(body[:cut]) + scanner.feed(body[cut:]) == [first, second], cut
    assert [is_file_part(headers) for headers in (first, second)] == [True, False]


def _stored(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@pytest.fixture
def uploads(tmp_path) -> Path:
    return tmp_path / "uploads"


@pytest.fixture
def server(tmp_path, hf_home, uploads) -> Iterator[Server]:
    env = {"RMBG_UPLOAD_QUOTA_MB": str(QUOTA_MB), "RMBG_UPLOAD_MAX_FILES": str(MAX_FILES)}
    with run_server(tmp_path, hf_home, *SERVER_ARGS, GRADIO_TEMP_DIR=str(uploads), **env) as up:
        yield up


def _upload(server: Server, files: list[tuple[str, bytes]]) -> int | str:
    """The status, or how the connection ended where the server stopped reading a refused body."""
    try:
        parts = [("files", (name, blob)) for name, blob in files]
        return requests.post(server.url + "/gradio_api/upload", files=parts, timeout=120).status_code
    except requests.ConnectionError:
        return "reset"


@pytest.mark.slow  # a server in a subprocess, hundreds of MB over loopback
def test_concurrent_uploads_share_one_quota(server, uploads, capsys) -> None:
    blob = bytes(5 * MB)
    with ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(lambda n: _upload(server, [(f"{n}.png", blob)]), range(30)))
    stored = _stored(uploads)
    with capsys.disabled():
        print(
            f"\n30 concurrent 5 MB uploads, quota {QUOTA_MB} MB: {statuses.count(200)} accepted, {stored / MB:.1f} MB"
        )
    assert stored <= QUOTA_MB * MB
    assert 10 <= statuses.count(200) <= 19, statuses  # 20 x 5 MB of bodies would pass the quota with the overhead
    assert set(statuses) <= {200, 503, "reset"}, statuses
    assert server.get("/health").status_code == 200


@pytest.mark.slow  # a server in a subprocess, hundreds of MB over loopback
def test_one_request_cannot_carry_more_than_the_quota(server, uploads, capsys) -> None:
    status = _upload(server, [(f"big{n}.png", bytes(40 * MB)) for n in range(5)])
    stored = _stored(uploads)
    with capsys.disabled():
        print(f"\none request of 5 x 40 MB, quota {QUOTA_MB} MB: {status}, {stored / MB:.1f} MB stored")
    assert status in (503, "reset") and stored == 0  # the part-written files are deleted
    assert _upload(server, [("small.png", bytes(MB))]) == 200  # the refused request left no charge behind


@pytest.mark.slow  # a server in a subprocess, hundreds of MB over loopback
def test_one_request_cannot_carry_more_than_the_file_cap(server, uploads) -> None:
    response = requests.post(
        server.url + "/gradio_api/upload", files=[("files", (f"{n}.png", b"x")) for n in range(MAX_FILES + 1)]
    )
    assert response.status_code == 413 and "RMBG_UPLOAD_MAX_FILES" in response.json()["error"]
    assert _stored(uploads) == 0
    assert _upload(server, [(f"{n}.png", b"x") for n in range(MAX_FILES)]) == 200


@pytest.mark.slow  # a server in a subprocess
@pytest.mark.parametrize(
    "parts",
    [
        {"files": (None, "text, not a file")},  # Gradio answered 500
        {"other": ("a.png", b"x" * 1000)},  # Gradio kept it in the upload folder for good
    ],
)
def test_only_file_parts_named_files_are_taken(server, uploads, parts) -> None:
    response = requests.post(server.url + "/gradio_api/upload", files=parts, timeout=60)
    assert response.status_code == 400 and "file part named 'files'" in response.json()["error"]
    assert _stored(uploads) == 0
