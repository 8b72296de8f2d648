"""Shared fixtures: the golden parity data and synthetic weights from ../shared/golden."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN_DIR = Path(os.environ.get("RMBG_GOLDEN_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "golden"))


def golden_available() -> bool:
    return (GOLDEN_DIR / "synthetic_weights.py").is_file()


requires_golden = pytest.mark.skipif(
    not golden_available(),
    reason=f"golden parity data not found at {GOLDEN_DIR} (set RMBG_GOLDEN_DIR)",
)


def _synthetic_module():
    spec = importlib.util.spec_from_file_location("synthetic_weights", GOLDEN_DIR / "synthetic_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_state_dict(state_dict: dict) -> dict:
    """The golden synthetic weights for every entry of `state_dict`."""
    return _synthetic_module().synthetic_state_dict(state_dict)


def golden_input(height: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(height * 10007 + width)
    return torch.randn(1, 3, height, width, generator=generator)


def golden_output(arch: str, height: int, width: int) -> torch.Tensor:
    return torch.from_numpy(np.load(GOLDEN_DIR / f"{arch}.{height}x{width}.npz")["output"])


def golden_manifest(arch: str) -> list:
    import json

    return json.loads((GOLDEN_DIR / f"{arch}.manifest.json").read_text())


def manifest_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """Uninitialised tensors with the reference checkpoint's names, shapes and dtypes."""
    manifest = golden_manifest(arch)
    return {name: torch.empty(shape, dtype=getattr(torch, dtype)) for name, shape, dtype in manifest}


# --- Synthetic models in a Hugging Face cache -------------------------------------------------

# Test models: zoo name -> golden architecture whose synthetic weights stand in for it.
# RMBG-2.0's Swin-L would be a 900 MB file; the pipeline is exercised on the two small ones.
TEST_MODELS = {"RMBG-1.4": "isnet", "BiRefNet_lite": "birefnet_lite"}
_FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"
_synthetic_cache: dict[str, dict] = {}


def synthetic_checkpoint(arch: str) -> dict[str, torch.Tensor]:
    """The golden synthetic weights of `arch`, keyed like the Hub checkpoint."""
    if arch not in _synthetic_cache:
        from bgremover.nets import network_for

        network = network_for(manifest_state_dict(arch))
        _synthetic_cache[arch] = synthetic_state_dict(network.state_dict())
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
    """A Hugging Face home whose cache holds synthetic RMBG-1.4 and BiRefNet_lite checkpoints."""
    if not golden_available():
        pytest.skip(f"golden synthetic weights not found at {GOLDEN_DIR} (set RMBG_GOLDEN_DIR)")
    from bgremover.zoo import ZOO

    home = tmp_path_factory.mktemp("hf_home")
    for name, arch in TEST_MODELS.items():
        cache_model(home / "hub", ZOO[name].repo_id, synthetic_checkpoint(arch))
    return home


@pytest.fixture
def offline_hub(hf_home: Path, monkeypatch) -> Path:
    """Points the process at the synthetic cache with HF_HUB_OFFLINE=1, as a user without network."""
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return hf_home
