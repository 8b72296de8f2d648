"""Engine choice and the OpenVINO engine, loaded through the real loader from a synthetic Hub cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import GOLDEN_MODELS, QUICK_ARCHS, cpu_service, golden_input, golden_output

from bgremover import hub
from bgremover.cli import main
from bgremover.engines import choose_runtime, devices, load_engine, pick_dtype
from bgremover.engines import openvino as openvino_engine

CPU = torch.device("cpu")


def _alpha_delta(output: torch.Tensor, arch: str) -> torch.Tensor:
    """|Δα| in 1/255 steps against the golden output (BiRefNet logits; IS-Net's sigmoid map)."""
    golden = golden_output(arch, 256, 384)
    if arch == "isnet":
        return (output - golden).abs() * 255
    return (torch.sigmoid(output) - torch.sigmoid(golden)).abs() * 255


def test_auto_engine_picks_openvino_for_isnet_on_a_cpu_only(monkeypatch) -> None:
    monkeypatch.delenv("RMBG_ENGINE", raising=False)
    assert choose_runtime(None, CPU, "isnet") == "openvino"
    assert choose_runtime("auto", CPU, "isnet", "bf16") == "openvino"
    assert choose_runtime("auto", CPU, "isnet", "fp16") == "torch"  # OpenVINO has no fp16 on a CPU
    assert choose_runtime("auto", CPU, "birefnet") == "torch"
    assert choose_runtime("auto", torch.device("cuda"), "isnet") == "torch"
    monkeypatch.setitem(sys.modules, "openvino", None)  # not installed: PyTorch, no error
    assert choose_runtime("auto", CPU, "isnet") == "torch"
    monkeypatch.setenv("RMBG_ENGINE", "openvino")
    assert choose_runtime(None, CPU, "birefnet") == "openvino"


def test_engine_errors_name_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown engine 'onnx': use auto, torch, openvino"):
        choose_runtime("onnx", CPU)
    with pytest.raises(ValueError, match="runs on the CPU, not on cuda.*--device cpu"):
        choose_runtime("openvino", torch.device("cuda"))


def test_emulated_bf16_is_refused_with_the_fix(monkeypatch) -> None:
    monkeypatch.setattr(devices, "native_bf16_cpu", lambda: False)
    monkeypatch.delenv("RMBG_EMULATED_BF16", raising=False)
    with pytest.raises(ValueError, match="no native bfloat16.*--precision auto or fp32"):
        pick_dtype("bf16", CPU)
    assert pick_dtype("auto", CPU) == torch.float32
    monkeypatch.setenv("RMBG_EMULATED_BF16", "1")
    assert pick_dtype("bf16", CPU) == torch.bfloat16


def test_openvino_precisions(monkeypatch) -> None:
    monkeypatch.setattr(openvino_engine, "native_bf16_cpu", lambda: False)
    assert openvino_engine.openvino_precision("auto") == "fp32"
    assert openvino_engine.openvino_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match="no native bfloat16.*fp32 or auto"):
        openvino_engine.openvino_precision("bf16")
    with pytest.raises(ValueError, match="runs fp32, bf16, int8 \\(or auto\\), not 'fp16'"):
        openvino_engine.openvino_precision("fp16")
    monkeypatch.setattr(openvino_engine, "native_bf16_cpu", lambda: True)
    assert openvino_engine.openvino_precision("auto") == "bf16"


@pytest.mark.slow
def test_auto_runs_rmbg_1_4_on_openvino_and_says_so(offline_hub, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("RMBG_ENGINE", "auto")
    pool = cpu_service("RMBG-1.4", size=64).pool
    assert pool.health()[1]["engine"] == "auto"  # not loaded yet: what was asked for
    assert pool.get().engine.runtime == "openvino"
    assert pool.health() == (
        True,
        {"status": "ok", "device": "cpu", "engine": "openvino", "precision": "fp32", "model": "RMBG-1.4"},
    )


def test_missing_openvino_says_how_to_install(offline_hub, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert not openvino_engine.openvino_available()
    with pytest.raises(ValueError, match=r"pip install 'bgremover\[openvino\]'"):
        load_engine("RMBG-1.4", "cpu", "fp32", runtime="openvino")


_EXPORT_ONE_SIZE = """
import sys, torch
from bgremover.engines import load_engine
engine = load_engine("RMBG-1.4", "cpu", "fp32", runtime="openvino")
output = engine(torch.zeros(1, 3, 160, 96))
print(engine.exported_path((160, 96)), float(output.sum()))
"""


@pytest.mark.slow
def test_processes_exporting_one_size_at_once_all_get_it(offline_hub) -> None:
    """Ray actors on one node share the export cache: conversions of one size at the same time
    (a size no other test exports) must not take each other's half-written files."""
    children = [
        subprocess.Popen([sys.executable, "-c", _EXPORT_ONE_SIZE], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    answers = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], [err.decode()[-2000:] for _, err in answers]
    (path, first), *others = (out.decode().split() for out, _ in answers)
    assert all(other == [path, first] for other in others)
    assert Path(path).is_file() and Path(path).with_suffix(".bin").is_file()
    assert not list(Path(path).parent.glob("*partial*"))


@pytest.mark.slow
@pytest.mark.parametrize(("model", "arch"), [(GOLDEN_MODELS[arch], arch) for arch in QUICK_ARCHS])
def test_openvino_fp32_matches_golden_and_is_cached(offline_hub, monkeypatch, model: str, arch: str) -> None:
    monkeypatch.setattr(openvino_engine, "native_bf16_cpu", lambda: False)  # fp32 on any CPU
    engine = load_engine(model, "cpu", "auto", runtime="openvino")
    output = engine(golden_input(256, 384))
    delta = _alpha_delta(output, arch)
    assert output.shape == (1, 1, 256, 384)
    assert delta.max().item() <= 0.05  # float32 against float32: rounding only
    path = engine.exported_path((256, 384))
    assert path.is_file() and path.with_suffix(".bin").is_file()
    assert path.is_relative_to(offline_hub / "rmbg-engines")

    def no_export(*args, **kwargs):
        raise AssertionError("a cached export was exported again")

    monkeypatch.setattr(torch.export, "export", no_export)
    # A cached export runs without the PyTorch network: the weights are not even read.
    monkeypatch.setattr(hub, "read_weights_into", lambda *args, **kwargs: pytest.fail("the weights were read"))
    again = load_engine(model, "cpu", "fp32", runtime="openvino")
    assert torch.equal(again(golden_input(256, 384)), output)
    assert "openvino" in again.describe() and "fp32" in again.describe()
    assert list(path.parent.glob("compiled-f32/*.blob"))  # the second load imported the compiled model
    # bf16 compiles the same export; a CPU without bf16 runs it in float32, which passes too. Its compiled
    # model is cached apart: one cache for both precisions handed a bf16 load wrong masks.
    monkeypatch.setattr(openvino_engine, "native_bf16_cpu", lambda: True)
    first_bf16 = load_engine(model, "cpu", "bf16", runtime="openvino")(golden_input(256, 384))
    bf16 = _alpha_delta(first_bf16, arch)
    assert bf16.mean().item() <= 0.5 and bf16.max().item() <= 16.0  # the fast paths' bound (BENCHMARKS.md)
    assert torch.equal(load_engine(model, "cpu", "bf16", runtime="openvino")(golden_input(256, 384)), first_bf16)


@pytest.mark.slow
def test_bench_compares_engines_in_one_table(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # the children's exports go here, not to the user's cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["bench", "--engines", "--synthetic", "--model", "RMBG-1.4", "--size", "64", "--runs", "1"]
    assert main(args) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    engines = [row.split(" on cpu")[0] for row in rows]
    assert engines[:2] == ["torch fp32", "torch fp32"] and "plain eager" in rows[0]
    assert any(engine.startswith("openvino") and engine.endswith("fp32") for engine in engines)
    assert engines[-1].startswith("openvino") and engines[-1].endswith("int8")  # NNCF's, opt-in
    for row in rows[:-1]:  # the default paths' budget; int8 is documented outside it (docs/engines.md)
        mean, maximum = (float(value) for value in row.split()[-2:])
        assert 0.0 <= mean <= 0.5 and maximum <= 16.0
    # synthetic weights and their exports stay in their own cache, apart from real checkpoints
    assert list(tmp_path.glob("rmbg-synthetic/rmbg-engines/openvino-*/RMBG-1.4/*/64x64.xml"))


@pytest.mark.slow
def test_bench_measures_the_engine_auto_picks_for_the_model(tmp_path, monkeypatch, capsys) -> None:
    """`rmbg bench` times what `rmbg remove` would run: OpenVINO for RMBG-1.4 on a CPU, PyTorch for a BiRefNet."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("RMBG_ENGINE", "auto")
    for model, engine in (("RMBG-1.4", "openvino"), ("BiRefNet_lite", "torch")):
        args = ["bench", "--synthetic", "--model", model, "--device", "cpu", "--size", "64", "--runs", "1"]
        assert main([*args, "--no-check", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["engine"].startswith(f"{engine} ")


def test_bench_plain_is_the_pytorch_reference_whatever_auto_picks(tmp_path, monkeypatch, capsys) -> None:
    """`--plain` is what every engine is compared with: for RMBG-1.4, which `auto` runs on OpenVINO
    on a CPU, it must still time PyTorch's eager network, and a contradicting --engine is refused."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("RMBG_ENGINE", "auto")
    args = ["bench", "--synthetic", "--model", "RMBG-1.4", "--device", "cpu", "--size", "64", "--runs", "1", "--plain"]
    assert main([*args, "--no-check", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["engine"].startswith("torch ") and "plain eager" in result["engine"]
    assert main([*args, "--engine", "openvino"]) == 2
    assert "--plain runs PyTorch's eager network" in capsys.readouterr().err


def test_bench_reports_a_failed_engine_run_without_a_trace(tmp_path, monkeypatch, capsys) -> None:
    """A model that is not in the (empty, offline) cache: the child's own message, exit status 1."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["bench", "--engines", "--model", "RMBG-1.4", "--size", "64", "--runs", "1"]) == 1
    errors = capsys.readouterr().err
    assert "error: the torch fp32 run failed: " in errors and "RMBG-1.4" in errors.splitlines()[-1]
    assert "Traceback" not in errors


def test_export_key_follows_the_checkpoint_file(tmp_path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"weights")
    first = openvino_engine.checkpoint_key(checkpoint)
    assert openvino_engine.checkpoint_key(checkpoint) == first
    checkpoint.write_bytes(b"other weights")
    assert openvino_engine.checkpoint_key(checkpoint) != first
