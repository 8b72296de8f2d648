"""Shared fixtures: synthetic models in a Hub cache, and the logs of servers a failed test used.

What tests import (golden data, synthetic checkpoints, services) is in helpers.py. The 256x384
reference outputs and the manifests travel with the tests (tests/golden), so a fresh clone
checks parity with nothing beside it. The 1024x1024 references live in the shared data
(../shared/golden, or RMBG_GOLDEN_DIR); where it is present those sizes are tested too, and
`.ci/run` insists on it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# PyTorch's OpenMP threads (libgomp) spin between parallel regions. With more busy threads than
# cores (a shared 2-core machine, servers beside the test process) the spinning cost 10-15 times
# the CPU of the work itself; waiting passively costs nothing measurable on a quiet machine. Set
# before torch is imported, and passed on to every server and subprocess the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The tests compare PyTorch paths pixel for pixel, servers and subprocesses included, so they
# pin the engine; `auto`'s own choice and the OpenVINO engine are tested in test_engines.py.
os.environ["RMBG_ENGINE"] = "torch"
# The app keeps this machine's past timings in the user's cache (bgremover.estimates): the tests,
# their servers and subprocesses keep theirs in a folder of their own, never in the user's.
os.environ["RMBG_CACHE_DIR"] = tempfile.mkdtemp(prefix="rmbg-test-cache-")

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import FULL_GOLDEN, SHARED_GOLDEN, cache_model, golden_arch, synthetic_checkpoint
from live import STARTED

atexit.register(shutil.rmtree, os.environ["RMBG_CACHE_DIR"], True)
GOLDEN_ABSENT = "without ../shared/golden (1024x1024 parity not collected; docs/development.md)"


def pytest_report_header(config) -> str:
    where = "RMBG_GOLDEN_DIR" if "RMBG_GOLDEN_DIR" in os.environ else "../shared/golden"
    if FULL_GOLDEN:
        return f"golden data: {SHARED_GOLDEN} ({where}): the 1024x1024 parity cases are collected (slow set)"
    return f"golden data: {SHARED_GOLDEN} ({where}) is absent: the 1024x1024 parity cases are not collected"


def pytest_terminal_summary(terminalreporter) -> None:
    """Without the shared golden data a run is not complete: the result line says so (in yellow)."""
    if not FULL_GOLDEN:
        terminalreporter.stats.setdefault(GOLDEN_ABSENT, []).append(SimpleNamespace(folder=str(SHARED_GOLDEN)))


@pytest.fixture(scope="session")
def hf_home(tmp_path_factory) -> Path:
    """A Hugging Face home whose cache holds the synthetic checkpoint of each family's stand-in
    (RMBG-1.4, BiRefNet_lite: RMBG-2.0's Swin-L would be a 900 MB file)."""
    from bgremover.families import families
    from bgremover.zoo import ZOO

    home = tmp_path_factory.mktemp("hf_home")
    for family in families():
        cache_model(home / "hub", ZOO[family.stand_in].repo_id, synthetic_checkpoint(golden_arch(family.stand_in)))
    return home


@pytest.fixture
def offline_hub(hf_home: Path, monkeypatch) -> Path:
    """Points the process at the synthetic cache with HF_HUB_OFFLINE=1, as a user without network."""
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return hf_home


@pytest.fixture(autouse=True)
def server_logs_on_failure(request) -> Iterator[None]:
    """A failed test shows the logs of the servers it used: running ones and any it started itself."""
    failed, known = request.session.testsfailed, len(STARTED)
    yield
    if request.session.testsfailed > failed:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        for server in [s for s in STARTED[:known] if s.running] + STARTED[known:]:
            reporter.write_sep("-", f"server log {server.log}")
            reporter.write_line(server.log.read_text()[-20000:] if server.log.exists() else "(no log)")
