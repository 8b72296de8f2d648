"""Datasets with ground truth: the DIS5K folder layout (im/, gt/ by file stem) or a CSV of pairs,
checked before any model is loaded, and the masks read as the metrics expect them."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..imaging.decoding import IMAGE_SUFFIXES, SIXTEEN_BIT_MODES, to_gray8

_EXAMPLES = 3
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_GRAY_MODES = ("L", "1", "F", *SIXTEEN_BIT_MODES)  # read as grayscale without a warning


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


def read_ground_truth(path: Path) -> np.ndarray:
    """The mask as uint8 0-255 grayscale, the input pysodmetrics binarises (> 128)."""
    with Image.open(path) as image:
        image.load()
        return np.asarray(to_gray8(image))


def read_prediction(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A cached soft mask at the ground truth's size (H, W), bilinear when it must be resized."""
    with Image.open(path) as image:
        mask = image.convert("L")
    height, width = shape[:2]
    if mask.size != (width, height):
        mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(mask)
