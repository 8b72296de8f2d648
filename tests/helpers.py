"""What test modules import: golden data, synthetic checkpoints and services built as the front
ends build them. Fixtures stay in conftest.py, which pytest loads by itself (and which sets the
environment before this module imports PyTorch).

The golden architectures are not listed here: they are the manifests in tests/golden, each
matched to the zoo through the family registry, so a new family or backbone with its golden
files is tested by every test parametrised over `GOLDEN_ARCHS` without editing a list, and a zoo
model without golden data fails `test_every_zoo_architecture_has_golden_data`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bgremover.families import describe, families, get_family
from bgremover.service.config import ServiceConfig, build_service
from bgremover.service.removal import RemovalService
from bgremover.zoo import ZOO, ModelInfo

LOCAL_GOLDEN = Path(__file__).resolve().parent / "golden"
SHARED_GOLDEN = Path(
    os.environ.get("RMBG_GOLDEN_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "golden")
)
FULL_GOLDEN = (SHARED_GOLDEN / "isnet.1024x1024.npz").is_file()
# Golden sizes available here: 256x384 always, 1024x1024 with the shared data.
GOLDEN_SIZES = [(256, 384), *([pytest.param(1024, 1024, marks=pytest.mark.slow)] if FULL_GOLDEN else [])]
_FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def golden_file(name: str) -> Path:
    shared = SHARED_GOLDEN / name
    return shared if shared.is_file() else LOCAL_GOLDEN / name


def golden_manifest(arch: str) -> list:
    return json.loads(golden_file(f"{arch}.manifest.json").read_text())


def manifest_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """Uninitialised tensors with the reference checkpoint's names, shapes and dtypes."""
    manifest = golden_manifest(arch)
    return {name: torch.empty(shape, dtype=getattr(torch, dtype)) for name, shape, dtype in manifest}


def architecture(info: ModelInfo) -> str:
    """A zoo model's architecture as the registry names it, e.g. "BiRefNet (Swin-T)"."""
    return get_family(info.family).describe(info.backbone)


def _golden_models() -> dict[str, str]:
    """Each golden architecture (a manifest in tests/golden) with the zoo model that has it: its
    family's stand-in where that fits, else the first zoo row of that architecture."""
    stand_ins = {family.stand_in for family in families()}
    found = {}
    for manifest in sorted(LOCAL_GOLDEN.glob("*.manifest.json")):
        arch = manifest.name.removesuffix(".manifest.json")
        named = describe(manifest_state_dict(arch))
        models = [info.name for info in ZOO.values() if architecture(info) == named]
        found[arch] = next((name for name in models if name in stand_ins), models[0] if models else "")
    return found


# The golden architectures by the zoo model that has each (empty where no zoo model has it).
GOLDEN_MODELS = _golden_models()
# Those of a family's stand-in (the light model each family is tested with) run in the quick set;
# the others (Swin-L, a 900 MB network) in the slow set.
STAND_INS = sorted({family.stand_in for family in families()})
QUICK_ARCHS = [arch for arch in GOLDEN_MODELS if GOLDEN_MODELS[arch] in STAND_INS]


def golden_archs(where=lambda info: True) -> list:
    """The golden architectures whose zoo model passes `where`, as parameters: the heavy ones slow."""
    kept = [arch for arch in GOLDEN_MODELS if where(ZOO[GOLDEN_MODELS[arch]])]
    return [arch if arch in QUICK_ARCHS else pytest.param(arch, marks=pytest.mark.slow) for arch in kept]


GOLDEN_ARCHS = golden_archs()


def golden_arch(model: str) -> str:
    """The golden architecture of a zoo model."""
    return next(arch for arch, name in GOLDEN_MODELS.items() if architecture(ZOO[name]) == architecture(ZOO[model]))


def synthetic_state_dict(state_dict: dict) -> dict:
    """The golden synthetic weights (the scheme of the golden README) for every entry of `state_dict`."""
    from bgremover.synthetic import synthetic_value

    return {name: synthetic_value(name, tensor) for name, tensor in state_dict.items()}


def golden_input(height: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(height * 10007 + width)
    return torch.randn(1, 3, height, width, generator=generator)


def golden_output(arch: str, height: int, width: int) -> torch.Tensor:
    return torch.from_numpy(np.load(golden_file(f"{arch}.{height}x{width}.npz"))["output"])


_synthetic_cache: dict[str, dict] = {}


def synthetic_checkpoint(arch: str) -> dict[str, torch.Tensor]:
    """The golden synthetic weights of `arch`, keyed like the Hub checkpoint."""
    if arch not in _synthetic_cache:
        from bgremover.synthetic import synthetic_checkpoint as zoo_checkpoint

        _synthetic_cache[arch] = zoo_checkpoint(GOLDEN_MODELS[arch])
    return dict(_synthetic_cache[arch])


def write_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    from bgremover.checkpoints import save_checkpoint

    return save_checkpoint(path, state)


def cache_model(cache_dir: Path, repo_id: str, state: dict[str, torch.Tensor]) -> Path:
    """Writes `state` as model.safetensors in huggingface_hub's own cache layout."""
    from bgremover.checkpoints import store_in_cache

    return store_in_cache(cache_dir, repo_id, state, _FAKE_COMMIT)


def cpu_service(model: str, precision: str = "fp32", size: int | None = None, **chosen: object) -> RemovalService:
    """A removal service on the CPU through the one builder (`build_service`); what is not given
    comes from the environment, as in `rmbg` (conftest pins RMBG_ENGINE=torch)."""
    config = ServiceConfig.from_settings(model=model, device="cpu", precision=precision, size=size, **chosen)
    return build_service(config)


def loaded_small_service(hf_home: Path) -> RemovalService:
    """Synthetic RMBG-1.4 at 64 px on the CPU, loaded from `hf_home` offline: what the clip tests
    (a module's fixture each) run frames through."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(hf_home))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.delenv("HF_HUB_CACHE", raising=False)
        service = cpu_service("RMBG-1.4", size=64)
        service.pool.get()
    return service
