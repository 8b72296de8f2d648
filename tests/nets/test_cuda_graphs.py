"""GraphRunner's bookkeeping, on the CPU: buckets, static buffers, copies of results, eager fallback.

A CUDA graph cannot be captured without a GPU; the runner takes its capture function as
an argument, so these tests hand it one that behaves like a graph on the CPU (replay
recomputes into the same output buffer) or one that fails as a capture can.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from bgremover.engines.cuda_graphs import EAGER, GRAPH, GraphRunner


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1)).eval()


def _batch(size: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(size, 3, 8, 12, generator=torch.Generator().manual_seed(seed))


def _expected(network: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return network(batch)


class _CpuGraph:
    """A stand-in for CUDA graph capture: replay writes the forward of the static input into one output buffer."""

    def __init__(self) -> None:
        self.captures = 0

    def __call__(self, network: nn.Module, static_input: torch.Tensor, pool: object):
        self.captures += 1
        static_output = network(static_input)
        return lambda: static_output.copy_(network(static_input)), static_output


def _failing_capture(network: nn.Module, static_input: torch.Tensor, pool: object):
    raise RuntimeError("operation not permitted when stream is capturing")


def test_cpu_batches_run_eagerly() -> None:
    network, capture = _network(), _CpuGraph()
    runner = GraphRunner(network, capture=capture)
    assert torch.equal(runner(_batch()), _expected(network, _batch()))
    assert runner.mode == EAGER and capture.captures == 0 and runner.graphs == 0


def test_one_graph_per_bucket_and_results_survive_replays() -> None:
    network, capture = _network(), _CpuGraph()
    runner = GraphRunner(network, capture=capture, graph_devices=("cpu",))
    first = runner(_batch(seed=1))
    assert runner.mode == GRAPH
    second = runner(_batch(seed=2))  # same bucket: a replay into the same static output
    assert torch.equal(first, _expected(network, _batch(seed=1)))
    assert torch.equal(second, _expected(network, _batch(seed=2)))
    assert capture.captures == 1
    runner(_batch(size=2))
    runner(_batch(size=2, seed=3))
    runner(_batch(seed=4))
    assert capture.captures == 2 and runner.graphs == 2


def test_failed_capture_runs_that_bucket_eagerly_and_warns_once(caplog) -> None:
    network = _network()
    runner = GraphRunner(network, capture=_failing_capture, graph_devices=("cpu",))
    with caplog.at_level(logging.WARNING, logger="bgremover.engines.cuda_graphs"):
        for size in (1, 1, 2):
            assert torch.equal(runner(_batch(size)), _expected(network, _batch(size)))
            assert runner.mode == EAGER
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "stream is capturing" in warnings[0].getMessage()
    assert runner.graphs == 0 and "RuntimeError" in runner.capture_error


def test_a_failed_bucket_is_not_captured_again() -> None:
    attempts = []

    def counting_failure(network, static_input, pool):
        attempts.append(tuple(static_input.shape))
        raise RuntimeError("capture failed")

    runner = GraphRunner(_network(), capture=counting_failure, graph_devices=("cpu",))
    for _ in range(3):
        runner(_batch())
    assert attempts == [(1, 3, 8, 12)]


def test_a_graph_that_replays_to_a_wrong_result_is_not_used(caplog) -> None:
    """A capture can succeed and still replay garbage (torchvision's deformable convolution did on an H200)."""

    def stale_capture(network, static_input, pool):
        static_output = network(static_input) + 1.0  # what a kernel reading a stale buffer would give
        return (lambda: None), static_output

    network = _network()
    runner = GraphRunner(network, capture=stale_capture, graph_devices=("cpu",))
    with caplog.at_level(logging.WARNING, logger="bgremover.engines.cuda_graphs"):
        assert torch.equal(runner(_batch()), _expected(network, _batch()))
    assert runner.mode == EAGER and runner.graphs == 0
    assert "ReplayMismatch" in runner.capture_error and "differs from the eager forward" in caplog.text


def test_a_compiled_network_is_replayed_like_an_eager_one() -> None:
    """The engine graphs the compiled network on a GPU (`--compile`): the runner takes a compiled module as is."""
    from bgremover.engines.pytorch import prepare_network

    network, capture = _network(), _CpuGraph()
    compiled = prepare_network(_network(), compiled=True)
    runner = GraphRunner(compiled, capture=capture, graph_devices=("cpu",))
    for seed in (1, 2):
        assert torch.allclose(runner(_batch(seed=seed)), _expected(network, _batch(seed=seed)), atol=1e-5)
    assert runner.mode == GRAPH and capture.captures == 1
    assert torch._dynamo.config.recompile_limit >= 64  # every Swin stage's shapes get compiled


if torch.cuda.is_available():  # collected on a GPU machine only: CI has none, and skips are not tests

    def test_cuda_graph_matches_eager() -> None:
        network = _network().cuda()
        runner = GraphRunner(network)
        batch = _batch().cuda()
        first = runner(batch)
        assert runner.mode == GRAPH
        second = runner(2 * batch)
        assert torch.allclose(first, _expected(network, batch), atol=1e-5)
        assert torch.allclose(second, _expected(network, 2 * batch), atol=1e-5)
