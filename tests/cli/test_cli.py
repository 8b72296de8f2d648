"""The CLI end to end on a folder tree, files, stdin/stdout, and the model commands."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from live import photo
from PIL import Image

from bgremover.cli import main
from bgremover.engines import devices

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--model", "RMBG-1.4", "--size", "256", "--device", "cpu", "-q"]


@pytest.fixture
def tree(tmp_path) -> Path:
    """album/a.jpg, album/b.png, album/sub/c.webp, album/broken.jpg (corrupt), album/notes.txt."""
    album = tmp_path / "album"
    (album / "sub").mkdir(parents=True)
    photo(120, 80).save(album / "a.jpg")
    photo(90, 60).save(album / "b.png")
    photo(64, 64).save(album / "sub" / "c.webp")
    (album / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (album / "notes.txt").write_text("not an image")
    return album


def test_folder_tree_is_mirrored_with_failures_reported(offline_hub, tree, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    status = main(["remove", str(tree), "-o", str(out), "--batch-size", "2", *FAST])
    err = capsys.readouterr().err
    assert status == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.png",
        "b.png",
        "sub/c.png",
    ]
    with Image.open(out / "a.png") as result:
        assert result.mode == "RGBA" and result.size == (120, 80)
    assert "3 done, 0 skipped" in err and "1 failed" in err
    assert re.search(r"1 failed; RMBG-1\.4 on torch (fp32|bf16) on cpu", err)  # model, engine, precision
    assert "broken.jpg: the image data is truncated or damaged" in err


@pytest.mark.parametrize(
    ("native_bf16", "precision", "hinted"),
    [(False, [], True), (False, ["--precision", "fp32"], False), (True, [], False)],
)
def test_float32_for_lack_of_bf16_points_to_int8(
    offline_hub, tmp_path, monkeypatch, capsys, native_bf16, precision, hinted
) -> None:
    """`auto` leaves int8 out, so a CPU without native bf16 runs BiRefNet in float32: the summary says
    where the faster choice is, unless the user chose a precision or asked for quiet."""
    monkeypatch.setattr(devices, "native_bf16_cpu", lambda: native_bf16)
    photo(64, 48).save(tmp_path / "in.jpg")
    args = ["remove", str(tmp_path / "in.jpg"), "-o", str(tmp_path / "out.png"), "--overwrite"]
    args += ["--model", "BiRefNet_lite", "--size", "64", "--device", "cpu", *precision]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert ("hint: this CPU has no native bfloat16" in err and "--precision int8" in err) == hinted
    assert main([*args, "-q"]) == 0
    assert "hint:" not in capsys.readouterr().err


def test_rerun_resumes_without_redoing_work(offline_hub, tree, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    main(["remove", str(tree), "-o", str(out), *FAST])
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    (out / "b.png").unlink()
    capsys.readouterr()
    main(["remove", str(tree), "-o", str(out), *FAST])
    assert "1 done, 2 skipped" in capsys.readouterr().err
    for path, stamp in stamps.items():
        if path.name != "b.png":
            assert path.stat().st_mtime_ns == stamp
    assert (out / "b.png").is_file()
    main(["remove", str(tree), "-o", str(out), "--overwrite", *FAST])
    assert "3 done, 0 skipped" in capsys.readouterr().err


def test_default_output_names_never_touch_inputs(offline_hub, tree, capsys) -> None:
    before = (tree / "a.jpg").read_bytes()
    assert main(["remove", str(tree / "a.jpg"), *FAST]) == 0
    assert (tree / "a_nobg.png").is_file() and (tree / "a.jpg").read_bytes() == before
    main(["remove", str(tree), *FAST])
    assert (tree.parent / "album_nobg" / "sub" / "c.png").is_file()
    assert main(["remove", str(tree / "b.png"), "-o", str(tree / "b.png"), *FAST]) == 2
    assert "would overwrite the input" in capsys.readouterr().err


def test_glob_and_output_options(offline_hub, tree, tmp_path) -> None:
    out = tmp_path / "flat"
    args = ["remove", str(tree / "*.png"), "-o", str(out), "--output", "color", "--bg-color", "#00ff00"]
    assert main([*args, "--format", "jpeg", *FAST]) == 0
    with Image.open(out / "b.jpg") as result:
        assert result.format == "JPEG" and result.mode == "RGB" and result.size == (90, 60)


def test_jpeg_without_background_is_refused_before_work(offline_hub, tree, capsys) -> None:
    assert main(["remove", str(tree / "a.jpg"), "--format", "jpeg", *FAST]) == 2
    assert "JPEG has no transparency" in capsys.readouterr().err
    assert not (tree / "a_nobg.jpg").exists()


def test_stdin_to_stdout(offline_hub) -> None:
    buffer = io.BytesIO()
    photo(100, 70).save(buffer, format="PNG")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "rmbg.py"), "remove", "-", "--output", "mask", "--threshold", "0.5", *FAST],
        input=buffer.getvalue(),
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    mask = Image.open(io.BytesIO(done.stdout))
    assert mask.mode == "L" and mask.size == (100, 70)
    assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_models_lists_license_gating_and_cache(offline_hub, capsys) -> None:
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["RMBG-1.4"].split()[-2:] == ["yes", "yes"]  # gated, cached
    assert "CC BY-NC 4.0" in lines["RMBG-2.0"] and lines["RMBG-2.0"].split()[-1] == "no"
    assert "MIT" in lines["BiRefNet"] and lines["BiRefNet"].split()[-2:] == ["no", "no"]


def test_download_reports_what_is_missing(offline_hub, capsys) -> None:
    assert main(["download", "RMBG-1.4"]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert main(["download", "BiRefNet"]) == 2
    assert "BiRefNet is not downloaded here" in capsys.readouterr().err


def test_missing_input_and_bad_model(offline_hub, tmp_path, capsys) -> None:
    assert main(["remove", str(tmp_path / "nothing.png"), *FAST]) == 2
    assert "nothing.png: no such file" in capsys.readouterr().err
    photo().save(tmp_path / "p.png")
    assert main(["remove", str(tmp_path / "p.png"), "--model", "BiRefNet", "-q"]) == 2
    error = capsys.readouterr().err
    assert error.count("BiRefNet is not downloaded here") == 1 and error.startswith("error: ")


def test_output_piped_into_a_reader_that_stops_early(offline_hub) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        f"{sys.executable} {ROOT / 'rmbg.py'} models | head -1", shell=True, capture_output=True, env=env, timeout=120
    )
    assert done.stdout.decode().startswith("model ")
    assert b"Traceback" not in done.stderr and b"BrokenPipe" not in done.stderr


def test_a_file_to_stdout_writes_one_png_and_nothing_else(offline_hub, tree) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "rmbg.py"), "remove", str(tree / "a.jpg"), "-o", "-", *FAST]
    done = subprocess.run(command, capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.startswith(b"\x89PNG\r\n\x1a\n")
    cutout = Image.open(io.BytesIO(done.stdout))
    cutout.load()
    assert cutout.mode == "RGBA" and cutout.size == (120, 80)
    assert not (tree.parent / "-").exists() and not Path("-").exists()
    assert main(["remove", str(tree), "-o", "-", *FAST]) == 2  # several images cannot share stdout


def test_a_failed_write_is_reported_per_file_and_the_run_goes_on(offline_hub, tree, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the sub-folder's outputs should go")
    assert main(["remove", str(tree), "-o", str(out), *FAST]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "album/sub/c.webp: cannot write" in err and "album/broken.jpg: the image data" in err
    assert "2 done, 0 skipped" in err and "2 failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "sub"]
    assert not list(tmp_path.rglob("*.partial"))
