"""The removal service: one request path for every front end, with the device lock around inference only."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
from helpers import cpu_service
from live import photo
from PIL import Image

from bgremover import settings
from bgremover.imaging import encoding
from bgremover.service.options import build_request
from bgremover.service.pool import UnknownModel
from bgremover.service.removal import Item, RemovalService

MODEL = "BiRefNet_lite"


@pytest.fixture
def service(offline_hub) -> RemovalService:
    return cpu_service(MODEL, size=64)


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_a_second_inference_runs_while_the_first_result_is_encoded(service, monkeypatch) -> None:
    engine = service.pool.get().engine
    network, second_inferring = engine.network, threading.Event()

    def network_noting_the_second(batch):
        if threading.current_thread().name == "second":
            second_inferring.set()
        return network(batch)

    real_encode, overlapped = encoding.encode, []

    def encode_waiting_for_the_second(image, fmt="png", icc_profile=None, **options):
        if threading.current_thread().name == "first":
            second.start()
            overlapped.append(second_inferring.wait(timeout=120))
        return real_encode(image, fmt, icc_profile, **options)

    monkeypatch.setattr(engine, "network", network_noting_the_second)
    monkeypatch.setattr(encoding, "encode", encode_waiting_for_the_second)
    request, results = build_request(), {}

    def run(name: str) -> None:
        results[name] = service.remove(jpeg(photo()), request, name=f"{name}.jpg")

    first = threading.Thread(target=run, args=("first",), name="first")
    second = threading.Thread(target=run, args=("second",), name="second")
    first.start()
    first.join(timeout=300)
    second.join(timeout=300)
    assert overlapped == [True], "the second inference waited for the first result's encoding"
    assert results["first"].data == results["second"].data  # same input, same bytes: nothing was mixed up


def test_remove_many_keeps_order_reports_bad_inputs_and_matches_single_removals(service) -> None:
    images = [photo(120 + 10 * i, 90) for i in range(5)]
    items = [Item(f"{i}.jpg", jpeg(image)) for i, image in enumerate(images)]
    items.insert(2, Item("broken.jpg", jpeg(images[0])[:200]))
    request = build_request(output="mask")
    removals = list(service.remove_many(items, request, batch_size=2))
    assert [r.name for r in removals] == [item.name for item in items]
    assert removals[2].data is None and "broken.jpg" in removals[2].error
    assert [r.batch for r in removals if r.data] == [2, 2, 1, 2, 2]  # the broken input left its batch one short
    for removal in removals[:2] + removals[3:]:
        single = service.remove(next(i.source for i in items if i.name == removal.name), request, removal.name)
        batched = np.asarray(Image.open(io.BytesIO(removal.data)), dtype=int)
        alone = np.asarray(Image.open(io.BytesIO(single.data)), dtype=int)
        assert batched.shape == alone.shape and np.abs(batched - alone).max() <= 1
        assert removal.timings.decode > 0 and removal.timings.infer > 0 and removal.timings.encode > 0


class DecodeProbe:
    """Wraps a service's decode: counts decodes started and the most running at once; the first
    `wanted` decodes wait until that many run together (or a minute passes, then the test fails)."""

    def __init__(self, decode, wanted: int):
        self.decode, self.wanted = decode, wanted
        self.started = self.running = self.peak = 0
        self.guard, self.all_running = threading.Lock(), threading.Event()

    def __call__(self, source, name: str = "image", turns: int = 0):
        with self.guard:
            self.started += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
            if self.running == self.wanted:
                self.all_running.set()
        self.all_running.wait(timeout=60)
        try:
            return self.decode(source, name, turns)
        finally:
            with self.guard:
                self.running -= 1


@pytest.mark.parametrize("batch_size", [1, 2])
def test_remove_many_decodes_on_every_io_thread_at_once_and_holds_a_bounded_number(
    service, monkeypatch, batch_size
) -> None:
    threads = 4
    service = service.sharing_pool(io_threads=threads)
    probe = DecodeProbe(service.decode, threads)
    monkeypatch.setattr(service, "decode", probe)
    items = [Item(f"{i}.jpg", jpeg(photo(48 + 4 * (i % 5), 40))) for i in range(18)]
    names, most_held = [], 0
    for removal in service.remove_many(items, build_request(output="mask"), batch_size=batch_size):
        most_held = max(most_held, probe.started - len(names))  # decoded or decoding, not handed out yet
        names.append(removal.name)
        assert removal.error is None
    assert names == [item.name for item in items]
    assert probe.peak == threads
    assert most_held <= 2 * threads + 4 * batch_size < len(items)  # grows with the threads, not with the inputs


@pytest.mark.parametrize("value", ["0", "two", "-3", "1.5"])
def test_io_threads_setting_is_a_whole_number_of_at_least_one(monkeypatch, value: str) -> None:
    monkeypatch.setenv("RMBG_IO_THREADS", value)
    with pytest.raises(ValueError, match=rf"RMBG_IO_THREADS={value!r} must be a whole number of at least 1"):
        settings.io_threads()


def test_io_threads_follow_the_usable_cores_up_to_a_cap(monkeypatch) -> None:
    assert 1 <= settings.usable_cores() <= (os.cpu_count() or 1)
    monkeypatch.delenv("RMBG_IO_THREADS", raising=False)
    monkeypatch.setattr(settings, "usable_cores", lambda: 6)
    assert settings.io_threads() == 6
    monkeypatch.setattr(settings, "usable_cores", lambda: 4 * settings.MAX_IO_THREADS)
    assert settings.io_threads() == settings.MAX_IO_THREADS
    monkeypatch.setenv("RMBG_IO_THREADS", "40")
    assert settings.io_threads() == 40


def test_timings_separate_waiting_for_the_device_from_inference(service) -> None:
    engine = service.pool.get().engine
    engine.lock.acquire()
    release = threading.Timer(0.5, engine.lock.release)
    release.start()
    removal = service.remove(jpeg(photo()), build_request())
    assert removal.timings.queue >= 0.4
    assert removal.timings.infer < removal.timings.queue + 5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"output": "sepia"}, "output='sepia'"),
        ({"bg_color": "blurple"}, "not a colour"),
        ({"threshold": "half"}, "threshold='half' is not a number"),
        ({"crop": "maybe"}, "crop='maybe': use true or false"),
        ({"size": "100"}, "multiple of 32"),
        ({"size": "4096"}, "above the limit"),
        ({"fmt": "jpeg"}, "JPEG has no transparency"),
    ],
)
def test_requests_are_checked_once_with_the_fix_in_the_message(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_request(**fields)


@pytest.mark.parametrize(
    ("text", "meant"),
    [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("false", False), ("No", False)],
)
def test_a_yes_or_no_means_the_same_in_a_variable_and_in_a_form(monkeypatch, text: str, meant: bool) -> None:
    monkeypatch.setenv("RMBG_COMPILE", text)
    assert settings.compile_network() is meant
    assert build_request(crop=text).options.crop is meant


def test_a_yes_or_no_refuses_the_same_typos_everywhere_and_empty_is_the_default(monkeypatch) -> None:
    for typo in ("maybe", "y", "2", "of"):
        monkeypatch.setenv("RMBG_CUDA_GRAPHS", typo)
        with pytest.raises(ValueError, match=f"RMBG_CUDA_GRAPHS='{typo}': use true or false"):
            settings.cuda_graphs()
        with pytest.raises(ValueError, match=f"crop='{typo}': use true or false"):
            build_request(crop=typo)
    monkeypatch.setenv("RMBG_CUDA_GRAPHS", " ")
    assert settings.cuda_graphs() is True and build_request(crop=" ").options.crop is False


def test_a_request_converts_form_strings_and_keeps_typed_values() -> None:
    request = build_request(output="color", bg_color="#00ff00", threshold="0.5", crop="true", crop_margin="3")
    assert request.options.background_color == (0, 255, 0)
    assert (request.options.threshold, request.options.crop, request.options.crop_margin) == (0.5, True, 3)
    assert build_request(bg_color=(1, 2, 3), size=512, model=" ").options.background_color == (1, 2, 3)
    assert build_request(size=512, model=" ").model is None


def test_concurrent_requests_share_one_forward_when_batching_is_on(offline_hub, monkeypatch) -> None:
    monkeypatch.setenv("RMBG_BATCH_WINDOW_MS", "2000")  # long enough for three threads on a busy 2-core CI box
    monkeypatch.setenv("RMBG_MAX_BATCH", "3")
    service = cpu_service(MODEL, size=64)
    engine = service.pool.get().engine
    network, batch_sizes = engine.network, []

    def recording(batch):
        batch_sizes.append(batch.shape[0])
        return network(batch)

    monkeypatch.setattr(engine, "network", recording)
    images = [photo(100 + 20 * i, 80) for i in range(3)]
    request, results = build_request(output="mask"), {}

    def run(index: int) -> None:
        results[index] = service.remove(jpeg(images[index]), request, name=f"{index}.jpg")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert batch_sizes == [3]  # the batch was full before the window ended: one forward for all three
    assert [results[index].batch for index in range(3)] == [3, 3, 3]
    alone = service.sharing_pool(batch_window=0.0)
    for index, image in enumerate(images):
        single = alone.remove(jpeg(image), request, name=f"{index}.jpg")
        assert single.batch == 1 and results[index].result.mask.size == image.size
        difference = np.asarray(results[index].result.mask, dtype=int) - np.asarray(single.result.mask, dtype=int)
        assert np.abs(difference).max() <= 1
    assert batch_sizes == [3, 1, 1, 1]


def test_a_custom_checkpoint_is_named_never_shown_by_its_server_path(offline_hub, tmp_path) -> None:
    from helpers import synthetic_checkpoint, write_checkpoint

    from bgremover.hub import ModelLoadError

    folder = tmp_path / "secret" / "products-v3"
    write_checkpoint(folder / "model.safetensors", synthetic_checkpoint("birefnet_lite"))
    pool = cpu_service(str(folder), size=64).pool
    assert pool.default_model == "local:products-v3" and pool.names()[0] == "local:products-v3"
    assert pool.canonical("local:products-v3") == pool.canonical("products-v3") == "local:products-v3"
    with pytest.raises(UnknownModel):
        pool.canonical(str(folder))  # clients name models, never server paths
    assert pool.get().info.family == "birefnet"
    assert str(tmp_path) not in repr(pool.models())
    missing = cpu_service(str(tmp_path / "secret" / "gone.safetensors"), precision="auto").pool
    with pytest.raises(ModelLoadError) as raised:
        missing.get()
    assert "gone" in str(raised.value) and str(tmp_path) not in str(raised.value)
    assert str(tmp_path) not in repr(missing.models())
