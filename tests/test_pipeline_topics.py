"""What MQTT users see, end to end through `edgepipe run` with a real mosquitto, a real paho
subscriber and a real Home Assistant core:

- pipelines/door.yml on its video publishes exactly the topics and payloads of README's "Events and
  topics" and "Home Assistant" sections (values that are measured, not decided — ids, times, scores,
  boxes, timings — are compared as present, not by value);
- killing the RTSP camera flips the `camera` topic, the camera's binary_sensor and the availability
  of the count sensors in Home Assistant, and its return flips them back.

Regenerate the README blocks after a deliberate change: `python -m tests.test_pipeline_topics PORT`
with a mosquitto on 127.0.0.1:PORT prints them (then check the diff by eye)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.homeassistant import HomeAssistant
from tests.fixtures.mqtt import Broker, Subscriber
from tests.fixtures.rtsp import RtspServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOOR_VIDEO = REPO.parent / "shared" / "data" / "video" / "one-by-one-person-detection.mp4"
MEASURED = "…"  # what a measured value reads as in a comparison
# Per topic kind, the JSON fields whose values are measured: they differ from run to run and machine to machine.
EVENT_MEASURED = frozenset({"id", "ts", "score", "bbox", "frame", "media_time_s", "dwell_s"})
STATUS_KEPT = frozenset({"pipeline", "source_state", "frames", "dropped_frames"})  # the rest is timing
CONFIG_MEASURED = frozenset({"sw_version"})
BLOCKS = ("door-first-person", "door-retained", "door-discovery")


# ---------------------------------------------------------------- a door.yml run, captured
def door_config(tmp_path: Path, broker: Broker) -> Path:
    """pipelines/door.yml as it is, pointed at the test broker with discovery on, the video and model
    found from here, and f32 inference so the detector's boxes are the same on every CPU."""
    config = yaml.safe_load((REPO / "pipelines" / "door.yml").read_text())
    config["source"]["path"] = str(DOOR_VIDEO)
    config["detector"]["model"] = str(REPO / "models" / "nanodet-plus-m_416_fp16.xml")
    config["detector"]["precision"] = "f32"
    config["outputs"]["mqtt"].update(
        host=broker.host,
        port=broker.port,
        home_assistant_discovery=True,
        outbox={"path": str(tmp_path / "state" / "door-outbox.sqlite")},
    )
    path = tmp_path / "door.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def capture_door_run(broker: Broker, subscribe: Callable[..., Subscriber], tmp_path: Path) -> dict[str, Any]:
    """Every message of a whole door.yml run in order, and what the broker retains after it."""
    during = subscribe(broker, "#")
    run = subprocess.run(
        [sys.executable, "-m", "edgepipe", "run", str(door_config(tmp_path, broker)), "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert during.wait_for(lambda s: s.texts()[-1:] == ["stopped"], timeout_s=30)
    after = subscribe(broker, "#")
    assert after.wait_for(lambda s: s.retained().get("edgepipe/door/available") == "stopped", timeout_s=10)
    # every topic but the events is retained
    assert after.wait_for(lambda s: len(s.messages) == len(during.retained()) - 1, timeout_s=10)
    return {"messages": [(t, p.decode()) for t, p, _ in during.messages], "retained": after.retained()}


def first_person(messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """From the first event to the first zone_exit: the events and count updates of the first
    person, in the order they were published (status lines, whose timing is measured, left out)."""
    start = next(i for i, (topic, _) in enumerate(messages) if topic.endswith("/events"))
    end = next(
        i
        for i, (t, p) in enumerate(messages)
        if t.endswith("/events") and json.loads(p)["type"] == "zone_exit"
    )
    end = next(
        (i for i in range(end + 1, len(messages)) if messages[i][0].endswith("/events")), len(messages)
    )
    return [(t, p) for t, p in messages[start:end] if "/counts" in t or t.endswith("/events")]


def render_blocks(capture: dict[str, Any]) -> dict[str, str]:
    """The README blocks of a capture: the first person, the retained topics (discovery configs as
    `{…}`), and four discovery configs in full."""
    retained = capture["retained"]
    lines = []
    for topic in sorted(retained):
        payload = "{…}" if topic.startswith("homeassistant/") else retained[topic]
        lines.append(f"{topic} {payload}")
    shown = [
        "homeassistant/sensor/edgepipe_door/entry_in/config",
        "homeassistant/binary_sensor/edgepipe_door/camera/config",
        "homeassistant/event/edgepipe_door/events/config",
        "homeassistant/sensor/edgepipe_door/frame_age/config",
    ]
    discovery = [f"{topic} {retained[topic]}" for topic in shown]
    return {
        "door-first-person": "\n".join(f"{t} {p}" for t, p in first_person(capture["messages"])),
        "door-retained": "\n".join(lines),
        "door-discovery": "\n".join(discovery),
    }


def readme_block(name: str) -> list[tuple[str, str]]:
    """`topic payload` lines of the fenced block between <!-- name --> and <!-- /name --> in README."""
    text = README.read_text()
    match = re.search(rf"<!-- {name} -->\n```[a-z]*\n(.*?)\n```\n<!-- /{name} -->", text, re.S)
    assert match is not None, f"README.md has no <!-- {name} --> block"
    return [tuple(line.split(" ", 1)) for line in match.group(1).splitlines()]  # type: ignore[misc]


def masked(topic: str, payload: str) -> Any:
    """A payload with its measured values replaced, for comparison."""
    if payload == "{…}":
        return payload
    if topic.endswith("/events"):
        return {k: MEASURED if k in EVENT_MEASURED else v for k, v in json.loads(payload).items()}
    if topic.endswith("/status"):
        return _mask_leaves(json.loads(payload), STATUS_KEPT)
    if topic.startswith("homeassistant/"):
        config = json.loads(payload)
        for part in ("device", "origin"):
            config[part] = {k: MEASURED if k in CONFIG_MEASURED else v for k, v in config[part].items()}
        return config
    return payload


def _mask_leaves(value: Any, kept: frozenset[str], key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask_leaves(v, kept, k) for k, v in value.items()}
    return value if key in kept else MEASURED


def test_a_door_run_publishes_exactly_the_readme_reference(
    broker: Broker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    capture = capture_door_run(broker, subscribe, tmp_path)
    rendered = render_blocks(capture)
    for name in BLOCKS:
        documented = [(t, masked(t, p)) for t, p in readme_block(name)]
        published = [tuple(line.split(" ", 1)) for line in rendered[name].splitlines()]
        assert [(t, masked(t, p)) for t, p in published] == documented, (
            f"README block {name}:\n{rendered[name]}"
        )
    # every topic the run used is in the reference: the retained ones, and the events
    used = {topic for topic, _ in capture["messages"]}
    assert used == {t for t, _ in readme_block("door-retained")} | {"edgepipe/door/events"}


# ---------------------------------------------------------------- a camera that goes away
@pytest.fixture
def rtsp_pipeline(
    tmp_path: Path, broker: Broker, rtsp_server_fn: RtspServer
) -> Iterator[subprocess.Popen[str]]:
    config = tmp_path / "cam.yml"
    config.write_text(
        "name: cam\n"
        f"source: {{type: rtsp, url: '{rtsp_server_fn.url}', open_timeout_s: 5, read_timeout_s: 2, "
        "reconnect_initial_s: 0.1, reconnect_max_s: 0.5}\n"
        f"detector: {{model: {REPO / 'models' / 'nanodet-plus-m_320_fp16.xml'}, classes: [person]}}\n"
        "rules:\n  - {type: line, name: crossing, points: [[240, 100], [240, 300]], in_side: left}\n"
        f"outputs:\n  mqtt: {{host: {broker.host}, port: {broker.port}, home_assistant_discovery: true, "
        f"outbox: {{path: {tmp_path / 'cam-outbox.sqlite'}}}}}\n"
        "status_interval_s: 1\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "edgepipe", "run", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_killing_the_camera_flips_the_camera_topic_and_home_assistant_availability(
    broker: Broker,
    subscribe: Callable[..., Subscriber],
    home_assistant: Callable[..., HomeAssistant],
    rtsp_server_fn: RtspServer,
    rtsp_pipeline: subprocess.Popen[str],
) -> None:
    ha = home_assistant(broker)
    camera = subscribe(broker, "edgepipe/cam/camera")
    everything = subscribe(broker, "edgepipe/cam/#")
    counted, connected = "sensor.edgepipe_cam_crossing_in", "binary_sensor.edgepipe_cam_camera"

    def up(h: HomeAssistant) -> bool:
        return h.state(connected) == "on" and (h.state(counted) or "").isdigit()

    assert ha.wait_for(up, timeout_s=120), ha.states()
    assert camera.texts()[-1] == "connected"
    rtsp_server_fn.kill()  # the camera loses power
    assert camera.wait_for(lambda s: s.texts()[-1] in ("reconnecting", "failed"), timeout_s=30), (
        camera.texts()
    )
    assert ha.wait_for(lambda h: h.state(connected) == "off" and h.state(counted) == "unavailable")
    assert ha.state("sensor.edgepipe_cam_fps") not in (None, "unavailable")  # the pipeline is still there
    rtsp_server_fn.start()  # and comes back
    assert camera.wait_for(lambda s: s.texts()[-1] == "connected", timeout_s=60), camera.texts()
    assert ha.wait_for(up)
    rtsp_pipeline.send_signal(signal.SIGTERM)
    _, stderr = rtsp_pipeline.communicate(timeout=60)
    assert rtsp_pipeline.returncode == 0, stderr[-3000:]

    def still_available(h: HomeAssistant) -> dict[str, str | None]:
        return {entity: state for entity, state in h.states().items() if state != "unavailable"}

    assert ha.wait_for(lambda h: not still_available(h)), "\n".join(
        [
            f"still available: {still_available(ha)}",
            *(f"HA {entity}: {state}" for entity, state in ha.history if entity in still_available(ha)),
            *(
                f"MQTT {topic} {payload[:60]!r} retain={retain}"
                for topic, payload, retain in everything.messages
            ),
            ha.log_path.read_text()[-3000:],
            stderr[-3000:],
        ]
    )
    # the camera topic went connected → away → connected, then the source ended with the run
    flips = [state for i, state in enumerate(camera.texts()) if i == 0 or state != camera.texts()[i - 1]]
    assert flips[0] == "connected" and flips[-2:] == ["connected", "ended"]
    assert {"reconnecting", "failed"} & set(flips)


if __name__ == "__main__":  # print the README blocks of a door.yml run on the broker at 127.0.0.1:PORT
    import tempfile

    from tests.fixtures.mqtt import Subscriber as _Subscriber

    class _Running(Broker):
        def __init__(self, port: int) -> None:  # an already running broker; nothing to start
            self.host, self.port, self.process = "127.0.0.1", port, None

    running = _Running(int(sys.argv[1]))
    with tempfile.TemporaryDirectory() as folder:
        blocks = render_blocks(
            capture_door_run(running, lambda b, t: _Subscriber(b, t), Path(folder))  # type: ignore[arg-type]
        )
    for name in BLOCKS:
        print(f"<!-- {name} -->\n```\n{blocks[name]}\n```\n<!-- /{name} -->\n")
