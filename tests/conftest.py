"""Shared fixtures: the golden parity data and synthetic weights from ../shared/golden."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN_DIR = Path(
    os.environ.get("RMBG_GOLDEN_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "golden")
)


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
