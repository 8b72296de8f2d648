"""The UI's scratch folders: result files are pruned after their age, and nothing is left at exit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgremover.web.scratch import Scratch

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)


@pytest.mark.parametrize("removed_first", [False, True], ids=["left-in-place", "already-gone"])
def test_the_scratch_folder_is_removed_when_the_process_exits(removed_first: bool) -> None:
    code = (
        "import shutil\n"
        "from bgremover.web.scratch import Scratch\n"
        "scratch = Scratch()\n"
        "(scratch.new_dir() / 'cutout.png').write_bytes(b'png')\n"
        f"if {removed_first}:\n"
        "    shutil.rmtree(scratch.root)\n"
        "print(scratch.root)\n"
    )
    finished = run_python(code)
    assert finished.returncode == 0 and finished.stderr == ""
    root = Path(finished.stdout.strip())
    assert root.name.startswith("rmbg-web-") and not root.exists()


def test_folders_past_their_age_are_pruned_when_a_new_one_is_made() -> None:
    scratch = Scratch(max_age=60)
    old, recent = scratch.new_dir(), scratch.new_dir()
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    newest = scratch.new_dir()
    assert not old.exists() and recent.exists() and newest.exists()
    root = scratch.root
    del scratch
    assert not root.exists()
