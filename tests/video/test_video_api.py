"""The video job API against a real `rmbg serve`: submit, poll, fetch, delete, and every refusal
as a 4xx with a message while the server keeps serving."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
import requests
from live import TIMEOUT, make_clip, run_server, submit, wait_until_finished
from PIL import Image

pytestmark = pytest.mark.slow
ARGS = ("--model", "RMBG-1.4", "--size", "64", "--precision", "fp32")
LIMIT = {"RMBG_MAX_VIDEO_UPLOAD_MB": "1"}  # the test clips are a few kB; the 413 test sends a little over


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_home):
    folder = tmp_path_factory.mktemp("video_server")
    with run_server(folder, hf_home, *ARGS, RMBG_MAX_VIDEO_FRAMES="12", RMBG_VIDEO_QUEUE="0", **LIMIT) as running:
        yield running


def test_a_job_is_submitted_polled_fetched_and_deleted(server, tmp_path) -> None:
    clip = tmp_path / "walk.mp4"
    make_clip(clip, frames=4)
    answer = submit(server, clip, output="mask", format="mp4")
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert answer.headers["Location"] == f"/api/video/{job['id']}" and job["frames_total"] == 4
    status = wait_until_finished(server, job["id"])
    assert status["status"] == "done", status
    assert (status["frames_done"], status["progress"]) == (4, 1.0)
    result = server.get(f"/api/video/{job['id']}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    assert 'filename="walk_nobg.mp4"' in result.headers["content-disposition"]
    (tmp_path / "out.mp4").write_bytes(result.content)
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert [round(f.time, 3) for f in container.decode(video=0)] == [0.0, 0.1, 0.2, 0.3]
    assert requests.delete(f"{server.url}/api/video/{job['id']}", timeout=TIMEOUT).status_code == 200
    assert server.get(f"/api/video/{job['id']}").status_code == 404
    assert server.get(f"/api/video/{job['id']}/result").status_code == 404


def test_refusals_are_4xx_with_the_fix_and_a_running_job_can_be_cancelled(server, tmp_path) -> None:
    short, long, garbage = tmp_path / "short.mp4", tmp_path / "long.mp4", tmp_path / "garbage.webm"
    make_clip(short, frames=12)
    make_clip(long, frames=13)
    garbage.write_bytes(b"\x1a\x45\xdf\xa3 not really webm" * 50)
    refusals = [
        (submit(server, short, colour="red"), 400, "unknown field"),
        (submit(server, short, format="mp4"), 400, "no transparency"),
        (submit(server, garbage), 415, "not a video this app can read"),
        (submit(server, long), 413, "RMBG_MAX_VIDEO_FRAMES"),
        (server.get("/api/video/nope"), 404, "no video job"),
    ]
    for answer, code, message in refusals:
        assert answer.status_code == code and message in answer.json()["error"], answer.text
    running = submit(server, short, output="color")
    assert running.status_code == 202, running.text
    job_id = running.json()["id"]
    busy = submit(server, short)  # RMBG_VIDEO_QUEUE=0: nothing waits behind the running job
    assert busy.status_code == 503 and "RMBG_VIDEO_QUEUE" in busy.json()["error"]
    assert busy.headers["Retry-After"]
    early = server.get(f"/api/video/{job_id}/result")
    assert early.status_code == 409 and early.json()["error"].startswith(("the job is queued", "the job is running"))
    assert requests.delete(f"{server.url}/api/video/{job_id}", timeout=TIMEOUT).status_code == 200
    assert server.get(f"/api/video/{job_id}").status_code == 404
    assert server.get("/health").status_code == 200


def test_a_clip_past_the_upload_limit_names_the_video_limit_with_or_without_a_length(server) -> None:
    """Refused by its Content-Length, and by the bytes received when it sends none (chunked): both
    messages name the variable that raises this limit, not the photo limit RMBG_MAX_UPLOAD_MB."""
    head = b'--cut\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
    body = head + b"\0" * (2**20 + 100 * 1024) + b"\r\n--cut--\r\n"
    url, headers = f"{server.url}/api/video", {"Content-Type": "multipart/form-data; boundary=cut"}
    declared = requests.post(url, data=body, headers=headers, timeout=TIMEOUT)
    chunks = (body[start : start + 2**16] for start in range(0, len(body), 2**16))
    streamed = requests.post(url, data=chunks, headers=headers, timeout=TIMEOUT)
    assert "Content-Length" not in streamed.request.headers
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert "1 MB (RMBG_MAX_VIDEO_UPLOAD_MB)" in answer.json()["error"]
    assert server.get("/health").status_code == 200


def test_the_video_tab_runs_a_clip_and_previews_it(server, tmp_path) -> None:
    """The Video tab's event through gradio_client: the same jobs as the API, a preview that plays."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    clip = tmp_path / "spin.mp4"
    make_clip(clip, frames=3)
    client = Client(server.url + "/", verbose=False)
    status, preview, download = client.predict(  # the job id is session state, not returned
        handle_file(str(clip)), "RMBG-1.4", "cutout", "#ffffff", "webm", api_name="/video"
    )
    assert "done, frame 3 of 3" in status
    assert Path(download["value"] if isinstance(download, dict) else download).name == "spin_nobg.webm"
    with av.open(preview["video"] if isinstance(preview, dict) else preview) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        assert len(list(container.decode(video=0))) == 3
    with pytest.raises(AppError, match="no transparency"):
        client.predict(handle_file(str(clip)), "RMBG-1.4", "cutout", "#ffffff", "mp4", api_name="/video")


def test_quality_and_in_and_out_points_and_a_one_frame_preview(server, tmp_path) -> None:
    """The API's quality, start and end fields (refused with the fix when wrong), and the tab's
    one-frame preview at the in point through gradio_client."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    clip = tmp_path / "walk.mp4"
    make_clip(clip, frames=4)
    answer = submit(server, clip, output="mask", format="mp4", quality="draft", start=0.1, end=0.3)
    assert answer.status_code == 202, answer.text
    assert wait_until_finished(server, answer.json()["id"])["status"] == "done"
    (tmp_path / "part.mp4").write_bytes(server.get(f"/api/video/{answer.json()['id']}/result").content)
    with av.open(str(tmp_path / "part.mp4")) as container:
        assert [round(f.time, 3) for f in container.decode(video=0)] == [0.0, 0.1]
    for fields, message in (
        ({"quality": "best"}, "quality 'best': use one of draft, standard, high, master"),
        ({"start": 5}, "the in point (5 s) is past the clip's end"),
        ({"start": 0.2, "end": 0.1}, "must be 0 or more and before the out point"),
    ):
        refused = submit(server, clip, **fields)
        assert refused.status_code == 400 and message in refused.json()["error"], refused.text
    client = Client(server.url + "/", verbose=False)
    still = client.predict(handle_file(str(clip)), "RMBG-1.4", "mask", "#ffffff", 0.2, api_name="/video_frame")
    with Image.open(still) as image:
        assert image.size == (64, 48)
    # The tab's status line: the previous clip's line is cleared before a refused clip says why.
    done = client.submit(handle_file(str(clip)), "RMBG-1.4", "mask", "#ffffff", "mp4", api_name="/video")
    assert "walk.mp4**: done" in done.result()[0]
    refused = client.submit(handle_file(str(clip)), "RMBG-1.4", "cutout", "#ffffff", "mp4", api_name="/video")
    with pytest.raises(AppError, match="no transparency"):
        refused.result()
    assert [status for status, *_ in refused.outputs()] == [""]
