"""Tables (Markdown, CSV, JSON) and the precision-recall plot of an evaluation."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .datasets import Dataset
from .metrics import Scores

PLOT_FILE = "pr_curves.png"


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


# Precision-recall plot: drawn with Pillow, so no plotting library is needed.

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
