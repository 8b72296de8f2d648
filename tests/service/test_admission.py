"""`service/admission.py` on its own: real `Admission` objects and real threads, no server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from bgremover.service.admission import Admission, Busy
from bgremover.service.config import ServiceConfig, build_admission

# How long a test waits for a thread to reach a state before it calls the test failed.
PATIENCE_S = 10.0


def _hold(admission: Admission, pixels: int, release: threading.Event, log: list, name: str) -> threading.Thread:
    """A thread that takes a place for `pixels`, records when it got it, and keeps it until `release`."""

    def run() -> None:
        with admission.admit(pixels) as waited:
            log.append((name, waited))
            release.wait(PATIENCE_S)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the threads"
        time.sleep(0.005)


def test_a_request_over_the_pixel_budget_runs_alone() -> None:
    admission = Admission(workers=4, max_waiting=4, pixel_budget=100)
    small_done, large_done, later_done = threading.Event(), threading.Event(), threading.Event()
    log: list = []
    small = _hold(admission, 60, small_done, log, "small")
    _until(lambda: len(log) == 1)
    large = _hold(admission, 500, large_done, log, "large")
    _until(lambda: admission._waiting == 1)
    time.sleep(0.05)
    assert [name for name, _ in log] == ["small"]  # the large one waits while anything else runs
    small_done.set()
    small.join(PATIENCE_S)
    _until(lambda: len(log) == 2)
    later = _hold(admission, 1, later_done, log, "later")
    _until(lambda: admission._waiting == 1)
    time.sleep(0.05)
    assert [name for name, _ in log] == ["small", "large"]  # and nothing joins it while it runs
    large_done.set()
    large.join(PATIENCE_S)
    _until(lambda: len(log) == 3)
    later_done.set()
    later.join(PATIENCE_S)
    assert log[1][1] >= 0.05  # the wait counts as queue time


def test_a_large_request_on_an_idle_server_starts_at_once() -> None:
    admission = Admission(workers=2, max_waiting=0, pixel_budget=10)
    with admission.admit(10_000) as waited:
        assert waited < 1.0


def test_small_requests_share_the_budget_up_to_the_worker_count() -> None:
    admission = Admission(workers=2, max_waiting=4, pixel_budget=1000)
    release = threading.Event()
    log: list = []
    threads = [_hold(admission, 10, release, log, f"r{i}") for i in range(3)]
    _until(lambda: len(log) == 2 and admission._waiting == 1)
    time.sleep(0.05)
    assert len(log) == 2  # the third waits for a worker, not for pixels
    release.set()
    for thread in threads:
        thread.join(PATIENCE_S)
    assert len(log) == 3


def test_the_queue_limit_refuses_at_once_with_busy_and_a_retry_hint() -> None:
    admission = Admission(workers=1, max_waiting=1, pixel_budget=1000)
    release = threading.Event()
    log: list = []
    threads = [_hold(admission, 1, release, log, name) for name in ("running", "waiting")]
    _until(lambda: len(log) == 1 and admission._waiting == 1)
    started = time.perf_counter()
    busy = r"1 request\(s\) running and 1 waiting \(RMBG_QUEUE_LIMIT=1\)"
    with pytest.raises(Busy, match=busy) as refused, admission.admit(1):
        pass
    assert time.perf_counter() - started < 1.0  # refused, not queued
    assert refused.value.retry_after >= 5
    release.set()
    for thread in threads:
        thread.join(PATIENCE_S)
    assert [name for name, _ in log] == ["running", "waiting"]
    assert admission.idle(1.0)


def test_a_draining_server_refuses_new_requests() -> None:
    admission = Admission(workers=2, max_waiting=2, pixel_budget=100)
    admission.draining = True
    with pytest.raises(Busy, match="shutting down") as refused, admission.admit(1):
        pass
    assert refused.value.retry_after == 5


def test_idle_waits_for_the_last_request() -> None:
    admission = Admission(workers=1, max_waiting=1, pixel_budget=100)
    release = threading.Event()
    thread = _hold(admission, 1, release, [], "one")
    _until(lambda: admission._running == 1)
    assert not admission.idle(0.05)
    release.set()
    assert admission.idle(PATIENCE_S)
    thread.join(PATIENCE_S)


def test_limits_default_to_the_settings(monkeypatch) -> None:
    monkeypatch.setenv("RMBG_WORKERS", "3")
    monkeypatch.setenv("RMBG_QUEUE_LIMIT", "0")
    monkeypatch.setenv("RMBG_PIXEL_BUDGET_MP", "2")
    admission = build_admission(ServiceConfig.from_settings(), "cpu")
    assert (admission.workers, admission.max_waiting, admission.pixel_budget) == (3, 0, 2_000_000)
