"""Scale-out on Ray: `rmbg remove --ray` against `rmbg remove`, and what is particular to `rmbg serve --ray`.

The batch tests share one local Ray instance in this process (2 CPUs); the Serve tests
start `rmbg serve --ray` in a subprocess, after the batch tests have stopped theirs. The HTTP
API tests and the byte-for-byte comparison with `rmbg serve` run against it in test_web_api.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import live
import numpy as np
import pytest
from helpers import cpu_service
from PIL import Image

from bgremover.arguments import service_config
from bgremover.cli import main, parse
from bgremover.errors import UsageError
from bgremover.planning import plan_files
from bgremover.remove_command import ray_run
from bgremover.scale import locations
from bgremover.scale.batch import Inference as RealInference
from bgremover.scale.batch import remove_on_ray
from bgremover.scale.cluster import (
    MANIFEST_NAME,
    InferenceConfig,
    Manifest,
    ModelCheck,
    RayConfig,
    configure,
)
from bgremover.service.config import ServiceConfig
from bgremover.service.options import build_request

REPO = Path(__file__).resolve().parents[2]
MODEL = "RMBG-1.4"
# Small and fp32: the reference run and the Ray run must compute the same masks, quickly.
MODEL_ARGS = ["--model", MODEL, "--size", "128", "--precision", "fp32", "--device", "cpu"]
GOOD, FORMATS = 20, ("png", "jpg", "webp")


def _images(folder: Path) -> Path:
    """20 images (PNG, JPEG, WebP; some in a subfolder) and 2 damaged files."""
    for index in range(GOOD):
        image = live.sample_image(96 + 8 * index, 72 + 4 * index, seed=index % 10)
        place = folder / "shoot" / ("day2" if index % 4 == 0 else "")
        place.mkdir(parents=True, exist_ok=True)
        image.save(place / f"photo{index:02d}.{FORMATS[index % 3]}")
    (folder / "shoot" / "notes.png").write_bytes(b"this is not an image")
    whole = (folder / "shoot" / "photo01.jpg").read_bytes()
    (folder / "shoot" / "day2" / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    return folder / "shoot"


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"), dtype=np.int16)


# --- Without Ray: the install hint and the planning of URIs ----------------------------------------


def test_without_ray_the_command_says_how_to_install_it(offline_hub, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    live.sample_image().save(tmp_path / "photo.png")
    assert main(["remove", "--ray", str(tmp_path / "photo.png"), *MODEL_ARGS]) == 2
    error = capsys.readouterr().err
    assert "pip install 'bgremover[ray]'" in error and "requirements-ray.txt" in error
    assert not (tmp_path / "photo_nobg.png").exists()


def test_the_decode_and_finish_workers_do_not_load_pytorch():
    """Every worker that runs a decode or finish task imports bgremover.scale.batch (and .cluster): PyTorch there
    would cost each of them seconds of start-up and hundreds of MB for nothing."""
    code = "import sys, bgremover.scale.batch; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout


def test_uri_plans_name_outputs_as_the_cli_does(tmp_path):
    shoot = _images(tmp_path / "in")
    out = tmp_path / "out"
    local = [(job.source.path, job.target.path) for job in plan_files([str(shoot)], str(out), "png")]
    remote = locations.plan([f"file://{shoot}"], f"file://{out}", "png")
    assert [(task.source.path, task.target.path) for task in remote] == local
    assert str(remote[0].source).startswith("file:///") and remote[0].label.startswith("shoot/")
    beside = locations.plan([f"file://{shoot}"], None, "webp")
    assert [t.target.path for t in beside] == [j.target.path for j in plan_files([str(shoot)], None, "webp")]
    globbed = locations.plan([f"file://{shoot}/**/*.jpg"], None, "png")
    expected = plan_files([f"{shoot}/**/*.jpg"], None, "png")
    assert [t.target.path for t in globbed] == [j.target.path for j in expected] and len(expected) == 8
    with pytest.raises(locations.UsageError, match="overwrite the input"):
        locations.plan([f"file://{shoot}/photo03.png"], f"file://{shoot}/photo03.png", "png")


GiB = 2**30
# What a node reports of a model as light as RMBG-1.4 (176 MB): its actors are estimated at about 1.8 GiB.
SMALL_MODEL = ModelCheck(None, checkpoint_bytes=176_000_000, input_size=1024)


def _node(cpus: float, memory_gib: float, alive: bool = True, gpus: float = 0.0) -> dict:
    return {"Alive": alive, "Resources": {"CPU": cpus, "GPU": gpus, "memory": memory_gib * GiB}}


def _configure(monkeypatch, nodes: list[dict], *options: str, batches: int = 100) -> RayConfig:
    """`configure` for `rmbg remove --ray OPTIONS` on a cluster of `nodes`, faked for Ray's calls,
    for a job of `batches` batches."""
    import ray

    live = [node["Resources"] for node in nodes if node["Alive"]]
    totals = {key: sum(resources.get(key, 0.0) for resources in live) for key in ("CPU", "GPU", "memory")}
    monkeypatch.setattr(ray, "cluster_resources", lambda: totals)
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    args = parse(["remove", "in", "--ray", *options])
    return configure(service_config(args), ray_run(args), SMALL_MODEL, batches)


def test_a_gpu_job_takes_every_gpu_of_the_cluster_unless_told_otherwise(monkeypatch):
    """Without --ray-actors: one actor per GPU on a GPU cluster."""
    cluster = [_node(16, 64, gpus=2), _node(16, 64, gpus=2)]
    on_gpus = _configure(monkeypatch, cluster)
    assert (on_gpus.actors, on_gpus.gpus_per_actor, on_gpus.inference.service.device) == (4, 1.0, "cuda")
    assert _configure(monkeypatch, cluster, batches=1).actors == 1
    assert on_gpus.actor_memory_bytes == 0
    assert on_gpus.summary() == "Ray: 4 inference actor(s) on cuda (--ray-actors N to change)"
    assert _configure(monkeypatch, cluster, "--ray-actors", "2").actors == 2
    with pytest.raises(UsageError, match="--ray-actors must be at least 1"):
        _configure(monkeypatch, cluster, "--ray-actors", "0")
    with pytest.raises(UsageError, match="8 GPU actor\\(s\\) asked for, but the Ray cluster has 4 GPU\\(s\\)"):
        _configure(monkeypatch, cluster, "--device", "cuda", "--ray-actors", "8")


def test_a_cpu_job_runs_a_single_threaded_actor_per_cpu_that_memory_holds(monkeypatch):
    """Each live node gives min(its CPUs, its memory / the estimate) actors, which reserve that memory."""
    cluster = [_node(4, 64), _node(8, 5), _node(16, 64, alive=False)]
    config = _configure(monkeypatch, cluster, "--device", "cpu")
    # 4 on the first node (CPU-bound), 2 on the second (5 GiB holds two actors of ~1.9 GiB), none on the dead one.
    assert (config.actors, config.inference.threads, config.gpus_per_actor) == (6, 2, 0.0)
    assert 1.8 * GiB < config.actor_memory_bytes < 2.0 * GiB
    assert config.actor_cpus == 1.0

    # This 2-CPU machine: two single-threaded actors of half a CPU each, a CPU left for decoding.
    laptop = _configure(monkeypatch, [_node(2, 16)], "--device", "cpu")
    assert (laptop.actors, laptop.inference.threads, laptop.actor_cpus) == (2, 1, 0.5)
    assert laptop.summary() == (
        "Ray: 2 inference actor(s) on cpu, 1 thread(s) each, 1.8 GiB of memory reserved each (--ray-actors N to change)"
    )

    at_2048 = _configure(monkeypatch, cluster, "--device", "cpu", "--size", "2048")
    assert at_2048.actor_memory_bytes > 3.5 * GiB and at_2048.actors == 4 + 1

    told = _configure(monkeypatch, cluster, "--device", "cpu", "--ray-actors", "3")
    assert (told.actors, told.inference.threads, told.actor_memory_bytes) == (3, 4, 0)

    # A job of 2 batches starts 2 actors, with the cores shared between them; one asked for is one asked for.
    small_job = _configure(monkeypatch, cluster, "--device", "cpu", batches=2)
    assert (small_job.actors, small_job.inference.threads) == (2, 6)
    assert _configure(monkeypatch, cluster, "--device", "cpu", "--ray-actors", "5", batches=2).actors == 5


def test_a_cpu_job_on_nodes_too_small_for_the_estimate_still_runs_one_actor_unreserved(monkeypatch):
    config = _configure(monkeypatch, [_node(2, 1), _node(2, 1)], "--device", "cpu")
    assert (config.actors, config.inference.threads, config.actor_memory_bytes) == (1, 4, 0)


@pytest.mark.slow
def test_serve_batches_mixed_models_and_sizes_like_single_predictions(offline_hub):
    from bgremover.scale.serve import predict_groups

    pool = cpu_service(MODEL, size=128).pool
    small, large, other = pool.get(MODEL, 64), pool.get(MODEL, 128), pool.get("BiRefNet_lite", 64)
    images = [live.sample_image(90 + 10 * i, 70, seed=i) for i in range(5)]
    asks = [(small, images[0]), (large, images[1]), (small, images[2]), (other, images[3]), (large, images[4])]
    gathered = predict_groups(asks)
    for (remover, image), (mask, timings, _) in zip(asks, gathered, strict=True):
        alone = remover.predict([image])[0]
        # A forward of 2 images rounds a few values differently from one of 1 (~1e-7): at most a level apart.
        difference = np.abs(np.asarray(mask, dtype=np.int16) - np.asarray(alone, dtype=np.int16))
        assert mask.size == image.size and difference.max() <= 1 and difference.mean() < 0.01
        assert timings.infer > 0
    assert [size for _, _, size in gathered] == [2, 2, 2, 1, 2]


def test_a_replica_lets_in_a_whole_batch_where_requests_are_batched(monkeypatch):
    from bgremover.scale.serve import ReplicaLimits

    for name in ("RMBG_WORKERS", "RMBG_QUEUE_LIMIT", "RMBG_MAX_BATCH", "RMBG_BATCH_WINDOW_MS"):
        monkeypatch.delenv(name, raising=False)
    config = ServiceConfig.from_settings()
    assert ReplicaLimits.for_device(config, "cpu") == ReplicaLimits(running=2, waiting=16, window=0.0, max_batch=1)
    assert ReplicaLimits.for_device(config, "cuda") == ReplicaLimits(running=8, waiting=16, window=0.005, max_batch=8)
    monkeypatch.setenv("RMBG_BATCH_WINDOW_MS", "200")
    monkeypatch.setenv("RMBG_WORKERS", "12")
    config = ServiceConfig.from_settings()
    assert ReplicaLimits.for_device(config, "cpu") == ReplicaLimits(running=12, waiting=16, window=0.2, max_batch=8)


# --- Batch on a local Ray instance -----------------------------------------------------------------


@pytest.fixture(scope="class")
def local_ray(hf_home) -> Iterator[None]:
    """Ray with 2 CPUs in this process; its workers read the synthetic Hub cache, offline."""
    import ray

    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "RMBG_DEVICE": "cpu"}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env})
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="class")
def shoot(tmp_path_factory) -> Path:
    return _images(tmp_path_factory.mktemp("ray_inputs"))


@pytest.fixture(scope="class")
def reference(tmp_path_factory, hf_home, shoot) -> Path:
    """What `rmbg remove` (no Ray) makes of the folder, on one thread as each of the two actors that
    `--ray` runs by default on the 2 CPUs of `local_ray` (another thread count may round differently)."""
    import torch

    out = tmp_path_factory.mktemp("reference") / "out"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(hf_home))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.delenv("HF_HUB_CACHE", raising=False)
        torch.set_num_threads(1)
        try:
            assert main(["remove", str(shoot), "-o", str(out), *MODEL_ARGS, "--batch-size", "4", "-q"]) == 1
        finally:
            torch.set_num_threads(threads)
    assert len(_files(out)) == GOOD
    return out


def _same_outputs(out: Path, reference: Path) -> None:
    """The same files as the reference run, pixel for pixel: both runs compute float32 masks on the
    same CPU in batches of the same images, so not even a rounding difference is allowed. (Batches of
    another size may flip an alpha by 1/255: the CPU picks other kernels for another batch shape.)"""
    assert _files(out) == sorted([*_files(reference), MANIFEST_NAME])
    for name in _files(reference):
        assert np.array_equal(_pixels(out / name), _pixels(reference / name)), name


def _dies_once(marker: Path) -> type:
    """An inference actor that kills its own process on its second batch, the first time only."""

    class DiesOnce(RealInference):
        def __call__(self, batch):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 2 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            return super().__call__(batch)

    return DiesOnce


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
class TestBatch:
    def test_same_outputs_as_rmbg_remove_a_manifest_and_a_resumed_rerun(
        self, offline_hub, shoot, reference, tmp_path, capsys
    ):
        out = tmp_path / "out"
        # `--ray FOLDER`: a folder is an input, not a Ray address.
        command = ["remove", "--ray", str(shoot), "-o", str(out), *MODEL_ARGS, "--batch-size", "4", "-q"]
        assert main(command) == 1  # the two damaged files
        _same_outputs(out, reference)
        rows = _manifest(out / MANIFEST_NAME)
        assert sorted(row["input"] for row in rows) == sorted(str(p) for p in shoot.rglob("*") if p.is_file())
        failed = {Path(row["input"]).name: row["error"] for row in rows if row["status"] == "failed"}
        assert set(failed) == {"notes.png", "cut.jpg"}
        assert "shoot/notes.png: not an image" in failed["notes.png"] and "truncated" in failed["cut.jpg"]
        for row in rows:
            if row["status"] == "ok":
                assert Path(row["output"]).is_file() and row["error"] is None and row["seconds"] > 0
        assert "20 done, 0 skipped" in capsys.readouterr().err

        written = {name: (out / name).stat().st_mtime_ns for name in _files(reference)}
        assert main(command) == 1
        rows = _manifest(out / MANIFEST_NAME)
        assert sorted(row["status"] for row in rows) == ["failed"] * 2 + ["skipped"] * GOOD
        assert {name: (out / name).stat().st_mtime_ns for name in _files(reference)} == written
        assert "0 done, 20 skipped" in capsys.readouterr().err

    def test_a_model_that_cannot_be_had_is_one_message_before_any_work(self, offline_hub, shoot, tmp_path, capsys):
        out = tmp_path / "out"
        command = ["remove", "--ray", str(shoot), "-o", str(out), "--model", "BiRefNet", "--device", "cpu", "-q"]
        assert main(command) == 2
        error = capsys.readouterr().err
        assert "error: BiRefNet is not downloaded here" in error and "rmbg download BiRefNet --to" in error
        assert _files(out) == [MANIFEST_NAME] and not (out / MANIFEST_NAME).read_text()

    def test_the_actors_run_the_engine_and_precision_of_the_flags(self, offline_hub, tmp_path):
        """The manifest names the engine each image was inferred with: --engine reaches the actors."""
        folder, out = tmp_path / "two", tmp_path / "out"
        folder.mkdir()
        for index in range(2):
            live.sample_image(80, 60, seed=index).save(folder / f"{index}.png")
        command = ["remove", "--ray", str(folder), "-o", str(out), *MODEL_ARGS, "--engine", "openvino", "-q"]
        assert main(command) == 0
        engines = [row["engine"] for row in _manifest(out / MANIFEST_NAME)]
        assert len(engines) == 2 and all(e.startswith("openvino") and " fp32 " in e for e in engines), engines

    def test_an_actor_killed_mid_job_loses_and_duplicates_nothing(self, shoot, reference, tmp_path):
        marker, out = tmp_path / "died", tmp_path / "out"
        tasks = locations.plan([f"file://{shoot}"], f"file://{out}", "png")
        config = RayConfig(InferenceConfig(ServiceConfig(MODEL, "cpu", "fp32", size=128), threads=1), batch_size=4)
        manifest = Manifest(out / MANIFEST_NAME)
        remove_on_ray(tasks, build_request(), config, manifest, inference=_dies_once(marker))
        manifest.close()
        assert marker.is_file(), "the actor was meant to die once"
        rows = _manifest(out / MANIFEST_NAME)
        assert sorted(row["input"] for row in rows) == sorted(str(task.source) for task in tasks)  # each once
        assert manifest.counts == {"ok": GOOD, "failed": 2}
        assert not list(out.rglob("*.partial"))
        _same_outputs(out, reference)


# --- Ray Serve (test_web_api.py runs the API tests of `rmbg serve` against `rmbg serve --ray` too) ---


@pytest.mark.slow
def test_serve_infers_concurrent_requests_together_when_batching_is_on(tmp_path, hf_home):
    """With a batch window on the CPU, a replica lets in a whole batch (more than RMBG_WORKERS, 2) and
    `@serve.batch` infers concurrent requests together; `X-Batch-Size` says so."""
    images = [live.sample_image(120 + 8 * i, 90 + 4 * i, seed=i) for i in range(6)]
    with live.run_server(tmp_path, hf_home, *live.SERVER_ARGS, "--ray", RMBG_BATCH_WINDOW_MS="1000") as server:
        with ThreadPoolExecutor(len(images)) as senders:
            together = list(senders.map(lambda image: server.remove(live.png_bytes(image)), images))
        alone = [server.remove(live.png_bytes(image)) for image in images]
    sizes = [int(response.headers["X-Batch-Size"]) for response in together]
    assert max(sizes) > 2, sizes  # all 6 in one batch here; 2 at most if admission let in only RMBG_WORKERS
    for image, batched, single in zip(images, together, alone, strict=True):
        assert single.headers["X-Batch-Size"] == "1"
        cutout = live.opened(batched)
        assert live.is_cutout_of(cutout, image)  # its own input, unmixed
        if batched.headers["X-Batch-Size"] == "1":
            assert batched.content == single.content
        else:  # the CPU picks other kernels for another batch shape: an alpha may differ by 1/255
            alpha, alone_alpha = live.channel(cutout, "A"), live.channel(live.opened(single), "A")
            assert np.abs(alpha - alone_alpha).max() <= 1


@pytest.mark.slow
def test_serve_replicas_run_the_engine_of_the_flag(tmp_path, hf_home):
    """`--engine` goes into the config the replicas load (RMBG_ENGINE says torch); /health names what runs."""
    args = (*live.SERVER_ARGS, "--ray", "--engine", "openvino")
    with live.run_server(tmp_path, hf_home, *args, RMBG_ENGINE="torch") as server:
        body = server.get("/health").json()
    assert (body["engine"], body["precision"], body["status"]) == ("openvino", "fp32", "ok")
