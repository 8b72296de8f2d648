"""How soon a fresh `rmbg serve` answers (BENCHMARKS.md, "One photo, fresh process"): seconds from
the process's start to the first 200 on /health (the default model loaded and compiled), on
POST /api/remove with one photo, and on GET / (the web page, built after the API answers), each
with the server's CPU seconds by then (what a busy machine stretches, not changes).

    python tools/serve_ready.py photo.jpg -- --model RMBG-1.4 --engine openvino
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_200(started: float, server: subprocess.Popen, call) -> tuple[float, float]:
    """Seconds from `started` until `call()` answers 200 (polling every 10 ms), and the server's CPU seconds by then."""
    while server.poll() is None:
        try:
            if call().status_code == 200:
                return time.perf_counter() - started, cpu_seconds(server.pid)
        except requests.ConnectionError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"the server exited with status {server.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", type=Path)
    parser.add_argument("serve_args", nargs="*", help="after --: options of `rmbg serve`")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(ROOT / "rmbg.py"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    server = subprocess.Popen([*command, *args.serve_args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = first_200(started, server, lambda: requests.get(url + "/health", timeout=5))
        photo = args.photo.read_bytes()
        files = {"file": (args.photo.name, photo)}
        removed = first_200(started, server, lambda: requests.post(url + "/api/remove", files=files, timeout=60))
        page = first_200(started, server, lambda: requests.get(url + "/", timeout=60))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        f"health {health[0]:.2f} s ({health[1]:.2f} s CPU)  first removal {removed[0]:.2f} s ({removed[1]:.2f} s CPU)"
        f"  page {page[0]:.2f} s ({page[1]:.2f} s CPU)  load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
