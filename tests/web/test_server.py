"""The web server (edgepipe/web/server.py) in this process, on a real socket: every endpoint after a
scripted run, the live stream while frames come, the token, the stream limit, and that a client who
stops reading holds up nothing but itself."""

from __future__ import annotations

import base64
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgepipe.config import HttpConfig, load_pipeline
from edgepipe.draw import LineShape, Scene
from edgepipe.errors import ConfigError
from edgepipe.pipeline import Beat, NoLifecycle
from edgepipe.sources import SourceStats
from edgepipe.types import Detections, Frame, FrameResult, Tracks
from edgepipe.web import Web, process_settings
from edgepipe.web.view import LiveView
from tests.fixtures.rtsp import RtspServer
from tests.fixtures.scripted import FRAMES, scripted_pipeline, write_frames
from tests.waiting import wait_until

TOKEN = "0123456789abcdef0123456789abcdef"


def get(
    url: str, headers: dict[str, str] | None = None, timeout_s: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET, errors included."""
    try:
        with urlopen(Request(url, headers=headers or {}), timeout=timeout_s) as response:
            return response.status, dict(response.headers), response.read()
    except HTTPError as error:
        return error.code, dict(error.headers), error.read()


def page_counts(page: str) -> dict[str, dict[str, int]]:
    """The counts table of the page: {rule: {key: value}} from its data-rule / data-key cells."""
    import re

    counts: dict[str, dict[str, int]] = {}
    for rule, cells in re.findall(r'<tr data-rule="([^"]+)">(.*?)</tr>', page):
        counts[rule] = {key: int(value) for key, value in re.findall(r'data-key="([^"]+)">(\d+)<', cells)}
    return counts


def event_counts(events: Path) -> Counter[tuple[str, str, str]]:
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    return Counter((e["rule"], e["type"], e.get("direction", "")) for e in lines)


@pytest.fixture
def finished_run(tmp_path: Path) -> Iterator[tuple[Web, Path, dict[str, object]]]:
    """The scripted pipeline run to its end with the web server up (it stays up afterwards)."""
    web = Web(HttpConfig(port=0), ["scripted"])
    events = tmp_path / "events.jsonl"
    with web.server:
        pipeline = scripted_pipeline(
            write_frames(tmp_path / "frames"),
            events,
            watcher=web.views["scripted"],
            prometheus=web.prometheus.pipeline("scripted"),
        )
        pipeline.run()
        yield web, events, pipeline.rules.counts()  # type: ignore[misc]


def test_every_endpoint_after_a_run(finished_run: tuple[Web, Path, dict[str, object]]) -> None:
    web, events, counts = finished_run
    url = web.server.url
    status, headers, body = get(url)
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert '<img src="scripted/stream.mjpg"' in page
    # the page's numbers are the run's: those its events file has
    seen = event_counts(events)
    assert page_counts(page) == {
        "door": {"in": seen["door", "line_cross", "in"], "out": seen["door", "line_cross", "out"]},
        "right": {
            "occupancy": 0,
            "enter": seen["right", "zone_enter", ""],
            "exit": seen["right", "zone_exit", ""],
        },
    }
    assert seen["door", "line_cross", "in"] == 1 and seen["right", "zone_exit", ""] == 1

    status, _, body = get(url + "api/counts")
    assert status == 200 and json.loads(body) == {"scripted": counts}
    status, _, body = get(url + "api/status")
    assert status == 200 and json.loads(body)["scripted"]["state"] == "offline"
    status, _, body = get(url + "api/live")
    live = json.loads(body)["scripted"]
    assert (
        status == 200 and live["state"] == "offline" and live["frames"] == FRAMES and live["counts"] == counts
    )

    status, _, body = get(url + "healthz")
    assert status == 503
    assert json.loads(body) == {
        "status": "unhealthy",
        "pipelines": {"scripted": "the frame loop has ended"},
        "reason": "scripted: the frame loop has ended",
    }

    status, headers, body = get(url + "scripted/snapshot.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (120, 200, 3)

    status, _, body = get(url + "nope/stream.mjpg")
    assert status == 404 and json.loads(body) == {"error": "no such page: /nope/stream.mjpg"}


def test_one_server_for_every_pipeline_of_the_process(tmp_path: Path) -> None:
    """Two pipelines on their own threads, as `edgepipe run a.yml b.yml` runs them: one page with
    both, their own streams, counts and health."""
    from edgepipe.runtime import run_pipelines

    web = Web(HttpConfig(port=0), ["door", "yard"])
    frames = write_frames(tmp_path / "frames")
    with web.server:
        pipelines = [
            scripted_pipeline(
                frames,
                tmp_path / f"{name}.jsonl",
                watcher=web.views[name],
                prometheus=web.prometheus.pipeline(name),
                name=name,
            )
            for name in ("door", "yard")
        ]
        run_pipelines(pipelines, NoLifecycle())
        page = get(web.server.url)[2].decode()
        assert '<img src="door/stream.mjpg"' in page and '<img src="yard/stream.mjpg"' in page
        counts = json.loads(get(web.server.url + "api/counts")[2])
        assert counts == {p.name: p.rules.counts() for p in pipelines}
        assert json.loads(get(web.server.url + "healthz")[2])["pipelines"] == {
            "door": "the frame loop has ended",
            "yard": "the frame loop has ended",
        }
        for name in ("door", "yard"):
            status, _, body = get(web.server.url + f"{name}/snapshot.jpg")
            assert status == 200 and body[:2] == b"\xff\xd8"
        text = get(web.server.url + "metrics")[2].decode()
        frames_total = {
            s.labels["pipeline"]: s.value
            for f in text_string_to_metric_families(text)
            if f.name == "edgepipe_frames"
            for s in f.samples
            if s.name == "edgepipe_frames_total"
        }
        assert frames_total == {"door": FRAMES, "yard": FRAMES}


def test_metrics_parse_and_count_what_the_events_file_has(
    finished_run: tuple[Web, Path, dict[str, object]],
) -> None:
    web, events, _ = finished_run
    status, headers, body = get(web.server.url + "metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    counted = Counter(
        {
            (s.labels["rule"], s.labels["type"], s.labels["direction"]): int(s.value)
            for s in families["edgepipe_events"].samples
            if s.name == "edgepipe_events_total"
        }
    )
    assert counted == event_counts(events)
    frames = [s.value for s in families["edgepipe_frames"].samples if s.name == "edgepipe_frames_total"]
    assert frames == [FRAMES]
    detect = [
        s.value
        for s in families["edgepipe_stage_seconds"].samples
        if s.name == "edgepipe_stage_seconds_count" and s.labels["stage"] == "detect"
    ]
    assert detect == [FRAMES]
    assert [s.value for s in families["edgepipe_dropped_frames"].samples] == [0]
    assert "process_resident_memory_bytes" in families


def feed(view: LiveView, stop: threading.Event, size_hw: tuple[int, int] = (120, 200)) -> None:
    """Stands in for a loop: a new frame and heartbeat as fast as the view takes them."""
    view.started(Scene((LineShape("door", (100.0, 10.0), (100.0, 110.0), 1),), ("person",)))
    rng = np.random.default_rng(0)
    index = 0
    while not stop.is_set():
        image = rng.integers(0, 255, (*size_hw, 3), dtype=np.uint8)  # noise: big JPEGs
        frame = Frame(image, index, 1_800_000_000.0 + index, None)
        view.frame(FrameResult(frame, Detections.empty(), Tracks.empty(), ()))
        view.beat(Beat(time.monotonic(), index + 1, SourceStats("connected", index + 1, 0, 0), None, None))
        index += 1
        stop.wait(0.01)


def stream_parts(url: str, parts: int, headers: dict[str, str] | None = None) -> list[bytes]:
    """The first `parts` JPEGs of an MJPEG stream."""
    request = Request(url, headers=headers or {})
    jpegs: list[bytes] = []
    with urlopen(request, timeout=20) as response:
        assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=edgepipe-frame"
        while len(jpegs) < parts:
            assert response.readline() == b"--edgepipe-frame\r\n"
            assert response.readline() == b"Content-Type: image/jpeg\r\n"
            length = int(response.readline().split(b":")[1])
            assert response.readline() == b"\r\n"
            jpegs.append(response.read(length))
            assert response.readline() == b"\r\n"
    return jpegs


@pytest.fixture
def live_web() -> Iterator[Web]:
    """A server over one view that a thread keeps feeding, as a running loop would."""
    web = Web(HttpConfig(port=0, stream_fps=20, max_streams=2), ["door"])
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(web.views["door"], stop), daemon=True)
    with web.server:
        feeder.start()
        yield web
        stop.set()
        feeder.join(timeout=10)


def test_the_stream_sends_a_new_picture_as_frames_come(live_web: Web) -> None:
    jpegs = stream_parts(live_web.server.url + "door/stream.mjpg", 3)
    images = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    assert all(image.shape == (120, 200, 3) for image in images)
    assert len({j for j in jpegs}) == 3  # three different pictures
    status, _, body = get(live_web.server.url + "healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "pipelines": {"door": "ok"}}


def test_more_streams_than_allowed_are_turned_away(live_web: Web) -> None:
    url = live_web.server.url + "door/stream.mjpg"
    first, second = urlopen(url, timeout=10), urlopen(url, timeout=10)  # max_streams: 2
    try:
        status, _, body = get(url)
        assert status == 503 and json.loads(body) == {"error": "too many live streams open; try later"}
    finally:
        first.close()
        second.close()


@pytest.mark.slow
def test_a_client_that_stops_reading_holds_up_nothing_but_itself() -> None:
    """A stream client that never reads: its socket buffers fill and its thread blocks in write; the
    loop's hand-offs go on (the feeder gets through its frames) and another viewer still gets pictures."""
    web = Web(HttpConfig(port=0, stream_fps=30), ["door"])
    view = web.views["door"]
    with web.server:
        view.started(Scene((), ("person",)))
        stuck = socket.create_connection(("127.0.0.1", web.server.port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(b"GET /door/stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        rng = np.random.default_rng(1)
        handed = 0
        try:
            stop = threading.Event()

            def loop() -> None:
                nonlocal handed
                for index in range(300):  # ~100 kB noise JPEGs: far more than the socket buffers hold
                    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
                    view.frame(
                        FrameResult(Frame(image, index, 0.0, None), Detections.empty(), Tracks.empty(), ())
                    )
                    handed += 1
                    stop.wait(0.005)

            loop_thread = threading.Thread(target=loop)
            loop_thread.start()
            jpegs = stream_parts(web.server.url + "door/stream.mjpg", 3)
            loop_thread.join(timeout=120)
            assert not loop_thread.is_alive() and handed == 300
            assert len(set(jpegs)) == 3
        finally:
            stuck.close()


@pytest.fixture(scope="module")
def token_web() -> Iterator[Web]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEPIPE_TEST_HTTP_TOKEN", TOKEN)
        web = Web(HttpConfig(port=0, token_env="EDGEPIPE_TEST_HTTP_TOKEN"), ["door"])
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(web.views["door"], stop), daemon=True)
    with web.server:
        feeder.start()
        assert wait_until(lambda: web.views["door"].seen().result is not None, 10)
        yield web
        stop.set()
        feeder.join(timeout=10)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    "path", ["", "metrics", "healthz", "api/status", "api/counts", "door/snapshot.jpg", "door/stream.mjpg"]
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-of-some-length"},
        basic("edgepipe", "nope"),
        {"Authorization": TOKEN},
    ],
    ids=["none", "wrong bearer", "wrong basic", "no scheme"],
)
def test_with_a_token_every_request_without_it_gets_401_and_no_frame_bytes(
    token_web: Web, path: str, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, got, body = get(token_web.server.url + path, headers)
    assert status == 401
    assert got["WWW-Authenticate"] == 'Basic realm="edgepipe", charset="UTF-8"'
    assert b"\xff\xd8" not in body and b"edgepipe-frame" not in body
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {TOKEN}"}, basic("anyone", TOKEN)], ids=["bearer", "basic"]
)
def test_the_token_opens_every_endpoint(
    token_web: Web, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, _, body = get(token_web.server.url + "door/snapshot.jpg", headers)
    assert status == 200 and body[:2] == b"\xff\xd8"
    assert len(stream_parts(token_web.server.url + "door/stream.mjpg", 2, headers)) == 2
    assert get(token_web.server.url + "metrics", headers)[0] == 200
    assert TOKEN not in caplog.text


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        web = Web(HttpConfig(port=port), ["door"])
        with pytest.raises(ConfigError) as caught:
            web.server.start()
    assert str(caught.value) == (
        f"http: cannot listen on 127.0.0.1:{port} (Address already in use): choose another http.host or http.port"
    )


def test_one_http_section_for_the_process(tmp_path: Path) -> None:
    (tmp_path / "m.xml").write_text("<net/>")
    (tmp_path / "m.bin").write_bytes(b"")
    (tmp_path / "v.mp4").write_bytes(b"")

    def pipeline(name: str, http: str) -> tuple[str, object]:
        path = tmp_path / f"{name}.yml"
        path.write_text(
            f"name: {name}\nsource: {{type: file, path: v.mp4}}\ndetector: {{model: m.xml}}\n{http}"
        )
        return str(path), load_pipeline(path)

    with_http = pipeline("door", "http: {port: 8081}\n")
    without = pipeline("yard", "")
    same = pipeline("hall", "http: {port: 8081}\n")
    other = pipeline("lobby", "http: {port: 9000}\n")
    assert process_settings([without]) is None  # type: ignore[list-item]
    settings = process_settings([with_http, without, same])  # type: ignore[list-item]
    assert settings is not None and settings.port == 8081
    with pytest.raises(ConfigError) as caught:
        process_settings([with_http, other])  # type: ignore[list-item]
    assert str(caught.value) == (
        f"{other[0]}: http: differs from {with_http[0]}'s; one server serves every pipeline of a process, "
        "so give the section in one file only, or the same in each"
    )


def test_healthz_follows_a_camera_that_goes_away_and_comes_back(
    tmp_path: Path, rtsp_server_fn: RtspServer
) -> None:
    """`edgepipe run --http` on the RTSP test server: /healthz is 200 while frames come, 503 with the
    reason once the server is killed, 200 again after it restarts; /metrics counts the reconnect."""
    from tests.fixtures.rtsp import free_port

    model = Path(__file__).resolve().parents[2] / "models" / "nanodet-plus-m_320_fp16.xml"
    config = tmp_path / "camera.yml"
    config.write_text(
        f"name: camera\nsource:\n  type: rtsp\n  url: {rtsp_server_fn.url}\n  open_timeout_s: 5\n"
        f"  read_timeout_s: 2\n  reconnect_initial_s: 0.2\n  reconnect_max_s: 1\n"
        f"detector:\n  model: {model}\n  classes: [person]\nhttp:\n  port: {free_port()}\n"
    )
    port = load_pipeline(config).http.port  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/"
    process = subprocess.Popen(
        [sys.executable, "-m", "edgepipe", "run", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def health() -> tuple[int, dict[str, object]]:
        try:
            status, _, body = get(url + "healthz", timeout_s=5)
        except OSError:  # not listening yet
            return 0, {}
        return status, json.loads(body)

    try:
        assert wait_until(lambda: health()[0] == 200, 60), health()
        assert health()[1] == {"status": "ok", "pipelines": {"camera": "ok"}}
        rtsp_server_fn.kill()
        assert wait_until(lambda: health()[0] == 503, 30), health()
        status, body = health()
        assert status == 503 and body["status"] == "unhealthy"
        assert body["reason"] in ("camera: source reconnecting", "camera: source failed"), body
        rtsp_server_fn.start()
        assert wait_until(lambda: health()[0] == 200, 60), health()
        families = {f.name: f for f in text_string_to_metric_families(get(url + "metrics")[2].decode())}
        reconnects = families["edgepipe_source_reconnects"].samples[0].value
        assert reconnects >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
