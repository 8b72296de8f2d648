"""CUDA graphs for a network's forward pass: captured once per input shape, then replayed.

A BiRefNet forward launches thousands of small kernels; at batch 1 a GPU spends much of
it waiting for the CPU to launch them. A captured graph launches them all in one call.
The networks are written for this (no host-to-device copies, no reads back to the host
in a forward: see tests/nets/test_gpu_paths.py); whatever still fails to capture runs eagerly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

_log = logging.getLogger(__name__)

Replay = Callable[[], None]
# capture(network, static_input, memory_pool) -> (replay, static_output): after replay(),
# static_output holds network(static_input) for the input's current contents.
Capture = Callable[[nn.Module, torch.Tensor, object], tuple[Replay, torch.Tensor]]
# Forwards run before a capture: lazy one-time work (cuDNN and cuBLAS algorithm choice,
# the networks' per-shape index and bias caches) must happen outside the graph.
WARMUP_RUNS = 3
# Largest difference between a replay and the eager forward, relative to the output's scale.
REPLAY_TOLERANCE = 1e-2
GRAPH = "cuda-graph"
EAGER = "eager"


def capture_cuda_graph(network: nn.Module, static_input: torch.Tensor, pool: object) -> tuple[Replay, torch.Tensor]:
    """Captures one forward as PyTorch's CUDA graph notes describe: warm-up on a side stream, then capture.

    The warm-up also matters for correctness: a cache filled during capture would hold
    memory that only replays write, and that other graphs' captures may reuse.
    """
    device = static_input.device
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_RUNS):
            network(static_input)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        static_output = network(static_input)
    return graph.replay, static_output


class ReplayMismatch(RuntimeError):
    """A captured graph replays to a different result than the eager forward."""


def _check_replay(replay: Replay, static_output: torch.Tensor, eager: torch.Tensor) -> None:
    """Replays once and compares with the eager output: a kernel that is not safe to capture
    can record without an error and still compute garbage on replay (torchvision's deformable
    convolution did), so a graph is only trusted once it reproduces the eager result."""
    replay()
    difference = (static_output.float() - eager.float()).abs().max().item()
    allowed = REPLAY_TOLERANCE * (1.0 + eager.float().abs().max().item())
    if not difference <= allowed:  # also catches NaN
        raise ReplayMismatch(f"the replayed graph differs from the eager forward by {difference:.3g} (> {allowed:.3g})")


@dataclass
class _Bucket:
    """One input shape's graph: its static buffers and replay, or `replay` None where capture failed."""

    replay: Replay | None
    static_input: torch.Tensor | None = None
    static_output: torch.Tensor | None = None


class GraphRunner:
    """Runs `network` on a batch through a CUDA graph per (batch size, height, width, dtype), eager elsewhere.

    Each bucket's first call captures a graph with static input and output buffers; later
    calls copy the batch into the input buffer, replay, and return a copy of the output,
    so a result the caller keeps is not overwritten by the next replay. A bucket whose
    capture raises is logged (once per runner) and runs eagerly from then on. Batches not
    on a device in `graph_devices` (the CPU, by default) just go to the network.

    All graphs share one memory pool, so their intermediate buffers overlap. PyTorch's
    notes ask that graphs sharing a pool be replayed in capture order; what that protects
    is each graph's static output, which a later capture may place where an earlier graph
    keeps intermediates. Here a replay's output is copied before any other replay can run,
    so any order is safe. Graphs read the weights, and the networks' cached layouts and
    attention biases, by address: they stay valid while the network is neither moved, nor
    cast, nor reloaded; after that, make a new runner.

    Not thread-safe by itself: the static buffers are shared, so callers hold the device
    lock around each call (the engine's `lock`, which `Remover.predict` takes), and `mode`
    then describes their own call.
    """

    def __init__(
        self, network: nn.Module, capture: Capture = capture_cuda_graph, graph_devices: Iterable[str] = ("cuda",)
    ):
        self.network = network
        self.mode = EAGER
        self.capture_error: str | None = None
        self._capture = capture
        self._graph_devices = frozenset(graph_devices)
        self._buckets: dict[tuple, _Bucket] = {}
        self._pool: object | None = None

    @property
    def graphs(self) -> int:
        """How many buckets run as graphs."""
        return sum(bucket.replay is not None for bucket in self._buckets.values())

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """network(batch), replayed from the batch's bucket graph where there is one."""
        with torch.inference_mode():
            bucket = self._bucket(batch) if batch.device.type in self._graph_devices else None
            if bucket is None or bucket.replay is None:
                self.mode = EAGER
                return self.network(batch)
            bucket.static_input.copy_(batch)
            bucket.replay()
            self.mode = GRAPH
            return bucket.static_output.clone()

    def _bucket(self, batch: torch.Tensor) -> _Bucket:
        key = (tuple(batch.shape), batch.dtype, batch.device)
        if key not in self._buckets:
            self._buckets[key] = self._new_bucket(batch, key)
        return self._buckets[key]

    def _new_bucket(self, batch: torch.Tensor, key: tuple) -> _Bucket:
        static_input = batch.clone()
        try:
            replay, static_output = self._capture(self.network, static_input, self._memory_pool(batch.device))
            _check_replay(replay, static_output, self.network(static_input))
        except Exception as error:  # any failure to capture leaves this bucket eager, never the caller failing
            self._report(error, key)
            return _Bucket(replay=None)
        return _Bucket(replay, static_input, static_output)

    def _memory_pool(self, device: torch.device) -> object | None:
        if self._pool is None and device.type == "cuda":
            self._pool = torch.cuda.graph_pool_handle()
        return self._pool

    def _report(self, error: Exception, key: tuple) -> None:
        """Warns on the first failed capture; later ones only at debug level."""
        message = f"{type(error).__name__}: {error}"
        if self.capture_error is None:
            self.capture_error = message
            _log.warning("CUDA graph capture failed for input %s, running it eagerly: %s", key, message)
        else:
            _log.debug("CUDA graph capture failed for input %s: %s", key, message)
