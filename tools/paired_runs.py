"""Whole-process timings of commands run alternately (A B A B ...), for machines whose load changes
while they are measured (BENCHMARKS.md, "One photo, fresh process"): each round runs every command
once, so a busier minute slows all of them alike. Prints each command's wall and CPU seconds
(median, and every run) with the load average before each round.

    python tools/paired_runs.py --rounds 5 "python rmbg.py remove photo.jpg -o a.png --overwrite -q" \\
        "python tools/ort_baseline.py isnet-fp16.onnx photo.jpg b.png"
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import time


def run(command: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of `command`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(shlex.split(command), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commands", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {command: [] for command in args.commands}
    cpus: dict[str, list[float]] = {command: [] for command in args.commands}
    loads = []
    for _ in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for command in args.commands:
            wall, cpu = run(command)
            walls[command].append(wall)
            cpus[command].append(cpu)
    print(f"{args.rounds} rounds, load average (1 min) before each: {', '.join(f'{x:.1f}' for x in loads)}")
    for command in args.commands:
        every = ", ".join(f"{x:.2f}" for x in walls[command])
        print(
            f"{statistics.median(walls[command]):6.2f} s wall  {statistics.median(cpus[command]):6.2f} s CPU  ({every})"
        )
        print(f"        {command}")
    first, *others = args.commands
    for other in others:
        ratio = statistics.median(b / a for a, b in zip(walls[first], walls[other], strict=True))
        print(f"median of the per-round ratios, second / first: {ratio:.2f}x  ({other.split()[1]})")


if __name__ == "__main__":
    main()
