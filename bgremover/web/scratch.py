"""Folders for the result files the UI hands out, deleted after an hour and all at exit."""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from pathlib import Path


class Scratch:
    """Folders for result files the UI hands out; ones older than `max_age` seconds are deleted.

    The root folder goes when the Scratch does, or at the latest when the process exits, so
    that restarts do not leave result files behind in the temporary folder.
    """

    def __init__(self, max_age: float = 3600.0):
        self.root = Path(tempfile.mkdtemp(prefix="rmbg-web-"))
        self.max_age = max_age
        self._remove_root = weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)

    def close(self) -> None:
        """Deletes the root folder now: a server stopped at once exits without the usual clean-up."""
        self._remove_root()

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
