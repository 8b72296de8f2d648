"""The checkpoint loader end to end, on synthetic weights in a temporary Hugging Face cache."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx2
import pytest
import torch
from helpers import cache_model, golden_input, synthetic_checkpoint, write_checkpoint
from huggingface_hub.errors import GatedRepoError

from bgremover import hub
from bgremover.hub import ModelLoadError, load_model
from bgremover.nets import BiRefNet, ISNet


def _output(network: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return network(golden_input(256, 384))


def test_loads_zoo_name_from_cache_offline(offline_hub) -> None:
    loaded = load_model("RMBG-1.4")
    assert isinstance(loaded.network, ISNet)
    assert loaded.label == "IS-Net"
    assert loaded.info.processing.mean == (0.5, 0.5, 0.5) and loaded.info.processing.std == (1.0, 1.0, 1.0)
    assert loaded.checkpoint.is_file() and str(offline_hub) in str(loaded.checkpoint)
    assert not loaded.network.training


def test_loads_any_repo_id_and_detects_architecture(offline_hub) -> None:
    cache_model(offline_hub / "hub", "someone/my-birefnet-finetune", synthetic_checkpoint("birefnet_lite"))
    loaded = load_model("someone/my-birefnet-finetune")
    assert isinstance(loaded.network, BiRefNet)
    assert loaded.label == "BiRefNet (Swin-T)"
    assert loaded.info.processing.mean == (0.485, 0.456, 0.406) and loaded.info.backbone == "Swin-T"


def test_loads_local_folder_and_file(offline_hub, tmp_path) -> None:
    state = synthetic_checkpoint("isnet")
    write_checkpoint(tmp_path / "folder" / "model.safetensors", state)
    write_checkpoint(tmp_path / "weights.safetensors", state)
    from_folder = load_model(str(tmp_path / "folder"))
    from_file = load_model(str(tmp_path / "weights.safetensors"))
    assert torch.equal(_output(from_folder.network), _output(from_file.network))


def test_fp16_checkpoint_loads_and_matches_fp32(offline_hub, tmp_path) -> None:
    state = synthetic_checkpoint("isnet")
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    fp32 = load_model(str(write_checkpoint(tmp_path / "fp32.safetensors", state)))
    fp16 = load_model(str(write_checkpoint(tmp_path / "fp16.safetensors", half)))
    assert next(fp16.network.parameters()).dtype == torch.float32
    assert (_output(fp16.network) - _output(fp32.network)).abs().max() < 1e-2


def test_checkpoint_without_derived_buffers_loads(offline_hub, tmp_path) -> None:
    state = {k: v for k, v in synthetic_checkpoint("birefnet_lite").items() if not k.endswith("_index")}
    loaded = load_model(str(write_checkpoint(tmp_path / "m.safetensors", state)))
    assert isinstance(loaded.network, BiRefNet)


def test_wrapper_prefix_is_stripped(offline_hub, tmp_path) -> None:
    state = {"module." + k: v for k, v in synthetic_checkpoint("isnet").items()}
    assert isinstance(load_model(str(write_checkpoint(tmp_path / "m.safetensors", state))).network, ISNet)


def test_truncated_file_is_reported(offline_hub, tmp_path) -> None:
    path = write_checkpoint(tmp_path / "m.safetensors", synthetic_checkpoint("isnet"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"m: the checkpoint .* is corrupt or incomplete.*download it again"):
        load_model(str(path))


def test_identifying_a_checkpoint_reads_its_header_as_loading_would(offline_hub, tmp_path, monkeypatch) -> None:
    cache_model(offline_hub / "hub", "someone/my-birefnet-finetune", synthetic_checkpoint("birefnet_lite"))
    monkeypatch.setattr(hub, "read_weights_into", lambda *args, **kwargs: pytest.fail("the weights were read"))
    found = hub.identify_model("someone/my-birefnet-finetune")
    assert found.label == "BiRefNet (Swin-T)" and found.info.family == "birefnet" and found.info.backbone == "Swin-T"
    assert found.path.is_file() and found.path.name == "model.safetensors"
    prefixed = {"module." + k: v for k, v in synthetic_checkpoint("isnet").items()}
    assert hub.identify_model(str(write_checkpoint(tmp_path / "m.safetensors", prefixed))).label == "IS-Net"
    path = write_checkpoint(tmp_path / "cut.safetensors", synthetic_checkpoint("isnet"))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match=r"cut: the checkpoint .* is corrupt or incomplete"):
        hub.identify_model(str(path))
    (tmp_path / "model.pth").write_bytes(b"not really a pickle")
    with pytest.raises(ModelLoadError, match=r"not a \.safetensors file"):
        hub.identify_model(str(tmp_path / "model.pth"))


def test_the_network_holds_the_stored_weights_cast_to_the_precision_asked(offline_hub, tmp_path) -> None:
    state = synthetic_checkpoint("birefnet_lite")
    path = write_checkpoint(tmp_path / "m.safetensors", {"_orig_mod." + k: v for k, v in state.items()})
    loaded = load_model(str(path), dtype=torch.bfloat16).network.state_dict()
    assert loaded.keys() == state.keys()
    for key, stored in state.items():
        if stored.is_floating_point():
            assert loaded[key].dtype == torch.bfloat16 and torch.equal(loaded[key], stored.to(torch.bfloat16)), key
        else:
            assert torch.equal(loaded[key], stored), key


_LOAD_PEAK = """
import re, sys
import torch  # before the baseline: the hub module imports it only when it loads a network
from bgremover.hub import load_model
def peak():  # this process's own high-water mark (ru_maxrss would include the parent's, from before exec)
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
before = peak()
network = load_model(sys.argv[1]).network
weights = sum(t.numel() * t.element_size() for t in network.state_dict().values())
print((peak() - before) / weights)
"""


def test_loading_never_holds_the_checkpoint_whole_beside_the_network(offline_hub, tmp_path) -> None:
    """Loading reads the file in batches of tensors: the process grows by the network and a batch,
    not by the network and the whole checkpoint (the file's mapped pages count as its memory)."""
    path = write_checkpoint(tmp_path / "m.safetensors", synthetic_checkpoint("birefnet_lite"))
    grown = subprocess.run([sys.executable, "-c", _LOAD_PEAK, str(path)], capture_output=True, text=True, check=True)
    assert 1.0 <= float(grown.stdout) < 1.6, grown.stdout


def test_missing_key_is_listed(offline_hub, tmp_path) -> None:
    state = synthetic_checkpoint("isnet")
    del state["side1.weight"]
    path = write_checkpoint(tmp_path / "broken.safetensors", state)
    with pytest.raises(ModelLoadError, match=r"broken: .*IS-Net.*1 missing tensor\(s\): side1\.weight"):
        load_model(str(path))


def test_unexpected_key_is_listed(offline_hub, tmp_path) -> None:
    state = {**synthetic_checkpoint("isnet"), "extra_head.weight": torch.zeros(3)}
    path = write_checkpoint(tmp_path / "extra.safetensors", state)
    with pytest.raises(ModelLoadError, match=r"1 unexpected tensor\(s\): extra_head\.weight"):
        load_model(str(path))


def test_unknown_architecture(offline_hub, tmp_path) -> None:
    path = write_checkpoint(tmp_path / "other.safetensors", {"encoder.weight": torch.zeros(2, 2)})
    with pytest.raises(ModelLoadError, match="other: the checkpoint is none of the networks this project runs"):
        load_model(str(path))


def test_pickle_checkpoints_are_refused(offline_hub, tmp_path) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(b"not really a pickle")
    with pytest.raises(ModelLoadError, match="not a .safetensors file.*arbitrary code"):
        load_model(str(path))


def test_offline_and_not_cached(offline_hub) -> None:
    with pytest.raises(
        ModelLoadError,
        match=r"BiRefNet is not downloaded here .*HF_HUB_OFFLINE=1 forbids.*rmbg download BiRefNet --to weights",
    ):
        load_model("BiRefNet")


def test_gated_repo_without_access(offline_hub, monkeypatch) -> None:
    def denied(repo_id, filename, **kwargs):
        request = httpx2.Request("GET", f"https://huggingface.co/{repo_id}/resolve/main/{filename}")
        raise GatedRepoError("Access to model is restricted.", response=httpx2.Response(403, request=request))

    monkeypatch.setattr(hub, "hf_hub_download", denied)
    with pytest.raises(ModelLoadError) as caught:
        load_model("RMBG-2.0")
    message = str(caught.value)
    assert "RMBG-2.0 (briaai/RMBG-2.0) is a gated model and HF_TOKEN is not set" in message
    assert "https://huggingface.co/briaai/RMBG-2.0" in message and "accept the license" in message


def test_token_is_passed_to_the_hub(offline_hub, monkeypatch) -> None:
    seen = {}

    def record(repo_id, filename, **kwargs):
        seen.update(kwargs)
        raise GatedRepoError("no", response=httpx2.Response(403, request=httpx2.Request("GET", "https://x")))

    monkeypatch.setattr(hub, "hf_hub_download", record)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    with pytest.raises(ModelLoadError, match="HF_TOKEN is set but that account has no access"):
        load_model("RMBG-2.0")
    assert seen["token"] == "hf_secret"


def test_unknown_name() -> None:
    with pytest.raises(ModelLoadError, match="Unknown model 'nope': not a model name"):
        load_model("nope")


def test_without_network_a_missing_model_fails_at_once_and_a_cached_one_loads(offline_hub, monkeypatch) -> None:
    """No HF_HUB_OFFLINE and no Hub to reach (a closed local port): no half-minute of retries."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as raised:
        load_model("BiRefNet")
    assert time.perf_counter() - started < 10
    message = str(raised.value)
    assert "BiRefNet is not downloaded here and the Hugging Face Hub (127.0.0.1) cannot be reached" in message
    # No advice to set HF_HUB_OFFLINE when the model is not here: the way to carry it here, and what is here.
    assert "HF_HUB_OFFLINE" not in message and "rmbg download BiRefNet --to weights" in message
    assert "Already here: RMBG-1.4, BiRefNet_lite" in message
    assert isinstance(load_model("RMBG-1.4").network, ISNet)  # cached: used without asking the Hub
