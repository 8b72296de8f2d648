"""Time and peak memory of one run, as the Compare tab shows them: CUDA max allocated on a GPU,
the process's peak resident set on the CPU."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only a GPU's usage needs PyTorch
    import torch

_MIB = 1024 * 1024


@dataclass
class Usage:
    """Time and memory of one measured run, as the Compare tab shows them."""

    seconds: float = 0.0
    peak_mib: float = 0.0
    delta_mib: float = 0.0
    what: str = ""

    def describe(self) -> str:
        memory = f"{self.what} {self.peak_mib:,.0f} MiB (+{self.delta_mib:,.0f} MiB during the run)"
        return f"{self.seconds:.2f} s · {memory}"


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MIB
    except OSError:
        return _peak_rss_mib()


def _peak_rss_mib() -> float:
    """The process's peak RSS: VmHWM where /proc has it (resettable), else getrusage's lifetime peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    """Writing 5 to clear_refs resets VmHWM (Linux), so the peak is this run's, not the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


@contextmanager
def measure(device: torch.device) -> Iterator[Usage]:
    """Wall time and peak memory of the block: CUDA max allocated on a GPU, process RSS on the CPU."""
    usage = Usage()
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(str(device))
        torch.cuda.reset_peak_memory_stats(str(device))
        before = torch.cuda.memory_allocated(str(device)) / _MIB
    else:
        _reset_peak_rss()
        before = _rss_mib()
    started = time.perf_counter()
    yield usage
    if device.type == "cuda":
        torch.cuda.synchronize(str(device))
        usage.peak_mib, usage.what = torch.cuda.max_memory_allocated(str(device)) / _MIB, "CUDA max allocated"
    else:
        usage.peak_mib, usage.what = _peak_rss_mib(), "peak RSS"
    usage.seconds = time.perf_counter() - started
    usage.delta_mib = max(usage.peak_mib - before, 0.0)
