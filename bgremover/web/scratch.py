"""Folders for the result files the UI hands out, deleted after an hour."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path


class Scratch:
    """Folders for result files the UI hands out; ones older than `max_age` seconds are deleted."""

    def __init__(self, max_age: float = 3600.0):
        self.root = Path(tempfile.mkdtemp(prefix="rmbg-web-"))
        self.max_age = max_age

    def new_dir(self) -> Path:
        self.prune()
        return Path(tempfile.mkdtemp(dir=self.root))

    def prune(self) -> None:
        cutoff = time.time() - self.max_age
        for folder in self.root.iterdir():
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                pass  # another request pruned it first
