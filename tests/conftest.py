"""Shared fixtures: golden parity data, synthetic weights and synthetic models in a Hub cache.

The 256x384 reference outputs and the manifests travel with the tests (tests/golden), so
a fresh clone checks parity with nothing beside it. The 1024x1024 references live in the
shared data (../shared/golden, or RMBG_GOLDEN_DIR); where it is present those sizes are
tested too, and `.ci/run` insists on it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile

# PyTorch's OpenMP threads (libgomp) spin between parallel regions. With more busy threads than
# cores (a shared 2-core machine, servers beside the test process) the spinning cost 10-15 times
# the CPU of the work itself; waiting passively costs nothing measurable on a quiet machine. Set
# before torch is imported, and passed on to every server and subprocess the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The app keeps this machine's past timings in the user's cache (bgremover.estimates): the tests,
# their servers and subprocesses keep theirs in a folder of their own, never in the user's.
os.environ["RMBG_CACHE_DIR"] = tempfile.mkdtemp(prefix="rmbg-test-cache-")

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from live import STARTED

atexit.register(shutil.rmtree, os.environ["RMBG_CACHE_DIR"], True)

# The tests compare PyTorch paths pixel for pixel, servers and subprocesses included, so they
# pin the engine; `auto`'s own choice and the OpenVINO engine are tested in test_engines.py.
os.environ["RMBG_ENGINE"] = "torch"

LOCAL_GOLDEN = Path(__file__).resolve().parent / "golden"
SHARED_GOLDEN = Path(
    os.environ.get("RMBG_GOLDEN_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "golden")
)
FULL_GOLDEN = (SHARED_GOLDEN / "isnet.1024x1024.npz").is_file()
# Golden sizes available here: 256x384 always, 1024x1024 with the shared data.
GOLDEN_SIZES = [(256, 384), *([pytest.param(1024, 1024, marks=pytest.mark.slow)] if FULL_GOLDEN else [])]


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


# The golden architectures; Swin-L's heavier checks are in the slow set.
ARCHS_SWIN_L_SLOW = [pytest.param("birefnet", marks=pytest.mark.slow), "birefnet_lite", "isnet"]


def golden_file(name: str) -> Path:
    shared = SHARED_GOLDEN / name
    return shared if shared.is_file() else LOCAL_GOLDEN / name


def synthetic_state_dict(state_dict: dict) -> dict:
    """The golden synthetic weights (the scheme of the golden README) for every entry of `state_dict`."""
    from bgremover.synthetic import synthetic_value

    return {name: synthetic_value(name, tensor) for name, tensor in state_dict.items()}


def golden_input(height: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(height * 10007 + width)
    return torch.randn(1, 3, height, width, generator=generator)


def golden_output(arch: str, height: int, width: int) -> torch.Tensor:
    return torch.from_numpy(np.load(golden_file(f"{arch}.{height}x{width}.npz"))["output"])


def golden_manifest(arch: str) -> list:
    return json.loads(golden_file(f"{arch}.manifest.json").read_text())


def manifest_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """Uninitialised tensors with the reference checkpoint's names, shapes and dtypes."""
    manifest = golden_manifest(arch)
    return {name: torch.empty(shape, dtype=getattr(torch, dtype)) for name, shape, dtype in manifest}


# --- Synthetic models in a Hugging Face cache -------------------------------------------------

# The golden architectures by the zoo model whose architecture each is.
GOLDEN_MODELS = {"birefnet": "RMBG-2.0", "birefnet_lite": "BiRefNet_lite", "isnet": "RMBG-1.4"}
_FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"
_synthetic_cache: dict[str, dict] = {}


def synthetic_checkpoint(arch: str) -> dict[str, torch.Tensor]:
    """The golden synthetic weights of `arch`, keyed like the Hub checkpoint."""
    if arch not in _synthetic_cache:
        from bgremover.synthetic import synthetic_checkpoint as zoo_checkpoint

        _synthetic_cache[arch] = zoo_checkpoint(GOLDEN_MODELS[arch])
    return dict(_synthetic_cache[arch])


def write_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    from bgremover.hub import save_checkpoint

    return save_checkpoint(path, state)


def cache_model(cache_dir: Path, repo_id: str, state: dict[str, torch.Tensor]) -> Path:
    """Writes `state` as model.safetensors in huggingface_hub's own cache layout."""
    from bgremover.hub import store_in_cache

    return store_in_cache(cache_dir, repo_id, state, _FAKE_COMMIT)


@pytest.fixture(scope="session")
def hf_home(tmp_path_factory) -> Path:
    """A Hugging Face home whose cache holds the synthetic checkpoint of each family's stand-in
    (RMBG-1.4, BiRefNet_lite: RMBG-2.0's Swin-L would be a 900 MB file)."""
    from bgremover.families import families
    from bgremover.zoo import ZOO

    home = tmp_path_factory.mktemp("hf_home")
    for family in families():
        arch = next(arch for arch, model in GOLDEN_MODELS.items() if model == family.stand_in)
        cache_model(home / "hub", ZOO[family.stand_in].repo_id, synthetic_checkpoint(arch))
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
