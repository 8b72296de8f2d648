"""`rmbg eval`: predict what is missing, then score, tabulate and plot every model on every dataset."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import hub, settings
from ..engines import choose_engine, pick_device, precision_for
from ..errors import UsageError
from ..pipeline import check_inference_size
from ..service.pool import ModelPool
from ..service.removal import RemovalService
from .datasets import Dataset, _few, _unique_key, load_dataset
from .predictions import Predictor, open_cache, sanitise, score_cache
from .report import PLOT_FILE, markdown_table, plot_pr_curves, result_row, write_csv, write_json


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _load_datasets(sources: list[str]) -> list[Dataset]:
    """Every dataset, checked before any model is loaded; names made unique for the output folders."""
    datasets, seen, names = [], set(), set()
    for source in sources:
        resolved = Path(source).resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        dataset = load_dataset(source)
        dataset.name = _unique_key(sanitise(dataset.name), names)
        for note in dataset.notes:
            _warn(f"{dataset.name}: {note}")
        datasets.append(dataset)
    return datasets


@dataclass(frozen=True)
class Model:
    spec: str  # what the user typed
    label: str  # the name in tables and plots
    folder: str  # the cache folder's name


def _models(specs: list[str] | None) -> list[Model]:
    """Each model resolved (a typo fails here, before any work) and given a cache folder of its own."""
    models: list[Model] = []
    for spec in dict.fromkeys(specs or [settings.model()]):
        label = hub.resolve(spec).name
        folder = _unique_key(sanitise(label), {m.folder for m in models})
        models.append(Model(spec, label, folder))
    return models


def _settings(args: argparse.Namespace) -> dict:
    """What a cached prediction depends on besides the model: predictions made otherwise are not reused."""
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.size is not None:
        check_inference_size(args.size)
    device = pick_device(args.device)
    precision = precision_for(choose_engine(args.engine, device), args.precision, device)
    return {"size": args.size, "precision": precision, "engine": args.engine}


def run_eval(args: argparse.Namespace) -> int:
    """`rmbg eval`: predict what is missing, then score, tabulate and plot every model on every dataset."""
    made_with = _settings(args)
    datasets = _load_datasets(args.data)
    models = _models(args.model)
    caches = {
        (d.name, m.spec): open_cache(args.out / d.name / m.folder, {"model": m.spec, **made_with}, args.overwrite)
        for d in datasets
        for m in models
    }
    failures: list[str] = []
    for model in models:
        service = RemovalService(ModelPool(model.spec, args.device, args.precision, args.size, args.engine))
        predictor = Predictor(service, args.batch_size, args.overwrite, args.quiet)
        for dataset in datasets:
            computed, failed = predictor.run(dataset, caches[dataset.name, model.spec])
            failures += failed
            cached = len(dataset.samples) - computed - len(failed)
            tail = f", {len(failed)} failed" if failed else ""
            print(f"{model.label} on {dataset.name}: {computed} computed, {cached} cached{tail}", file=sys.stderr)
    rows = []
    for dataset in datasets:
        rows += _report_dataset(dataset, models, caches, args.out)
    if args.csv:
        write_csv(args.csv, rows)
    if args.json:
        datasets_used = [d.name for d in datasets]
        write_json(args.json, rows, {**made_with, "models": [m.spec for m in models], "datasets": datasets_used})
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _report_dataset(dataset: Dataset, models: list[Model], caches: dict, out: Path) -> list[dict]:
    """Scores every model on one dataset, prints its table and saves its precision-recall plot."""
    rows, curves = [], {}
    for model in models:
        scores, seconds, missing = score_cache(dataset, caches[dataset.name, model.spec])
        if missing:
            _warn(f"{model.label} on {dataset.name}: no prediction for {len(missing)} images ({_few(missing)})")
        if scores is None:
            continue
        rows.append(result_row(dataset.name, model.label, scores, seconds))
        curves[model.label] = scores
    print(markdown_table(dataset, rows))
    plot_pr_curves(curves, f"{dataset.name}: precision-recall", out / dataset.name / PLOT_FILE)
    return rows
