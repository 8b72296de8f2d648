"""`rmbg eval`: how accurate each model is on datasets that come with ground-truth masks.

Predictions are written to an output folder first (one PNG per image, per model and
dataset), so an interrupted run resumes where it stopped and a new metric or a new
model never means recomputing the others. The figures themselves all come from
pysodmetrics, a Python port of the MATLAB reference code behind the published SOD and
DIS5K tables, so that the numbers can be put next to those tables; this module only
feeds it and never computes a metric itself.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import hub, imaging, zoo
from .cli import IMAGE_SUFFIXES, UsageError
from .pipeline import PRECISION_HELP, Remover, check_inference_size, pick_device, pick_dtype, precision_name

BETA2 = 0.3  # beta^2 of the F-measure, as in every SOD/DIS benchmark
WF_BETA2 = 1.0  # weighted F-measure: beta^2 = 1, as in Margolin et al.'s reference code
S_ALPHA = 0.5  # S-measure: equal weight for object and region structure
HCE_RELAX = 5  # HCE as in the DIS paper: 5 erosion/dilation steps ...
HCE_EPSILON = 2.0  # ... and polygon approximation tolerance 2 px
TIMINGS_FILE = "timings.json"
PLOT_FILE = "pr_curves.png"
_EXAMPLES = 3
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_GRAY_MODES = ("L", "1", "F", *imaging.SIXTEEN_BIT_MODES)  # read as grayscale without a warning


class DatasetError(ValueError):
    """A dataset that cannot be evaluated; the one-line message names the folder and the fix."""


@dataclass(frozen=True)
class Sample:
    """One image and its mask; `key` names the cached prediction (`<key>.png`)."""

    key: str
    image: Path
    mask: Path


@dataclass
class Dataset:
    name: str
    samples: list[Sample]
    notes: list[str] = field(default_factory=list)


def _few(names: list[str]) -> str:
    """A few names of a possibly long list, so that a message stays one readable line."""
    shown = ", ".join(names[:_EXAMPLES])
    return shown + (", ..." if len(names) > _EXAMPLES else "")


# --- Datasets ---------------------------------------------------------------------------------


def _by_stem(folder: Path, notes: list[str]) -> dict[str, Path]:
    """Image files of `folder` by file stem, the key that pairs an image with its mask."""
    found: dict[str, Path] = {}
    skipped: list[str] = []
    for file in sorted(folder.iterdir()):
        if not file.is_file() or file.name.startswith("."):
            continue
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(file.name)
        elif file.stem in found:
            notes.append(f"{folder.name}/{file.name} has the same stem as {found[file.stem].name}: ignored")
        else:
            found[file.stem] = file
    if skipped:
        notes.append(f"{folder.name}/: skipped {len(skipped)} non-image files ({_few(skipped)})")
    return found


def _layout_hint(root: Path) -> str:
    """Points at the sub-datasets when the user gave the parent folder (DIS5K/ instead of DIS5K/DIS-VD)."""
    inner = [d.name for d in sorted(root.iterdir()) if d.is_dir() and (d / "im").is_dir() and (d / "gt").is_dir()]
    if inner:
        return f"; it holds the datasets {_few(inner)}: pass each with --data"
    return ""


def _folder_samples(root: Path, notes: list[str]) -> list[Sample]:
    missing = [f"{name}/" for name in ("im", "gt") if not (root / name).is_dir()]
    if missing:
        raise DatasetError(
            f"{root}: no {' and no '.join(missing)} folder. A dataset folder holds images in im/ and "
            f"masks in gt/ with the same file stems (DIS5K layout), or give a CSV of image,mask pairs"
            + _layout_hint(root)
        )
    images = _by_stem(root / "im", notes)
    masks = _by_stem(root / "gt", notes)
    if not images:
        raise DatasetError(f"{root}: im/ holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    matched = [stem for stem in images if stem in masks]
    unmatched = [images[stem].name for stem in images if stem not in masks]
    if not matched:
        raise DatasetError(
            f"{root}: none of the {len(images)} images in im/ has a mask in gt/ with the same file stem "
            f"(e.g. {_few(unmatched)} have no gt/<stem>.png)"
        )
    if unmatched:
        notes.append(
            f"{len(unmatched)} of {len(images)} images have no mask in gt/ ({_few(unmatched)}): "
            f"evaluating the {len(matched)} that have one"
        )
    orphans = [masks[stem].name for stem in masks if stem not in images]
    if orphans:
        notes.append(f"{len(orphans)} masks in gt/ have no image in im/ ({_few(orphans)}): ignored")
    return [Sample(stem, images[stem], masks[stem]) for stem in matched]


def _unique_key(stem: str, taken: set[str]) -> str:
    key, n = stem, 1
    while key in taken:
        n += 1
        key = f"{stem}_{n}"
    taken.add(key)
    return key


def _csv_samples(path: Path, notes: list[str]) -> list[Sample]:
    """Rows of image,mask paths, relative to the CSV's folder (absolute paths work too)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [(name or "").strip().lower() for name in reader.fieldnames or []]
        if not {"image", "mask"} <= set(columns):
            found = ",".join(columns) or "nothing"
            raise DatasetError(f"{path}: needs a header row with the columns image,mask (found: {found})")
        reader.fieldnames = columns
        rows = list(reader)
    samples, missing, taken = [], [], set()
    for number, row in enumerate(rows, start=2):
        image, mask = ((row.get(name) or "").strip() for name in ("image", "mask"))
        gone = [p for p in (image, mask) if not p or not (path.parent / p).is_file()]
        if gone:
            missing.append(f"row {number}: {gone[0] or 'empty cell'}")
            continue
        image_path, mask_path = path.parent / image, path.parent / mask
        samples.append(Sample(_unique_key(image_path.stem, taken), image_path, mask_path))
    if not samples:
        raise DatasetError(f"{path}: no row names an existing image and mask ({len(rows)} rows; {_few(missing)})")
    if missing:
        notes.append(f"{len(missing)} of {len(rows)} rows name files that do not exist ({_few(missing)}): skipped")
    return samples


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """Upright size and mode from the file header only, without decoding the pixels."""
    with Image.open(path) as image:
        size = image.size
        if image.getexif().get(0x0112, 1) in _ROTATED:
            size = (size[1], size[0])
        return size, image.mode


def _check_headers(samples: list[Sample], notes: list[str]) -> list[Sample]:
    """Drops unreadable pairs and says, once per dataset, which masks will be resized or converted."""
    kept, unreadable, resized, coloured = [], [], [], []
    for sample in samples:
        try:
            image_size, _ = _header(sample.image)
            mask_size, mask_mode = _header(sample.mask)
        except (OSError, SyntaxError, ValueError):
            unreadable.append(sample.key)
            continue
        if image_size != mask_size:
            resized.append(f"{sample.key}: {image_size[0]}x{image_size[1]} vs {mask_size[0]}x{mask_size[1]}")
        if mask_mode not in _GRAY_MODES:
            coloured.append(f"{sample.mask.name} ({mask_mode})")
        kept.append(sample)
    if unreadable:
        notes.append(f"{len(unreadable)} images or masks are not readable images ({_few(unreadable)}): skipped")
    if resized:
        notes.append(
            f"{len(resized)} images differ in size from their mask ({_few(resized)}): "
            f"predictions are resized to the mask's size"
        )
    if coloured:
        notes.append(f"{len(coloured)} masks are not grayscale ({_few(coloured)}): converted to grayscale (L)")
    return kept


def load_dataset(source: str | Path) -> Dataset:
    """A dataset folder (im/ + gt/) or CSV, checked up front so a long run never dies halfway.

    Problems that still leave something to evaluate become `notes` (shown as warnings);
    a dataset with nothing to evaluate raises `DatasetError`.
    """
    path = Path(source)
    notes: list[str] = []
    if path.is_dir():
        samples, name = _folder_samples(path, notes), path.resolve().name
    elif path.is_file() and path.suffix.lower() == ".csv":
        samples, name = _csv_samples(path, notes), path.stem
    elif path.exists():
        raise DatasetError(f"{path}: not a dataset folder (im/ and gt/) nor a .csv file of image,mask pairs")
    else:
        raise DatasetError(f"{path}: no such dataset folder or CSV file")
    samples = _check_headers(samples, notes)
    if not samples:
        raise DatasetError(f"{path}: no readable image and mask pair to evaluate")
    return Dataset(name=name, samples=samples, notes=notes)


# --- Masks ------------------------------------------------------------------------------------


def read_ground_truth(path: Path) -> np.ndarray:
    """The mask as uint8 0-255 grayscale, the input pysodmetrics binarises (> 128)."""
    with Image.open(path) as image:
        image.load()
        return np.asarray(imaging.to_gray8(image))


def read_prediction(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A cached soft mask at the ground truth's size (H, W), bilinear when it must be resized."""
    with Image.open(path) as image:
        mask = image.convert("L")
    height, width = shape[:2]
    if mask.size != (width, height):
        mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(mask)


# --- Metrics ----------------------------------------------------------------------------------


@dataclass
class Scores:
    """One model on one dataset: each figure is the mean of the per-image figures."""

    images: int
    max_f: float
    mean_f: float
    adaptive_f: float
    weighted_f: float
    mae: float
    s_measure: float
    mean_e: float
    max_e: float
    adaptive_e: float
    hce: float
    precision: list[float]  # mean over images at thresholds 255, 254, ..., 0
    recall: list[float]


class Scorer:
    """pysodmetrics' measures, accumulated over one model's predictions on one dataset."""

    def __init__(self) -> None:
        import py_sod_metrics as sod  # cv2, scipy, scikit-image: loaded only when evaluating

        # FmeasureV2 is pysodmetrics' successor to `Fmeasure` (same figures, no deprecation warning).
        self._f = sod.FmeasureV2(
            {
                "f": sod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=BETA2),
                "p": sod.PrecisionHandler(with_dynamic=True, with_adaptive=False),
                "r": sod.RecallHandler(with_dynamic=True, with_adaptive=False),
            }
        )
        self._wf = sod.WeightedFmeasure(beta=WF_BETA2)
        self._mae = sod.MAE()
        self._s = sod.Smeasure(alpha=S_ALPHA)
        self._e = sod.Emeasure()
        self._hce = sod.HumanCorrectionEffortMeasure(relax=HCE_RELAX, epsilon=HCE_EPSILON)
        self.count = 0

    def add(self, prediction: np.ndarray, ground_truth: np.ndarray) -> None:
        """Both uint8 0-255 grayscale of one size: the prediction is min-max stretched, the truth cut at 128."""
        for measure in (self._f, self._wf, self._mae, self._s, self._e, self._hce):
            measure.step(prediction, ground_truth)
        self.count += 1

    def scores(self) -> Scores:
        if not self.count:
            raise ValueError("no prediction to score")
        f = self._f.get_results()
        e = self._e.get_results()["em"]
        return Scores(
            images=self.count,
            max_f=float(f["f"]["dynamic"].max()),
            mean_f=float(f["f"]["dynamic"].mean()),
            adaptive_f=float(f["f"]["adaptive"]),
            weighted_f=float(self._wf.get_results()["wfm"]),
            mae=float(self._mae.get_results()["mae"]),
            s_measure=float(self._s.get_results()["sm"]),
            mean_e=float(e["curve"].mean()),
            max_e=float(e["curve"].max()),
            adaptive_e=float(e["adp"]),
            hce=float(self._hce.get_results()["hce"]),
            precision=[float(v) for v in f["p"]["dynamic"]],
            recall=[float(v) for v in f["r"]["dynamic"]],
        )


def score(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> Scores:
    """Scores for (prediction, ground truth) arrays; the library API behind `rmbg eval`."""
    scorer = Scorer()
    for prediction, ground_truth in pairs:
        scorer.add(prediction, ground_truth)
    return scorer.scores()


# --- Predictions ------------------------------------------------------------------------------


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
        imaging.write_atomic(self.folder / TIMINGS_FILE, json.dumps(record, indent=1).encode())


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
    """Loads a model only when some prediction is missing, and times it after one warm-up pass."""

    def __init__(self, model: str, args: argparse.Namespace):
        self.model, self.args = model, args
        self._remover: Remover | None = None

    def load(self) -> Remover:
        """The model, loaded on first use only: a fully cached run never loads it."""
        if self._remover is None:
            self._remover = Remover(self.model, self.args.device, self.args.precision, self.args.size)
            self._remover.predict([Image.new("RGB", (64, 64), (128, 128, 128))])  # CUDA/cuDNN start-up, untimed
        return self._remover

    def run(self, dataset: Dataset, cache: Cache) -> tuple[int, list[str]]:
        """Fills the cache's missing predictions; returns how many were computed and the failures."""
        todo = [s for s in dataset.samples if self.args.overwrite or not cache.prediction(s).is_file()]
        if not todo:
            return 0, []
        remover = self.load()  # before --overwrite discards anything: a model that fails to load costs nothing
        if self.args.overwrite:
            # Old predictions go first: an interrupted --overwrite must not leave them to be mixed in on resume.
            for sample in todo:
                cache.prediction(sample).unlink(missing_ok=True)
            cache.save()
        from tqdm import tqdm

        failures: list[str] = []
        computed = 0
        quiet = self.args.quiet or len(todo) < 2
        with tqdm(total=len(todo), unit="img", desc=f"{self.model} on {dataset.name}", disable=quiet) as bar:
            for start in range(0, len(todo), self.args.batch_size):
                batch = todo[start : start + self.args.batch_size]
                computed += self._predict_batch(remover, batch, cache, failures)
                bar.update(len(batch))
        return computed, failures

    @staticmethod
    def _predict_batch(remover: Remover, batch: list[Sample], cache: Cache, failures: list[str]) -> int:
        samples, images = [], []
        for sample in batch:
            try:
                images.append(remover.decode(sample.image, name=sample.image.name).rgb)
                samples.append(sample)
            except imaging.ImageError as error:
                failures.append(str(error))
        if not samples:
            return 0
        started = time.perf_counter()
        masks = remover.predict(images)
        per_image = (time.perf_counter() - started) / len(samples)
        for sample, mask in zip(samples, masks, strict=True):
            imaging.write_atomic(cache.prediction(sample), imaging.encode(mask, "png"))
            cache.seconds[sample.key] = per_image
        cache.save()
        return len(samples)


# --- Scoring a cache --------------------------------------------------------------------------


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


# --- Reports ----------------------------------------------------------------------------------

# (column, Scores field or "ms", format); the Markdown table shows the first group, CSV/JSON all.
TABLE_COLUMNS = [
    ("maxF", "max_f", "{:.3f}"),
    ("meanF", "mean_f", "{:.3f}"),
    ("wF", "weighted_f", "{:.3f}"),
    ("MAE", "mae", "{:.3f}"),
    ("S", "s_measure", "{:.3f}"),
    ("meanE", "mean_e", "{:.3f}"),
    ("maxE", "max_e", "{:.3f}"),
    ("HCE", "hce", "{:.0f}"),
    ("ms/img", "ms_per_image", "{:.1f}"),
]
EXTRA_COLUMNS = [("adpF", "adaptive_f"), ("adpE", "adaptive_e")]


def result_row(dataset: str, model: str, scores: Scores, seconds: float | None) -> dict:
    """One flat row for the table, the CSV and the JSON (curves left out)."""
    values = {k: v for k, v in asdict(scores).items() if k not in ("precision", "recall")}
    values["ms_per_image"] = None if seconds is None else seconds * 1000.0
    row = {"dataset": dataset, "model": model, "images": scores.images}
    for column, name, _ in TABLE_COLUMNS:
        row[column] = values[name]
    for column, name in EXTRA_COLUMNS:
        row[column] = values[name]
    return row


def markdown_table(dataset: Dataset, rows: list[dict]) -> str:
    """The per-dataset table printed on stdout: one row per model."""
    header = ["model", *(column for column, _, _ in TABLE_COLUMNS)]
    lines = [
        f"### {dataset.name} ({len(dataset.samples)} images)",
        "",
        "| " + " | ".join(header) + " |",
        "|:--|" + "--:|" * len(TABLE_COLUMNS),
    ]
    for row in rows:
        cells = [row["model"].replace("|", "\\|")]
        for column, _, fmt in TABLE_COLUMNS:
            cells.append("n/a" if row[column] is None else fmt.format(row[column]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["dataset", "model"])
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, rows: list[dict], settings: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": settings, "results": rows}, indent=2) + "\n", encoding="utf-8")


# --- Precision-recall plot (Pillow only: no plotting library among the dependencies) -----------

_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
_PLOT_SIZE = (800, 600)
_MARGIN = (80, 50, 30, 70)  # left, top, right, bottom


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _to_canvas(recall: float, precision: float) -> tuple[float, float]:
    left, top, right, bottom = _MARGIN
    width = _PLOT_SIZE[0] - left - right
    height = _PLOT_SIZE[1] - top - bottom
    return left + recall * width, top + (1.0 - precision) * height


def _draw_axes(draw: ImageDraw.ImageDraw, canvas: Image.Image, title: str) -> None:
    font, small = _font(18), _font(14)
    for step in range(6):
        value = step / 5
        x, y0 = _to_canvas(value, 0.0)
        _, y1 = _to_canvas(value, 1.0)
        draw.line([(x, y0), (x, y1)], fill="#e6e6e6")
        draw.text((x, y0 + 8), f"{value:.1f}", fill="black", font=small, anchor="mt")
        x0, y = _to_canvas(0.0, value)
        x1, _ = _to_canvas(1.0, value)
        draw.line([(x0, y), (x1, y)], fill="#e6e6e6")
        draw.text((x0 - 8, y), f"{value:.1f}", fill="black", font=small, anchor="rm")
    draw.rectangle([_to_canvas(0.0, 1.0), _to_canvas(1.0, 0.0)], outline="black")
    centre_x, bottom = _to_canvas(0.5, 0.0)
    draw.text((centre_x, bottom + 34), "Recall", fill="black", font=font, anchor="mt")
    draw.text((_PLOT_SIZE[0] / 2, _MARGIN[1] / 2), title, fill="black", font=font, anchor="mm")
    label = Image.new("RGB", (140, 26), "white")
    ImageDraw.Draw(label).text((70, 13), "Precision", fill="black", font=font, anchor="mm")
    rotated = label.rotate(90, expand=True)
    _, centre_y = _to_canvas(0.0, 0.5)
    canvas.paste(rotated, (12, int(centre_y - rotated.height / 2)))


def _draw_legend(draw: ImageDraw.ImageDraw, labels: list[str]) -> None:
    font = _font(14)
    x, y = _to_canvas(0.0, 0.0)
    x, y = x + 14, y - 14 - 22 * len(labels)
    width = max(draw.textlength(label, font=font) for label in labels) + 54
    draw.rectangle([x - 6, y - 6, x + width, y + 22 * len(labels)], fill="white", outline="#999999")
    for index, label in enumerate(labels):
        colour = _COLOURS[index % len(_COLOURS)]
        row = y + 22 * index + 9
        draw.line([(x + 2, row), (x + 32, row)], fill=colour, width=3)
        draw.text((x + 40, row), label, fill="black", font=font, anchor="lm")


def plot_pr_curves(curves: dict[str, Scores], title: str, path: Path) -> None:
    """Precision against recall for each model (thresholds 0-255), in the style of the DIS/SOD papers."""
    canvas = Image.new("RGB", _PLOT_SIZE, "white")
    draw = ImageDraw.Draw(canvas)
    _draw_axes(draw, canvas, title)
    for index, scores in enumerate(curves.values()):
        # Thresholds above every predicted value give no positives: (0, 0), not a point on the curve.
        points = [_to_canvas(r, p) for r, p in zip(scores.recall, scores.precision, strict=True) if r or p]
        if len(points) > 1:
            draw.line(points, fill=_COLOURS[index % len(_COLOURS)], width=2, joint="curve")
    if curves:
        _draw_legend(draw, [f"{name} (maxF {s.max_f:.3f})" for name, s in curves.items()])
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = path.with_name(path.name + ".partial")
    canvas.save(buffer, format="PNG")
    buffer.replace(path)


# --- The command ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="DIR|CSV",
        help="dataset folder with im/ and gt/ (DIS5K layout), or a CSV with columns image,mask; repeatable",
    )
    parser.add_argument(
        "--model",
        action="append",
        help=f"zoo name, Hub repo id, folder or .safetensors file; repeatable (default: {zoo.DEFAULT_MODEL})",
    )
    parser.add_argument("--out", type=Path, default=Path("eval_out"), help="prediction cache (default: %(default)s)")
    parser.add_argument("--device", default=os.environ.get("RMBG_DEVICE", "auto"), help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="auto", help=PRECISION_HELP)
    parser.add_argument("--size", type=int, default=None, help="inference size, a multiple of 32 (default: model's)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true", help="recompute predictions that are already cached")
    parser.add_argument("--csv", type=Path, help="also write the results to this CSV file")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


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
    for spec in dict.fromkeys(specs or [os.environ.get("RMBG_MODEL", zoo.DEFAULT_MODEL)]):
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
    dtype = pick_dtype(args.precision, pick_device(args.device))
    return {"size": args.size, "precision": precision_name(dtype)}


def run_eval(args: argparse.Namespace) -> int:
    """`rmbg eval`: predict what is missing, then score, tabulate and plot every model on every dataset."""
    settings = _settings(args)
    datasets = _load_datasets(args.data)
    models = _models(args.model)
    caches = {
        (d.name, m.spec): open_cache(args.out / d.name / m.folder, {"model": m.spec, **settings}, args.overwrite)
        for d in datasets
        for m in models
    }
    failures: list[str] = []
    for model in models:
        predictor = Predictor(model.spec, args)
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
        write_json(args.json, rows, {**settings, "models": [m.spec for m in models], "datasets": datasets_used})
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
