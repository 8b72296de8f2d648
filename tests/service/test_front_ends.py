"""Every front end builds its service from one `ServiceConfig`, so `--engine` / RMBG_ENGINE and
`--precision` reach the engine that actually runs: the CLI's summary line, `/health`, the eval
and bench reports say which one ran. (The Ray batch and Ray Serve cases are in test_ray.py.)

conftest pins RMBG_ENGINE=torch, so OpenVINO only runs here where a flag or the variable asks
for it, and fp32 differs from what `auto` settles on wherever the CPU computes bf16.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gradio as gr
import live
import pytest

from bgremover.cli import main
from bgremover.service.config import ServiceConfig, build_service
from bgremover.web.handlers import Handlers
from bgremover.web.scratch import Scratch

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--model", "RMBG-1.4", "--size", "256", "--device", "cpu"]


@pytest.fixture
def photo_file(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    live.sample_image(96, 64).save(path)
    return path


@pytest.mark.slow
def test_cli_remove_runs_the_engine_and_precision_of_its_flags(offline_hub, photo_file, tmp_path) -> None:
    command = [sys.executable, "rmbg.py", "remove", str(photo_file), "-o", str(tmp_path / "out.png"), *SMALL]
    command += ["--engine", "openvino", "--precision", "fp32"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 done" in done.stderr and "RMBG-1.4 on openvino" in done.stderr and "fp32 on cpu" in done.stderr


@pytest.mark.slow
def test_cli_remove_runs_a_clip_on_the_engine_and_precision_of_its_flags(offline_hub, tmp_path) -> None:
    """Clips go through `build_service` as images do: the summary names the engine the flags asked for."""
    clip = tmp_path / "walk.mp4"
    live.make_clip(clip, frames=3)
    command = [sys.executable, "rmbg.py", "remove", str(clip), "-o", str(tmp_path / "out.webm"), *SMALL, "-q"]
    command += ["--engine", "openvino", "--precision", "fp32"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 clip(s) done" in done.stderr and "RMBG-1.4 on openvino" in done.stderr and "fp32 on cpu" in done.stderr
    assert (tmp_path / "out.webm").stat().st_size > 0


@pytest.mark.slow  # the first OpenVINO export of a session takes most of a minute
def test_cli_remove_follows_rmbg_engine(offline_hub, photo_file, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RMBG_ENGINE", "openvino")
    assert main(["remove", str(photo_file), "-o", str(tmp_path / "out.png"), *SMALL, "--precision", "fp32"]) == 0
    assert "RMBG-1.4 on openvino" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_health_names_the_engine_of_rmbg_engine(hf_home, tmp_path) -> None:
    with live.run_server(tmp_path, hf_home, *live.SERVER_ARGS, RMBG_ENGINE="openvino") as server:
        body = server.get("/health").json()
    assert (body["engine"], body["precision"], body["status"]) == ("openvino", "fp32", "ok")


def _dataset(root: Path) -> Path:
    for folder in ("im", "gt"):
        (root / folder).mkdir(parents=True)
    live.sample_image(64, 48).save(root / "im" / "a.jpg")
    live.sample_image(64, 48).convert("L").save(root / "gt" / "a.png")
    return root


@pytest.mark.slow  # the first OpenVINO export of a session takes most of a minute
def test_eval_reports_the_engine_that_made_its_predictions(offline_hub, tmp_path, capsys) -> None:
    report = tmp_path / "report.json"
    command = ["eval", "--data", str(_dataset(tmp_path / "ds")), "--out", str(tmp_path / "cache"), "--json"]
    command += [str(report), *SMALL, "--engine", "openvino", "--precision", "fp32", "-q"]
    assert main(command) == 0
    engine = json.loads(report.read_text())["settings"]["engines"]["RMBG-1.4"]
    assert engine.startswith("openvino") and "fp32" in engine
    assert f"RMBG-1.4: {engine}" in capsys.readouterr().err


@pytest.mark.slow  # the first OpenVINO export of a session takes most of a minute
def test_bench_e2e_reports_the_engine_of_rmbg_engine(offline_hub, photo_file, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RMBG_ENGINE", "openvino")
    assert main(["bench", "--e2e", str(photo_file), *SMALL, "--precision", "fp32", "--runs", "1", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["engine"].startswith("openvino") and (result["precision"], result["size"]) == ("fp32", 256)


def test_a_bad_setting_names_its_option_and_variable(monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"--engine / RMBG_ENGINE='onnx' is not usable: use auto, torch, openvino"):
        ServiceConfig.from_settings(runtime="onnx")
    with pytest.raises(ValueError, match=r"--size: inference size 4096 is above the limit of 2048"):
        ServiceConfig.from_settings(size=4096)
    monkeypatch.setenv("RMBG_QUEUE_LIMIT", "-1")
    with pytest.raises(ValueError, match="RMBG_QUEUE_LIMIT='-1' must be a whole number"):
        ServiceConfig.from_settings()


def test_the_compare_tab_waits_its_turn_in_the_admission(offline_hub, photo_file, monkeypatch) -> None:
    """With one request running and none allowed to wait, Compare is refused like any request."""
    monkeypatch.setenv("RMBG_WORKERS", "1")
    monkeypatch.setenv("RMBG_QUEUE_LIMIT", "0")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(photo_file.parent))  # the photo counts as the user's upload
    config = ServiceConfig.from_settings(model="RMBG-1.4", device="cpu", precision="fp32", size=64)
    service = build_service(config, serving=True)
    handlers = Handlers(service, Scratch())
    upload = {"path": str(photo_file), "orig_name": photo_file.name}
    with service.admission.admit(1), pytest.raises(gr.Error, match="the server is busy"):
        handlers.compare(upload, "RMBG-1.4", "RMBG-1.4")
    cutout, info, _, _ = handlers.compare(upload, "RMBG-1.4", "RMBG-1.4")
    assert cutout.size == (96, 64) and "**RMBG-1.4** at 64 px" in info
