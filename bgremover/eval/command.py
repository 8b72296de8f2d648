"""`rmbg eval`: predict what is missing, then score, tabulate and plot every model on every dataset."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .. import hub
from ..engines import choose_runtime, pick_device, precision_for
from ..errors import UsageError
from ..service.config import ServiceConfig, build_service
from ..service.removal import RemovalService
from .datasets import Dataset, _few, _unique_key, load_dataset
from .predictions import Predictor, open_cache, sanitise, score_cache
from .report import PLOT_FILE, markdown_table, plot_pr_curves, result_row, write_csv, write_json


@dataclass(frozen=True)
class EvalRun:
    """What `rmbg eval` was asked for besides the service, read off the command line by `cli.py`:
    the datasets, the models (none: the service's), the cache folder and the reports."""

    data: tuple[str, ...]
    models: tuple[str, ...] = ()
    out: Path = Path("eval_out")
    batch_size: int = 1
    overwrite: bool = False
    quiet: bool = False
    csv: Path | None = None
    json: Path | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")


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


def _models(specs: list[str]) -> list[Model]:
    """Each model resolved (a typo fails here, before any work) and given a cache folder of its own."""
    models: list[Model] = []
    for spec in dict.fromkeys(specs):
        label = hub.resolve(spec).name
        folder = _unique_key(sanitise(label), {m.folder for m in models})
        models.append(Model(spec, label, folder))
    return models


def _settings(config: ServiceConfig) -> dict:
    """What a cached prediction depends on besides the model: predictions made otherwise are not reused."""
    device = pick_device(config.device)
    precision = precision_for(choose_runtime(config.runtime, device), config.precision, device)
    return {"size": config.size, "precision": precision, "engine": config.runtime}


def run_eval(run: EvalRun, config: ServiceConfig) -> int:
    """`rmbg eval`: predict what is missing, then score, tabulate and plot every model on every dataset;
    each model runs with the settings of `config` (the first model's, `with_model` for the others)."""
    made_with = _settings(config)
    datasets = _load_datasets(list(run.data))
    models = _models(list(run.models) or [config.model])
    caches = {
        (d.name, m.spec): open_cache(run.out / d.name / m.folder, {"model": m.spec, **made_with}, run.overwrite)
        for d in datasets
        for m in models
    }
    failures: list[str] = []
    engines: dict[str, str] = {}
    for model in models:
        service = build_service(config.with_model(model.spec))
        predictor = Predictor(service, run.batch_size, run.overwrite, run.quiet)
        for dataset in datasets:
            computed, failed = predictor.run(dataset, caches[dataset.name, model.spec])
            failures += failed
            cached = len(dataset.samples) - computed - len(failed)
            tail = f", {len(failed)} failed" if failed else ""
            print(f"{model.label} on {dataset.name}: {computed} computed, {cached} cached{tail}", file=sys.stderr)
        engines[model.label] = _engine_that_ran(service)
    rows = []
    for dataset in datasets:
        rows += _report_dataset(dataset, models, caches, run.out)
    if run.csv:
        write_csv(run.csv, rows)
    if run.json:
        datasets_used = [d.name for d in datasets]
        meta = {**made_with, "models": [m.spec for m in models], "datasets": datasets_used, "engines": engines}
        write_json(run.json, rows, meta)
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _engine_that_ran(service: RemovalService) -> str:
    """What computed this run's predictions (runtime, precision, device), printed and in the JSON;
    the runtime asked for where every prediction came from the cache and nothing was loaded."""
    pool = service.pool
    if pool.state(pool.default_model) != "loaded":
        return pool.runtime
    described = pool.get().engine.describe()
    print(f"{pool.default_model}: {described}", file=sys.stderr)
    return described


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
