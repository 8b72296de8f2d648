"""Smoke test of the built CPU image, and of the compose files around it (called by .ci/containers).

    python .ci/container_smoke.py rmbg:cpu

Runs podman as a user would run docker, on synthetic RMBG-1.4 weights (no Hub): the container
turns healthy within its health check's settings, runs as uid 1000, `POST /api/remove` returns
an RGBA PNG of the input's size, the UI page loads, a request in flight during `stop` still gets
its 200; with no model the health check's log states the reason. Then docker-compose.cpu.yml
through Docker Compose v2 against podman's API socket: the `./models` mount, the development
mode (code mounted, `exec` a shell), and `down`. Every failure names what was expected.

Podman without systemd (as in CI) does not schedule health checks by itself: this script runs
`podman healthcheck run` at the image's interval, as Docker's daemon would.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bgremover.synthetic import write_synthetic_cache  # noqa: E402

MODEL = "RMBG-1.4"
ENV = {"HF_HUB_OFFLINE": "1", "RMBG_MODEL": MODEL}
SOCKET = "/run/rmbg-ci-podman.sock"


class SmokeFailure(Exception):
    """One check failed; the message says what was expected and what came."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def podman(*args: str, timeout: float = 300, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    check(not ok or done.returncode == 0, f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def synthetic_models(folder: Path) -> Path:
    """A Hugging Face home holding synthetic RMBG-1.4 weights, owned by the image's uid 1000."""
    write_synthetic_cache(MODEL, folder / "hub")
    os.chown(folder, 1000, 1000)
    for path in folder.rglob("*"):
        os.chown(path, 1000, 1000, follow_symlinks=False)
    return folder


def health_settings(image: str) -> dict[str, float]:
    """The image's HEALTHCHECK timings in seconds."""
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image).stdout)
    check(bool(config and config.get("Test")), f"{image} has no HEALTHCHECK (built without --format docker?)")
    seconds = {key: config.get(key, 0) / 1e9 for key in ("Interval", "Timeout", "StartPeriod")}
    return {**seconds, "Retries": config.get("Retries", 3)}


def health_state(container: str) -> tuple[str, str]:
    """The container's health status and the last probe's output, as `podman inspect` shows them."""
    state = json.loads(podman("inspect", "--format", "{{json .State.Health}}", container).stdout) or {}
    log = state.get("Log") or [{}]
    return state.get("Status", ""), (log[-1].get("Output") or "").strip()


def run_health_checks(container: str, settings: dict[str, float], until: set[str]) -> tuple[str, str, float]:
    """Probes at the image's interval (Docker's schedule) until the status is in `until`, or the
    health check's own settings are used up; the status, the last output and the seconds taken."""
    started = time.monotonic()
    budget = settings["StartPeriod"] + (settings["Retries"] + 1) * (settings["Interval"] + settings["Timeout"])
    while time.monotonic() - started < budget:
        time.sleep(settings["Interval"])
        podman("healthcheck", "run", container, timeout=settings["Timeout"] + 30, ok=False)
        status, output = health_state(container)
        print(f"  {time.monotonic() - started:5.1f} s  {status:9}  {output[:160]}")
        if status in until:
            return status, output, time.monotonic() - started
    raise SmokeFailure(f"{container} did not turn {' or '.join(until)} within its health check's settings")


def time_to_ready(url: str, limit: float = 300) -> dict[str, float]:
    """Watches `/health` from the start, in the background: when it first answered 200 (`seconds`)."""
    seen: dict[str, float] = {}

    def watch() -> None:
        started = time.monotonic()
        while time.monotonic() - started < limit:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=5).status_code == 200:
                    seen["seconds"] = time.monotonic() - started
                    return
            time.sleep(0.25)

    threading.Thread(target=watch, daemon=True).start()
    return seen


def sample_png(width: int, height: int) -> bytes:
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def check_removal(url: str, width: int = 320, height: int = 240) -> None:
    answer = requests.post(f"{url}/api/remove", files={"file": ("photo.png", sample_png(width, height))}, timeout=300)
    check(answer.status_code == 200, f"POST /api/remove answered {answer.status_code}: {answer.text[:300]}")
    result = Image.open(io.BytesIO(answer.content))
    check(result.format == "PNG", f"/api/remove returned {result.format}, expected PNG")
    check(result.mode == "RGBA", f"/api/remove returned mode {result.mode}, expected RGBA")
    check(result.size == (width, height), f"/api/remove returned {result.size}, expected {(width, height)}")
    print(f"  POST /api/remove: {result.format} {result.mode} {result.size[0]}x{result.size[1]}")


def check_ui(url: str) -> None:
    page = requests.get(f"{url}/", timeout=60)
    check(page.status_code == 200 and "<html" in page.text.lower(), f"GET / answered {page.status_code}")
    print(f"  GET /: 200, {len(page.text)} characters of HTML")


def check_uid(container: str) -> None:
    uid = podman("exec", container, "id", "-u").stdout.strip()
    check(uid == "1000", f"the server runs as uid {uid}, expected 1000")
    print("  runs as uid 1000")


def check_drain_on_stop(container: str, url: str) -> None:
    """`podman stop` while a large image is being processed: the request still gets its 200."""
    answers: list[requests.Response | Exception] = []

    def send() -> None:
        try:
            files = {"file": ("big.png", sample_png(3000, 2000))}
            # The slow options (edge refinement, the small PNG writer): seconds of work even on a quiet
            # machine, where inference on OpenVINO alone ends before `stop` is sent.
            slow = {"refine_edges": "true", "compression": "small"}
            answers.append(requests.post(f"{url}/api/remove", files=files, data=slow, timeout=300))
        except requests.RequestException as error:
            answers.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(1.5)
    check(sender.is_alive(), "the request ended before `stop`: nothing was in flight")
    started = time.monotonic()
    podman("stop", "-t", "120", container, timeout=180)
    sender.join(timeout=300)
    answer = answers[0] if answers else None
    check(isinstance(answer, requests.Response) and answer.status_code == 200, f"in flight during stop: {answer!r}")
    code = podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
    check(code == "0", f"the server exited with {code} on stop, expected 0")
    print(f"  stop during a request: the request got 200, exit code 0, {time.monotonic() - started:.1f} s")


@contextlib.contextmanager
def container(image: str, name: str, models: Path) -> Iterator[tuple[str, str]]:
    """The image running as `docker run -d -p ... -v models:/app/models` would run it; its name and URL."""
    podman("rm", "-f", "--ignore", name)
    env = [arg for key, value in ENV.items() for arg in ("-e", f"{key}={value}")]
    port = free_port()
    try:
        podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:7860", "-v", f"{models}:/app/models", *env, image)
        yield name, f"http://127.0.0.1:{port}"
    except BaseException:
        print(podman("logs", name, ok=False).stderr[-4000:], file=sys.stderr)
        raise
    finally:
        podman("rm", "-f", "--ignore", "-t", "5", name, ok=False)


def smoke_image(image: str, work: Path) -> None:
    settings = health_settings(image)
    print(f"health check: {settings}")
    print(f"{image} with synthetic {MODEL} weights:")
    with container(image, "rmbg-smoke", synthetic_models(work / "models")) as (name, url):
        ready = time_to_ready(url)
        status, output, seconds = run_health_checks(name, settings, {"healthy", "unhealthy"})
        check(status == "healthy", f"expected healthy, got {status}: {output}")
        answered = ready.get("seconds", float("nan"))
        print(f"  /health answered 200 {answered:.1f} s after the start; healthy at {seconds:.0f} s")
        check_uid(name)
        check_removal(url)
        check_ui(url)
        check_drain_on_stop(name, url)
    print(f"{image} with no model (offline, empty models folder):")
    empty = work / "empty"
    empty.mkdir()
    os.chown(empty, 1000, 1000)
    with container(image, "rmbg-smoke-empty", empty) as (name, _):
        status, output, seconds = run_health_checks(name, settings, {"healthy", "unhealthy"})
        check(status == "unhealthy", f"expected unhealthy without a model, got {status}")
        check(seconds <= 75, f"unhealthy only {seconds:.0f} s after the start, expected within about a minute")
        check(MODEL in output and "Traceback" not in output, f"the health log should state the reason: {output!r}")
        shown = podman("ps", "--filter", f"name={name}", "--format", "{{.Status}}").stdout.strip()
        check("(unhealthy)" in shown, f"podman ps should show (unhealthy), shows {shown!r}")
        print(f"  unhealthy {seconds:.0f} s after the start; podman ps: {shown}; health log: {output}")


@contextlib.contextmanager
def compose_project(work: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A copy of the checkout (its own `./models`, with synthetic weights) and the environment that
    points Docker Compose v2 at podman's API socket, served for as long as the block runs."""
    project = work / "project"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
    for name in files.stdout.splitlines():
        if (REPO / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, project / name)
    synthetic_models(project / "models")
    os.chmod(project, 0o755)
    Path(SOCKET).unlink(missing_ok=True)
    with open(work / "podman-service.log", "wb") as log:  # it complains about syslog and systemd here
        service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{SOCKET}"], stderr=log)
    deadline = time.monotonic() + 30
    while not Path(SOCKET).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    env = {**os.environ, **ENV, "DOCKER_HOST": f"unix://{SOCKET}", "COMPOSE_BAKE": "false", "DOCKER_BUILDKIT": "0"}
    try:
        yield project, {**env, "RMBG_HOST_PORT": str(free_port())}
    finally:
        service.terminate()
        service.wait(timeout=30)


def compose(project: Path, env: dict[str, str], files: tuple[str, ...], *args: str) -> str:
    command = ["docker-compose", "-p", "rmbg-ci", *(arg for f in files for arg in ("-f", f)), *args]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    check(done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def smoke_compose(image: str, work: Path) -> None:
    """`up` of docker-compose.cpu.yml on the built image: healthy on the weights in `./models`;
    then the development mode (the checkout mounted over /app) with a shell in it; `down`."""
    settings = health_settings(image)
    cpu, dev = ("docker-compose.cpu.yml",), ("docker-compose.cpu.yml", "docker-compose.dev.yml")
    with compose_project(work) as (project, env):
        for files in (cpu, dev):
            print(f"docker-compose {' '.join(files)} up -d:")
            compose(project, env, files, "up", "-d")
            try:
                name = compose(project, env, files, "ps", "-q", "rmbg-cpu").strip()
                status, output, seconds = run_health_checks(name, settings, {"healthy", "unhealthy"})
                check(status == "healthy", f"compose service: expected healthy on ./models, got {status}: {output}")
                print(f"  healthy {seconds:.0f} s after `up`, on the weights in ./models")
                check_removal(f"http://127.0.0.1:{env['RMBG_HOST_PORT']}")
                if files == dev:
                    shell = "id -u && test -f /app/tests/live.py && echo the checkout is mounted on /app"
                    said = compose(project, env, files, "exec", "-T", "rmbg-cpu", "bash", "-c", shell)
                    check(said.split()[:1] == ["1000"] and "mounted" in said, f"exec in the dev service: {said!r}")
                    print(f"  exec bash: {' / '.join(said.split(chr(10))[:2])}")
            finally:
                compose(project, env, files, "down")
                print("  down")


def main() -> int:
    image = sys.argv[1] if len(sys.argv) > 1 else "rmbg:cpu"
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="rmbg-smoke-") as tmp:
        try:
            smoke_image(image, Path(tmp))
            smoke_compose(image, Path(tmp))
        except SmokeFailure as failure:
            print(f"container smoke test FAILED: {failure}", file=sys.stderr)
            return 1
    print("container smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
