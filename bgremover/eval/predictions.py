"""Predictions cached per dataset and model, with the settings and model time they were made with."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UsageError
from ..imaging.encoding import write_atomic
from ..pipeline import Options
from ..service.options import RemovalRequest
from ..service.removal import Item, RemovalService
from .datasets import Dataset, Sample, read_ground_truth, read_prediction
from .metrics import Scorer, Scores

TIMINGS_FILE = "timings.json"
# Predictions are the soft masks, losslessly: what the metrics read back.
MASKS = RemovalRequest(Options(output="mask"), "png")


def sanitise(name: str) -> str:
    """A model or dataset name as one safe folder name ('briaai/RMBG-2.0' -> 'briaai_RMBG-2.0')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "unnamed"


@dataclass
class Cache:
    """A model's predictions on one dataset, with the settings they were made with and their timings."""

    folder: Path
    settings: dict
    seconds: dict[str, float] = field(default_factory=dict)

    def prediction(self, sample: Sample) -> Path:
        return self.folder / f"{sample.key}.png"

    def save(self) -> None:
        """Atomic, like the predictions: an interrupted run never leaves a half-written record."""
        record = {"settings": self.settings, "seconds_per_image": self.seconds}
        write_atomic(self.folder / TIMINGS_FILE, json.dumps(record, indent=1).encode())


def open_cache(folder: Path, settings: dict, overwrite: bool) -> Cache:
    """The cache record; refuses to mix predictions made at another size or precision."""
    record_file = folder / TIMINGS_FILE
    if overwrite or not record_file.is_file():
        return Cache(folder, settings)
    try:
        record = json.loads(record_file.read_text())
        old, seconds = record["settings"], dict(record["seconds_per_image"])
    except (OSError, ValueError, KeyError, TypeError):
        return Cache(folder, settings)  # no usable record: the predictions stay, their timings are lost
    changed = [f"{key} {old.get(key)} (now {value})" for key, value in settings.items() if old.get(key) != value]
    if changed:
        raise UsageError(
            f"{folder} holds predictions made with {', '.join(changed)}: use the same options, "
            f"--overwrite to redo them, or another --out"
        )
    return Cache(folder, settings, seconds)


class Predictor:
    """One model's missing predictions, made through the removal service (masks as PNG files).

    The model is loaded only when some prediction is missing, and warmed up once untimed.
    """

    def __init__(self, service: RemovalService, batch_size: int = 1, overwrite: bool = False, quiet: bool = False):
        self.service = service
        self.batch_size, self.overwrite, self.quiet = batch_size, overwrite, quiet
        self._warm = False

    def load(self) -> None:
        """Loads the model (a fully cached run never does) and runs it once: CUDA/cuDNN start-up, untimed."""
        if not self._warm:
            self.service.pool.get().predict([Image.new("RGB", (64, 64), (128, 128, 128))])
            self._warm = True

    def run(self, dataset: Dataset, cache: Cache) -> tuple[int, list[str]]:
        """Fills the cache's missing predictions; returns how many were computed and the failures."""
        todo = [s for s in dataset.samples if self.overwrite or not cache.prediction(s).is_file()]
        if not todo:
            return 0, []
        self.load()  # before --overwrite discards anything: a model that fails to load costs nothing
        if self.overwrite:
            # Old predictions go first: an interrupted --overwrite must not leave them to be mixed in on resume.
            for sample in todo:
                cache.prediction(sample).unlink(missing_ok=True)
            cache.save()
        from tqdm import tqdm

        failures: list[str] = []
        computed = 0
        items = [Item(sample.image.name, sample.image) for sample in todo]
        label = f"{self.service.pool.default_model} on {dataset.name}"
        with tqdm(total=len(todo), unit="img", desc=label, disable=self.quiet or len(todo) < 2) as bar:
            for sample, removal in zip(todo, self.service.remove_many(items, MASKS, self.batch_size), strict=True):
                bar.update(1)
                if removal.error:
                    failures.append(removal.error)
                    continue
                write_atomic(cache.prediction(sample), removal.data)
                cache.seconds[sample.key] = removal.timings.infer
                computed += 1
        cache.save()
        return computed, failures


def score_cache(dataset: Dataset, cache: Cache) -> tuple[Scores | None, float | None, list[str]]:
    """Scores of the cached predictions, the mean model time per image, and the images left out."""
    scorer, timed, missing = Scorer(), [], []
    for sample in dataset.samples:
        path = cache.prediction(sample)
        if not path.is_file():
            missing.append(sample.key)
            continue
        ground_truth = read_ground_truth(sample.mask)
        scorer.add(read_prediction(path, ground_truth.shape), ground_truth)
        if sample.key in cache.seconds:
            timed.append(cache.seconds[sample.key])
    seconds = float(np.mean(timed)) if timed else None
    return (scorer.scores() if scorer.count else None), seconds, missing
