"""The containers' health check: `python -m bgremover.healthcheck` asks the running server's `/health`.

Docker (or podman) keeps a container `starting` until a probe succeeds, and turns it `unhealthy`
after `--retries` failed probes once the start period is over. To make both states mean something:

- the model is loaded: exit 0 at once (`healthy`);
- the model failed to load (no weights offline, a gated model without access) or the server is
  shutting down: print `/health`'s reason and exit 1 at once, so the container turns `unhealthy`
  within the retries (about a minute) and `docker inspect` shows why;
- the model is still downloading or loading, or the server is still starting: keep asking inside
  the probe, so the container stays `starting` for as long as a download takes (up to `--wait`,
  which must stay under the HEALTHCHECK timeout).

Only the standard library: a probe that runs every few seconds must not import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

LOADING = "loading"
UNREACHABLE = "unreachable"


def ask(url: str, timeout: float) -> tuple[str, str]:
    """`/health`'s status (`ok`, `loading`, `error`, `draining`) and reason, or `unreachable` and why."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through HTTP_PROXY
    try:
        with opener.open(url, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:  # 503 while loading or failed: the body says which
        body = error.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return UNREACHABLE, f"nothing answers on {url} ({reason})"
    try:
        answer = json.loads(body)
    except ValueError:
        return "error", f"{url} did not answer with JSON: {body[:200]!r}"
    status = str(answer.get("status", "error"))
    if status == "ok":
        return status, f"{answer.get('model')} is loaded on {answer.get('device')} ({answer.get('engine')})"
    return status, str(answer.get("reason", ""))


def wait_for_verdict(url: str, wait: float, start_wait: float, poll: float) -> tuple[bool, str]:
    """Asks until the answer is final: ready, failed, or still not ready after `wait` seconds
    (`start_wait` if the server never answered: a server that is not listening is not downloading)."""
    started = time.monotonic()
    while True:
        status, reason = ask(url, timeout=min(10.0, poll * 5))
        if status == "ok":
            return True, f"ok: {reason}"
        waited = time.monotonic() - started
        if status not in (LOADING, UNREACHABLE):
            return False, f"{status}: {reason}"
        limit = start_wait if status == UNREACHABLE else wait
        if waited + poll > limit:
            return False, f"{status} after {waited:.0f} s: {reason}"
        time.sleep(poll)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    port = os.environ.get("GRADIO_SERVER_PORT", "7860")
    parser = argparse.ArgumentParser(prog="python -m bgremover.healthcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=f"http://127.0.0.1:{port}/health", help="the server's /health")
    parser.add_argument("--wait", type=float, default=570.0, help="seconds to wait for a model that is loading")
    parser.add_argument("--start-wait", type=float, default=90.0, help="seconds to wait for the server to listen")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between two questions")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ready, verdict = wait_for_verdict(args.url, args.wait, args.start_wait, args.poll)
    print(verdict, file=sys.stdout if ready else sys.stderr)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
