"""A copy of a Ray wheel without the parts `rmbg remove --ray` never loads, small enough to carry.

A GPU machine lent for measurements has no package index, and what travels with a run is
limited in size (docs/development.md); the full Ray wheel (about 79 MB) is over that.

    wheel=ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl
    python3 tools/strip_ray_wheel.py $wheel .whl/$wheel

Left out: the Java jars, RLlib, Tune, Train, the LLM library and the dashboard's web client
(about 41 MB remain). The wheel's RECORD loses their lines, so pip installs it as usual.
"""

from __future__ import annotations

import sys
import zipfile

LEFT_OUT = ("ray/jars/", "ray/rllib/", "ray/tune/", "ray/train/", "ray/llm/", "ray/dashboard/client/")


def strip(source: str, target: str) -> None:
    with zipfile.ZipFile(source) as wheel, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for entry in wheel.infolist():
            if entry.filename.startswith(LEFT_OUT):
                continue
            data = wheel.read(entry.filename)
            if entry.filename.endswith(".dist-info/RECORD"):
                kept = [line for line in data.decode().splitlines() if not line.startswith(LEFT_OUT)]
                data = ("\n".join(kept) + "\n").encode()
            out.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)


if __name__ == "__main__":
    strip(sys.argv[1], sys.argv[2])
