"""`rmbg eval`: metric figures on hand-built masks, the dataset loader on odd layouts, the command end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from bgremover import pipeline
from bgremover.cli import main
from bgremover.engines import pick_dtype, precision_name
from bgremover.eval.datasets import DatasetError, load_dataset, read_ground_truth, read_prediction
from bgremover.eval.metrics import score
from bgremover.eval.predictions import sanitise

H, W = 96, 128
N = H * W
SQUARE = (slice(28, 68), slice(44, 84))  # 40 x 40 pixels around the centre
FG = 40 * 40
P = FG / N  # the share of foreground: precision when every pixel is called foreground


def square_mask(rows: slice = SQUARE[0], cols: slice = SQUARE[1]) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[rows, cols] = 255
    return mask


def f_measure(precision: float, recall: float, beta2: float = 0.3) -> float:
    return (1 + beta2) * precision * recall / (beta2 * precision + recall)


# At threshold 0 every pixel is foreground: recall 1, precision P. Thresholds 1-255 see the binary prediction.
F_ALL = f_measure(P, 1.0)


# --- Figures on hand-built masks --------------------------------------------------------------


def test_perfect_prediction() -> None:
    gt = square_mask()
    s = score([(gt, gt)])
    assert s.mae == 0
    assert s.max_f == pytest.approx(1.0)
    assert s.mean_f == pytest.approx((255 * 1.0 + F_ALL) / 256)
    assert s.s_measure == pytest.approx(1.0)
    assert s.max_e == pytest.approx(N / (N - 1))  # E-measure divides by N - 1, as the MATLAB original does
    assert s.adaptive_e == pytest.approx(N / (N - 1))  # threshold 2 x mean: the square itself
    # Threshold 0 calls everything foreground: a constant map, whose alignment is 1/4 at every pixel.
    assert s.mean_e == pytest.approx((255 + 0.25) / 256 * N / (N - 1))
    assert s.weighted_f == pytest.approx(1.0)
    assert s.hce == 0
    assert s.images == 1


def test_empty_prediction() -> None:
    s = score([(np.zeros((H, W), np.uint8), square_mask())])
    assert s.mae == pytest.approx(P)
    assert s.max_f == pytest.approx(F_ALL) and s.mean_f == pytest.approx(F_ALL / 256)
    # Object score: background perfect (weight 1 - P), foreground 0; every quadrant holds foreground: region 0.
    assert s.s_measure == pytest.approx(0.5 * (1 - P))
    # A constant prediction aligns with nothing: every pixel's enhanced alignment is 1/4, at every threshold.
    assert s.mean_e == pytest.approx(0.25 * N / (N - 1)) and s.max_e == pytest.approx(0.25 * N / (N - 1))
    assert s.adaptive_e == pytest.approx(0.25 * N / (N - 1))
    assert s.weighted_f < 0.05
    assert s.hce > 0


def test_inverted_prediction() -> None:
    gt = square_mask()
    s = score([(255 - gt, gt)])
    assert s.mae == pytest.approx(1.0)
    assert s.s_measure == 0
    assert s.max_f == pytest.approx(F_ALL) and s.mean_f == pytest.approx(F_ALL / 256)
    assert s.weighted_f < 0.05


def test_shifted_square_mae_is_the_share_of_differing_pixels() -> None:
    gt = square_mask()
    shifted = square_mask(cols=slice(52, 92))  # 8 pixels to the right
    differing = np.count_nonzero(shifted != gt)
    assert differing == 2 * 8 * 40
    s = score([(shifted, gt)])
    assert s.mae == pytest.approx(differing / N)
    # Thresholds 1-255: 32 x 40 of 40 x 40 pixels right, so precision = recall = 0.8, and F = 0.8.
    assert s.max_f == pytest.approx(0.8)
    assert s.mean_f == pytest.approx((255 * 0.8 + F_ALL) / 256)
    assert s.precision[0] == pytest.approx(0.8) and s.recall[0] == pytest.approx(0.8)  # threshold 255 first
    assert s.precision[-1] == pytest.approx(P) and s.recall[-1] == pytest.approx(1.0)  # threshold 0 last
    assert len(s.precision) == len(s.recall) == 256


def test_f_measure_weights_precision_with_beta_squared_0_3() -> None:
    wider = square_mask(cols=slice(44, 104))  # 40 x 60: recall 1, precision 2/3
    s = score([(wider, square_mask())])
    assert s.max_f == pytest.approx(f_measure(2 / 3, 1.0))  # 0.722; beta^2 = 1 would give 0.8
    assert s.max_f == pytest.approx(1.3 * (2 / 3) / (0.3 * (2 / 3) + 1))


def test_predictions_are_min_max_stretched_and_truth_cut_at_128() -> None:
    gt = square_mask()
    faint = gt // 2  # 0 and 127: the same map, stretched to 0-1 as the MATLAB toolkits do
    assert score([(faint, gt)]).mae == 0
    grey_truth = np.where(gt > 0, 129, 128).astype(np.uint8)  # foreground is > 128, not >= 128
    assert score([(gt, grey_truth)]).mae == 0


def test_figures_are_means_over_images() -> None:
    gt = square_mask()
    s = score([(gt, gt), (255 - gt, gt)])
    assert s.mae == pytest.approx(0.5)
    assert s.s_measure == pytest.approx(0.5)
    assert s.images == 2


# --- Masks on disk ----------------------------------------------------------------------------


def test_rgb_ground_truth_is_read_as_grayscale(tmp_path) -> None:
    Image.fromarray(square_mask()).convert("RGB").save(tmp_path / "gt.png")
    gt = read_ground_truth(tmp_path / "gt.png")
    assert gt.dtype == np.uint8 and gt.shape == (H, W)
    assert np.array_equal(gt, square_mask())


def test_sixteen_bit_ground_truth_is_scaled(tmp_path) -> None:
    levels = square_mask()
    levels[:10] = 100  # a band that is background (< 128) only if 16-bit values are scaled down
    Image.fromarray(levels.astype(np.uint16) * 257).save(tmp_path / "gt16.png")
    assert np.array_equal(read_ground_truth(tmp_path / "gt16.png"), levels)


def test_prediction_is_resized_to_the_truth(tmp_path) -> None:
    Image.fromarray(square_mask()).resize((W * 2, H * 2), Image.Resampling.NEAREST).save(tmp_path / "p.png")
    prediction = read_prediction(tmp_path / "p.png", (H, W))
    assert prediction.shape == (H, W)
    assert np.abs(prediction.astype(int) - square_mask()).mean() < 2


# --- The dataset loader -----------------------------------------------------------------------


def make_pair(root, stem: str, size=(W, H), image_suffix=".jpg", mask_mode="L", mask_size=None) -> None:
    """An image with a bright square and its mask, in the DIS5K layout under `root`."""
    (root / "im").mkdir(parents=True, exist_ok=True)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (40, 60, 90))
    ImageDraw.Draw(image).rectangle([size[0] // 3, size[1] // 3, 2 * size[0] // 3, 2 * size[1] // 3], "white")
    image.save(root / "im" / f"{stem}{image_suffix}")
    mask_size = mask_size or size
    mask = Image.new("L", mask_size, 0)
    box = [mask_size[0] // 3, mask_size[1] // 3, 2 * mask_size[0] // 3, 2 * mask_size[1] // 3]
    ImageDraw.Draw(mask).rectangle(box, 255)
    mask.convert(mask_mode).save(root / "gt" / f"{stem}.png")


def test_missing_folder(tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"nope: no such dataset folder or CSV file$"):
        load_dataset(tmp_path / "nope")


def test_folder_without_im_or_gt(tmp_path) -> None:
    (tmp_path / "ds" / "im").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"ds: no gt/ folder\. A dataset folder holds images in im/"):
        load_dataset(tmp_path / "ds")
    with pytest.raises(DatasetError, match=r"no im/ and no gt/ folder"):
        load_dataset(tmp_path / "ds" / "im")


def test_parent_of_datasets_names_them(tmp_path) -> None:
    make_pair(tmp_path / "DIS5K" / "DIS-TE1", "a")
    make_pair(tmp_path / "DIS5K" / "DIS-VD", "a")
    with pytest.raises(DatasetError, match=r"it holds the datasets DIS-TE1, DIS-VD: pass each with --data"):
        load_dataset(tmp_path / "DIS5K")


def test_images_without_masks_are_listed_and_left_out(tmp_path) -> None:
    for stem in "abcdef":
        make_pair(tmp_path, stem)
    for stem in "cdef":
        (tmp_path / "gt" / f"{stem}.png").unlink()
    dataset = load_dataset(tmp_path)
    assert [s.key for s in dataset.samples] == ["a", "b"]
    assert dataset.notes == [
        "4 of 6 images have no mask in gt/ (c.jpg, d.jpg, e.jpg, ...): evaluating the 2 that have one"
    ]
    assert dataset.name == tmp_path.name


def test_no_image_has_a_mask(tmp_path) -> None:
    make_pair(tmp_path, "a")
    make_pair(tmp_path, "b")
    for stem in "ab":
        (tmp_path / "gt" / f"{stem}.png").rename(tmp_path / "gt" / f"{stem}_mask.png")
    with pytest.raises(DatasetError, match=r"none of the 2 images in im/ has a mask in gt/ .*a\.jpg, b\.jpg"):
        load_dataset(tmp_path)


def test_empty_image_folder(tmp_path) -> None:
    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    with pytest.raises(DatasetError, match=r"im/ holds no images"):
        load_dataset(tmp_path)


def test_extra_files_are_skipped(tmp_path) -> None:
    make_pair(tmp_path, "a")
    (tmp_path / "im" / "notes.txt").write_text("hello")
    (tmp_path / "im" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "im" / "sub").mkdir()
    (tmp_path / "gt" / "readme.md").write_text("masks")
    Image.new("L", (W, H)).save(tmp_path / "gt" / "orphan.png")
    dataset = load_dataset(tmp_path)
    assert [s.key for s in dataset.samples] == ["a"]
    assert dataset.notes == [
        "im/: skipped 1 non-image files (notes.txt)",
        "gt/: skipped 1 non-image files (readme.md)",
        "1 masks in gt/ have no image in im/ (orphan.png): ignored",
    ]


def test_same_stem_twice(tmp_path) -> None:
    make_pair(tmp_path, "a")
    Image.new("RGB", (W, H)).save(tmp_path / "im" / "a.png")
    dataset = load_dataset(tmp_path)
    assert [s.image.name for s in dataset.samples] == ["a.jpg"]
    assert dataset.notes == ["im/a.png has the same stem as a.jpg: ignored"]


def test_mismatched_sizes_and_rgb_truth_are_reported(tmp_path) -> None:
    make_pair(tmp_path, "a")
    make_pair(tmp_path, "b", mask_size=(W // 2, H // 2))
    make_pair(tmp_path, "c", mask_mode="RGB")
    dataset = load_dataset(tmp_path)
    assert [s.key for s in dataset.samples] == ["a", "b", "c"]
    assert dataset.notes == [
        "1 images differ in size from their mask (b: 128x96 vs 64x48): predictions are resized to the mask's size",
        "1 masks are not grayscale (c.png (RGB)): converted to grayscale (L)",
    ]


def test_unreadable_files_are_dropped(tmp_path) -> None:
    make_pair(tmp_path, "a")
    make_pair(tmp_path, "b")
    (tmp_path / "gt" / "b.png").write_bytes(b"not a png")
    dataset = load_dataset(tmp_path)
    assert [s.key for s in dataset.samples] == ["a"]
    assert dataset.notes == ["1 images or masks are not readable images (b): skipped"]


def test_csv_of_pairs(tmp_path) -> None:
    make_pair(tmp_path / "one", "x")
    make_pair(tmp_path / "two", "x")
    table = tmp_path / "pairs.csv"
    table.write_text(
        "Image, Mask\none/im/x.jpg,one/gt/x.png\ntwo/im/x.jpg,two/gt/x.png\nmissing.jpg,one/gt/x.png\n",
        encoding="utf-8",
    )
    dataset = load_dataset(table)
    assert dataset.name == "pairs"
    assert [s.key for s in dataset.samples] == ["x", "x_2"]
    assert dataset.samples[1].mask == tmp_path / "two" / "gt" / "x.png"
    assert dataset.notes == ["1 of 3 rows name files that do not exist (row 4: missing.jpg): skipped"]


def test_csv_errors(tmp_path) -> None:
    table = tmp_path / "pairs.csv"
    table.write_text("picture,alpha\na.jpg,a.png\n")
    with pytest.raises(DatasetError, match=r"needs a header row with the columns image,mask \(found: picture,alpha\)"):
        load_dataset(table)
    table.write_text("image,mask\na.jpg,a.png\n")
    with pytest.raises(DatasetError, match=r"no row names an existing image and mask \(1 rows; row 2: a\.jpg\)"):
        load_dataset(table)
    (tmp_path / "list.txt").write_text("a.jpg")
    with pytest.raises(DatasetError, match=r"not a dataset folder \(im/ and gt/\) nor a \.csv file"):
        load_dataset(tmp_path / "list.txt")


# --- The command end to end -------------------------------------------------------------------

COLUMNS = ["model", "maxF", "meanF", "wF", "MAE", "S", "meanE", "maxE", "HCE", "ms/img"]


@pytest.fixture
def mini(tmp_path):
    """Three 128x96 photos of simple shapes on textured backgrounds, with their masks."""
    root = tmp_path / "mini"
    (root / "im").mkdir(parents=True)
    (root / "gt").mkdir()
    rng = np.random.default_rng(0)
    shapes = {
        "disc": lambda d, fill: d.ellipse([34, 18, 94, 78], fill=fill),
        "box": lambda d, fill: d.rectangle([20, 30, 70, 80], fill=fill),
        "wedge": lambda d, fill: d.polygon([(64, 10), (110, 85), (18, 85)], fill=fill),
    }
    for index, (stem, draw) in enumerate(shapes.items()):
        noise = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
        image = Image.fromarray(noise + np.array([30 * index, 80, 120], np.uint8))
        draw(ImageDraw.Draw(image), (230, 200 - 40 * index, 40))
        image.save(root / "im" / f"{stem}.jpg", quality=95)
        mask = Image.new("L", (W, H), 0)
        draw(ImageDraw.Draw(mask), 255)
        mask.save(root / "gt" / f"{stem}.png")
    return root


def table_rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def mtimes(folder) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.png"))}


def test_eval_end_to_end_and_resume(offline_hub, mini, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    args = ["eval", "--data", str(mini), "--model", "RMBG-1.4", "--size", "256", "--device", "cpu", "--out", str(out)]
    files = ["--csv", str(tmp_path / "r.csv"), "--json", str(tmp_path / "r.json")]
    assert main([*args, *files, "--batch-size", "2"]) == 0
    first = capsys.readouterr()
    assert "RMBG-1.4 on mini: 3 computed, 0 cached" in first.err

    # The Markdown table: a heading, the header, the alignment row and one row per model.
    assert first.out.startswith("### mini (3 images)\n")
    rows = table_rows(first.out)
    assert rows[0] == COLUMNS and rows[1][0] == ":--" and len(rows) == 3
    assert rows[2][0] == "RMBG-1.4" and len(rows[2]) == len(COLUMNS)
    values = dict(zip(COLUMNS[1:], map(float, rows[2][1:]), strict=True))
    assert all(0 <= values[c] <= 1.0 for c in ("maxF", "meanF", "wF", "MAE", "S"))
    assert values["meanF"] <= values["maxF"] and values["meanE"] <= values["maxE"]
    assert values["ms/img"] > 0 and values["HCE"] >= 0

    # The cache: one mask per image at the image's size, and the timings record.
    predictions = out / "mini" / "RMBG-1.4"
    assert sorted(mtimes(predictions)) == ["box.png", "disc.png", "wedge.png"]
    assert Image.open(predictions / "disc.png").size == (W, H)
    record = json.loads((predictions / "timings.json").read_text())
    auto = precision_name(pick_dtype("auto", torch.device("cpu")))
    assert record["settings"] == {"model": "RMBG-1.4", "size": 256, "precision": auto, "engine": "torch"}
    assert sorted(record["seconds_per_image"]) == ["box", "disc", "wedge"]

    # CSV and JSON hold the same row, with the extra adaptive figures.
    with open(tmp_path / "r.csv", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["dataset"] == "mini" and row["model"] == "RMBG-1.4" and row["images"] == "3"
    assert float(row["maxF"]) == pytest.approx(values["maxF"], abs=5e-4)
    assert {"adpF", "adpE"} <= set(row)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["results"][0]["MAE"] == pytest.approx(float(row["MAE"]))
    assert saved["settings"]["models"] == ["RMBG-1.4"] and saved["settings"]["datasets"] == ["mini"]

    # The precision-recall plot is a valid PNG with the model's curve drawn in the first colour.
    plot = out / "mini" / "pr_curves.png"
    with Image.open(plot) as image:
        image.verify()
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (800, 600)
        assert (31, 119, 180) in {colour for _, colour in image.convert("RGB").getcolors(1 << 20)}

    # A second run computes nothing: no model is even loaded, no file is rewritten, the table is the same.
    before = mtimes(predictions)

    def no_model(*_args, **_kwargs):
        raise AssertionError("a model was loaded although every prediction is cached")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "Remover", no_model)
        assert main(args) == 0
    second = capsys.readouterr()
    assert "RMBG-1.4 on mini: 0 computed, 3 cached" in second.err
    assert mtimes(predictions) == before
    assert second.out == first.out

    # Deleting one prediction recomputes that one only.
    (predictions / "box.png").unlink()
    assert main(args) == 0
    assert "RMBG-1.4 on mini: 1 computed, 2 cached" in capsys.readouterr().err
    after = mtimes(predictions)
    assert after["disc.png"] == before["disc.png"] and after["wedge.png"] == before["wedge.png"]
    assert "box.png" in after

    # An interrupted --overwrite leaves no old prediction behind to be mixed in when the run resumes.
    real_predict, calls = pipeline.Remover.predict, []

    def interrupted(self, images, timings=None):
        calls.append(len(images))
        if len(calls) == 3:  # the warm-up pass, box, then Ctrl-C during disc
            raise KeyboardInterrupt
        return real_predict(self, images, timings)

    with monkeypatch.context() as patch:
        patch.setattr(pipeline.Remover, "predict", interrupted)
        assert main([*args, "--overwrite"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(mtimes(predictions)) == ["box.png"] and mtimes(predictions)["box.png"] != after["box.png"]
    assert main(args) == 0
    assert "RMBG-1.4 on mini: 2 computed, 1 cached" in capsys.readouterr().err

    # --overwrite redoes everything; other settings are refused rather than mixed with the cache.
    assert main([*args, "--overwrite"]) == 0
    assert "RMBG-1.4 on mini: 3 computed, 0 cached" in capsys.readouterr().err
    assert main([*args[:-4], "--size", "320", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "made with size 256 (now 320)" in err and err.count("\n") == 1


def test_eval_two_models_two_datasets(offline_hub, mini, tmp_path, capsys) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,mask\nmini/im/disc.jpg,mini/gt/disc.png\nmini/im/box.jpg,mini/gt/box.png\n")
    (mini / "im" / "stray.jpg").write_bytes((mini / "im" / "disc.jpg").read_bytes())
    out = tmp_path / "out"
    args = ["eval", "--data", str(mini), "--data", str(pairs), "--model", "RMBG-1.4", "--model", "BiRefNet_lite"]
    assert main([*args, "--size", "256", "--device", "cpu", "--out", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    note = "warning: mini: 1 of 4 images have no mask in gt/ (stray.jpg): evaluating the 3 that have one"
    assert note in captured.err
    tables = captured.out.split("### ")[1:]
    assert [t.splitlines()[0] for t in tables] == ["mini (3 images)", "pairs (2 images)"]
    for table in tables:
        assert [row[0] for row in table_rows(table)[2:]] == ["RMBG-1.4", "BiRefNet_lite"]
    for name in ("mini", "pairs"):
        assert (out / name / "pr_curves.png").is_file()
        assert len(list((out / name / "BiRefNet_lite").glob("*.png"))) == (3 if name == "mini" else 2)


def test_eval_errors_are_one_line(offline_hub, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--data", str(tmp_path / "missing"), "--model", "RMBG-1.4"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'missing'}: no such dataset folder or CSV file\n"
    make_pair(tmp_path / "ds", "a")
    assert main(["eval", "--data", str(tmp_path / "ds"), "--model", "NoSuchModel", "--out", str(tmp_path)]) == 2
    assert "Unknown model 'NoSuchModel'" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path / "ds"), "--model", "RMBG-1.4", "--batch-size", "0"]) == 2
    assert capsys.readouterr().err == "error: --batch-size must be at least 1\n"
    assert not (tmp_path / "eval_out").exists()  # refused before any output was made


def test_sanitised_names() -> None:
    assert sanitise("briaai/RMBG-2.0") == "briaai_RMBG-2.0"
    assert sanitise("../x") == "x"
    assert sanitise("///") == "unnamed"


def test_eval_reports_images_that_fail_to_decode(offline_hub, mini, tmp_path, capsys) -> None:
    broken = mini / "im" / "box.jpg"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    out = tmp_path / "out"
    args = ["eval", "--data", str(mini), "--model", "RMBG-1.4", "--size", "256", "--out", str(out), "-q"]
    assert main([*args, "--json", str(tmp_path / "r.json")]) == 1
    captured = capsys.readouterr()
    assert "RMBG-1.4 on mini: 2 computed, 0 cached, 1 failed" in captured.err
    assert "warning: RMBG-1.4 on mini: no prediction for 1 images (box)" in captured.err
    assert "failed: box.jpg: the image data is truncated or damaged" in captured.err
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["images"] == 2
    assert len(table_rows(captured.out)) == 3
