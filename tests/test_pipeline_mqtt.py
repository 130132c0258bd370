"""End to end: `edgepipe run` on a real video (PETS09 vtest) with the real model, a real mosquitto
and a real paho subscriber. The events the rules produced are taken from the run's own
`--events` JSON-lines file (written after the outbox commit) and compared by id with what the
subscriber received: a broker outage mid-run, and a SIGKILL while the broker is down. (These are the
durability scenarios: the publisher-level tests in tests/publish/ cover the pieces.) Then what a
subscriber sees across runs: `stopped` after SIGTERM and `offline` after SIGKILL on the availability
topic, and retained totals that only rise over three runs, the first without a broker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgepipe.publish.outbox import Outbox
from edgepipe.publish.topics import Topics
from tests.fixtures.mqtt import Broker, Subscriber
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "nanodet-plus-m_320_fp16.xml"
EVENTS = "edgepipe/vtest/events"
AVAILABLE = "edgepipe/vtest/available"


def write_config(
    tmp_path: Path, video: Path, broker: Broker, *, realtime: bool = True, mqtt_extra: str = ""
) -> Path:
    """The demo pipeline's rules (a line through the middle of the path and a lawn zone) plus a zone
    over the whole picture (an enter and an exit per track, so events keep coming), paced at the
    file's fps so a run lasts long enough for an outage in the middle of it."""
    config = tmp_path / "vtest.yml"
    config.write_text(
        f"""
name: vtest
source: {{type: file, path: {video}, realtime: {str(realtime).lower()}}}
detector: {{model: {MODEL}, threshold: 0.4, classes: [person]}}
tracker: {{type: occlusion}}
rules:
  - {{type: line, name: crossing, points: [[240, 100], [240, 300]], in_side: left}}
  - {{type: zone, name: lawn, polygon: [[0, 180], [240, 190], [480, 330], [480, 360], [0, 360]]}}
  - {{type: zone, name: scene, polygon: [[0, 0], [480, 0], [480, 360], [0, 360]]}}
outputs:
  mqtt:
    host: {broker.host}
    port: {broker.port}
    outbox: {{path: {tmp_path / "outbox.sqlite"}}}
{mqtt_extra}status_interval_s: 1
"""
    )
    return config


def edgepipe_run(config: Path, events: Path, max_frames: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "edgepipe", "-v", "run", str(config), "--events", str(events)]
    cmd += ["--max-frames", str(max_frames), "--no-progress"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def ids(messages: list[dict[str, Any]]) -> list[str]:
    return [str(m["id"]) for m in messages]


def expected_counts(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The retained counts the events add up to; every event is a person, so by_label repeats them."""
    line = Counter(e["direction"] for e in events if e["type"] == "line_cross")
    tally: dict[str, int] = {"in": line["in"], "out": line["out"]}
    counts: dict[str, dict[str, Any]] = {"crossing": {**tally, "by_label": {"person": tally}}}
    for zone in ("lawn", "scene"):
        kinds = Counter(e["type"] for e in events if e["rule"] == zone)
        enter, leave = kinds["zone_enter"], kinds["zone_exit"]
        tally = {"occupancy": enter - leave, "enter": enter, "exit": leave}
        counts[zone] = {**tally, "by_label": {"person": tally} if enter else {}}
    return counts


def summary_events(out: str) -> dict[str, int]:
    """The run's closing summary line `vtest: events: line_cross 1, zone_enter 2` as a dict."""
    line = next(line for line in out.splitlines() if line.startswith("vtest: events: "))
    items = line.removeprefix("vtest: events: ").split(", ")
    return {} if items == ["none"] else {k: int(v) for k, v in (item.split(" ") for item in items)}


def outbox_rows(path: Path) -> int:
    box = Outbox(path)
    depth = box.depth
    box.close()
    return depth


@pytest.fixture
def video(shared_data: Path) -> Path:
    path = shared_data / "video" / "vtest.mp4"
    if not MODEL.exists():
        pytest.fail(
            f"{MODEL} is missing: run `edgepipe models fetch nanodet-plus-m-320 --from ../shared/models` (see models/README.md)"
        )
    return path


@pytest.fixture
def fast_video(video: Path, vtest_20fps: Path) -> Path:
    """The same frames at 20 fps, for runs in real time that must only outlast what a test does
    in the middle of them (`video` is asked for its check that the model is there)."""
    return vtest_20fps


def test_broker_outage_mid_run_delivers_every_event_once(
    mosquitto: Callable[..., Broker], subscribe: Callable[..., Subscriber], tmp_path: Path, fast_video: Path
) -> None:
    broker = mosquitto(persistence=True)  # a persistent session keeps the subscription across the restart
    sub = subscribe(broker, "edgepipe/vtest/#", session=True, client_id="e2e-outage")
    produced_path = tmp_path / "produced.jsonl"
    run = edgepipe_run(write_config(tmp_path, fast_video, broker), produced_path, max_frames=260)
    try:

        def online(s: Subscriber) -> bool:
            return "online" in s.texts(AVAILABLE)

        sub.wait_for(lambda s: online(s) or run.poll() is not None, timeout_s=120)
        if not online(sub):
            run.kill()
            pytest.fail(f"the pipeline never connected; its output:\n{run.communicate()[0].decode()[-3000:]}")
        assert sub.wait_for(lambda s: len(s.payloads(EVENTS)) >= 3, timeout_s=60), (
            "no events before the outage"
        )
        broker.stop()
        outage_start = time.time()
        before = len(read_events(produced_path))
        # the outage lasts until the run produced events and logged status lines during it
        assert wait_until(lambda: len(read_events(produced_path)) - before >= 8, timeout_s=60)
        during = len(read_events(produced_path)) - before
        assert run.poll() is None, "the run ended during the outage; it must span it"
        broker.start()
        outage_s = time.time() - outage_start
        out, _ = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out.decode()[-3000:]
    produced = read_events(produced_path)
    assert sub.wait_for(lambda s: set(ids(s.payloads(EVENTS))) >= set(ids(produced)), timeout_s=30)
    received = sub.payloads(EVENTS)
    counts = Counter(ids(received))
    print(
        f"\ne2e outage {outage_s:.1f} s: produced {len(produced)} events ({during} during the outage), "
        f"received {len(received)} messages, {len(counts)} unique, {sum(c - 1 for c in counts.values())} duplicates"
    )
    assert set(counts) == set(ids(produced))
    by_id = {e["id"]: e for e in produced}
    assert all(m == by_id[m["id"]] for m in received)  # identical payloads, not only ids
    # the events of the outage waited in the outbox: the status lines logged meanwhile show its depth
    depths = [int(d) for d in re.findall(r"outbox depth (\d+)", out.decode())]
    assert max(depths) >= during >= 8
    assert "lost the connection to MQTT broker" in out.decode()
    assert "Traceback" not in out.decode()
    # retained totals agree with the events; a clean end says "stopped"
    assert sub.wait_for(lambda s: s.texts(AVAILABLE)[-1] == "stopped")
    assert sub.payloads("edgepipe/vtest/counts")[-1] == expected_counts(produced)


def test_sigkill_while_the_broker_is_down_then_the_next_run_delivers_the_backlog(
    mosquitto: Callable[..., Broker], subscribe: Callable[..., Subscriber], tmp_path: Path, fast_video: Path
) -> None:
    broker = mosquitto(persistence=True)
    subscribe(broker, EVENTS, session=True, client_id="e2e-restart").close()  # leave a session behind
    broker.stop()
    config = write_config(tmp_path, fast_video, broker)
    first_path, second_path = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first = edgepipe_run(config, first_path, max_frames=795)
    try:
        assert wait_until(lambda: len(read_events(first_path)) >= 5, timeout_s=120), "no events to lose"
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    produced = read_events(first_path)

    broker.start()
    sub = subscribe(broker, EVENTS, session=True, client_id="e2e-restart")
    second = edgepipe_run(config, second_path, max_frames=20)
    out, _ = second.communicate(timeout=240)
    assert second.returncode == 0, out.decode()[-3000:]
    assert "messages from an earlier run" in out.decode()
    expected = set(ids(produced)) | set(ids(read_events(second_path)))
    assert sub.wait_for(lambda s: set(ids(s.payloads())) >= expected, timeout_s=30)
    received = sub.payloads()
    counts = Counter(ids(received))
    extra = set(counts) - expected
    print(
        f"\ne2e restart: produced {len(produced)} events before SIGKILL, second run "
        f"{len(expected) - len(produced)}, received {len(received)} messages, {len(counts)} unique, "
        f"{sum(c - 1 for c in counts.values())} duplicates, {len(extra)} in the outbox but not yet in the file"
    )
    # an event committed to the outbox just before the kill may not have reached the file yet
    assert len(extra) <= 1


# ---------------------------------------------------------------- bad broker settings
def test_unreachable_broker_the_run_still_counts_and_logs_retries(
    mosquitto: Callable[..., Broker], tmp_path: Path, video: Path
) -> None:
    broker = mosquitto(start=False)  # nothing listens on its port
    config = write_config(tmp_path, video, broker, realtime=False)
    run = edgepipe_run(config, tmp_path / "events.jsonl", max_frames=100)
    out = run.communicate(timeout=240)[0].decode()
    assert run.returncode == 0, out[-3000:]
    assert f"cannot connect to MQTT broker 127.0.0.1:{broker.port}" in out
    assert "stay in the outbox for the next start" in out
    assert "Traceback" not in out
    # counting went on: the summary, the events file and the outbox agree
    events = read_events(tmp_path / "events.jsonl")
    assert summary_events(out) == dict(Counter(e["type"] for e in events))
    assert len(events) >= 1
    # + the retained totals: the JSON and one row per plain counts/<rule>/... topic (the newest only)
    saved = json.loads((tmp_path / "vtest-counts.json").read_text())["counts"]
    plain = len(list(Topics.of("edgepipe", "vtest").count_values(saved)))
    assert outbox_rows(tmp_path / "outbox.sqlite") == len(events) + 1 + plain


def test_wrong_password_the_run_still_counts_and_says_credentials_were_refused(
    mosquitto: Callable[..., Broker], tmp_path: Path, video: Path
) -> None:
    broker = mosquitto(users={"edge": "right-horse-battery"})
    (tmp_path / "password").write_text("wrong-staple-42\n")
    mqtt_extra = f"    username: edge\n    password_file: {tmp_path / 'password'}\n"
    config = write_config(tmp_path, video, broker, realtime=False, mqtt_extra=mqtt_extra)
    run = edgepipe_run(config, tmp_path / "events.jsonl", max_frames=100)
    out = run.communicate(timeout=240)[0].decode()
    assert run.returncode == 0, out[-3000:]
    assert (
        f"MQTT broker 127.0.0.1:{broker.port} refused the connection (Not authorized) for user 'edge'" in out
    )
    events = read_events(tmp_path / "events.jsonl")
    assert summary_events(out) == dict(Counter(e["type"] for e in events))
    assert len(events) >= 1
    assert "wrong-staple-42" not in out
    assert "Traceback" not in out


def test_bad_ca_file_is_one_error_line_before_any_frame(
    mosquitto: Callable[..., Broker], tmp_path: Path, video: Path
) -> None:
    broker = mosquitto(start=False)
    ca = tmp_path / "ca.crt"
    ca.write_text("this is not a certificate\n")
    config = write_config(tmp_path, video, broker, realtime=False, mqtt_extra=f"    tls: {{ca_file: {ca}}}\n")
    run = edgepipe_run(config, tmp_path / "events.jsonl", max_frames=100)
    out = run.communicate(timeout=240)[0].decode()
    assert run.returncode == 2  # a setting: FILE:LINE, like every config error
    assert f"edgepipe: error: {config}:15: outputs.mqtt.tls.ca_file: {ca} is not a PEM CA certificate" in out
    assert "Traceback" not in out


def test_home_assistant_discovery_announces_the_pipeline_as_one_device(
    mosquitto: Callable[..., Broker], subscribe: Callable[..., Subscriber], tmp_path: Path, video: Path
) -> None:
    broker = mosquitto()
    config = write_config(
        tmp_path, video, broker, realtime=False, mqtt_extra="    home_assistant_discovery: true\n"
    )
    run = edgepipe_run(config, tmp_path / "events.jsonl", max_frames=5)
    out = run.communicate(timeout=120)[0].decode()
    assert run.returncode == 0, out[-3000:]
    # retained: a subscriber that comes later still finds every entity
    listener = subscribe(broker, "homeassistant/#")
    counts = [
        f"sensor/edgepipe_vtest/{rule}_{key}"
        for rule, keys in (
            ("crossing", ("in", "out")),
            ("lawn", ("occupancy", "enter", "exit")),
            ("scene", ("occupancy", "enter", "exit")),
        )
        for key in keys
    ]
    others = ["binary_sensor/edgepipe_vtest/camera", "event/edgepipe_vtest/events"] + [
        f"sensor/edgepipe_vtest/{name}" for name in ("fps", "frame_age", "outbox_depth", "dropped_frames")
    ]
    expected = {f"homeassistant/{entity}/config" for entity in counts + others}
    assert listener.wait_for(lambda s: set(s.retained()) == expected, timeout_s=10)
    door_in = json.loads(listener.retained()["homeassistant/sensor/edgepipe_vtest/crossing_in/config"])
    assert door_in["state_topic"] == "edgepipe/vtest/counts/crossing/in"
    assert [a["topic"] for a in door_in["availability"]] == [AVAILABLE, "edgepipe/vtest/camera"]


# ---------------------------------------------------------------- availability and lasting counts
def test_sigterm_leaves_stopped_and_sigkill_leaves_offline(
    broker: Broker, subscribe: Callable[..., Subscriber], tmp_path: Path, video: Path
) -> None:
    """Frigate's convention, which Home Assistant users know: `stopped` after a clean shutdown, the
    Last Will `offline` after a crash, so the two can be told apart."""
    sub = subscribe(broker, AVAILABLE)
    config = write_config(tmp_path, video, broker)  # realtime: the run lasts until it is ended
    for signum, left in ((signal.SIGTERM, "stopped"), (signal.SIGKILL, "offline")):
        run = edgepipe_run(config, tmp_path / "events.jsonl", max_frames=795)
        try:
            assert sub.wait_for(lambda s: s.texts()[-1:] == ["online"], timeout_s=120), sub.texts()
            run.send_signal(signum)
            out = run.communicate(timeout=60)[0].decode()
        finally:
            if run.poll() is None:
                run.kill()
        assert run.returncode == (0 if signum == signal.SIGTERM else -signal.SIGKILL), out[-3000:]
        assert sub.wait_for(lambda s: s.texts()[-1] == left, timeout_s=30), sub.texts()  # noqa: B023
        late = subscribe(broker, AVAILABLE)  # what the broker keeps for whoever comes later
        assert late.wait_for(lambda s: s.retained() == {AVAILABLE: left}, timeout_s=10)  # noqa: B023
    assert sub.texts() == ["online", "stopped", "online", "offline"]


def test_retained_counts_only_rise_across_runs_even_after_a_run_without_broker(
    mosquitto: Callable[..., Broker], subscribe: Callable[..., Subscriber], tmp_path: Path, video: Path
) -> None:
    """The broker-down case of the issue: run 1 counts with no broker (its totals wait in the outbox),
    the broker comes back, runs 2 and 3 follow. Every retained total a subscriber sees goes only up
    (occupancy is a gauge, not a total), and each run starts where the last one stopped."""
    broker = mosquitto(start=False)
    config = write_config(tmp_path, video, broker, realtime=False)
    first = edgepipe_run(config, tmp_path / "run1.jsonl", max_frames=120)
    assert first.wait(timeout=240) == 0
    after_first = json.loads((tmp_path / "vtest-counts.json").read_text())["counts"]
    assert after_first["scene"]["enter"] > 0
    broker.start()
    sub = subscribe(broker, "edgepipe/vtest/counts/#")
    for number in (2, 3):
        run = edgepipe_run(config, tmp_path / f"run{number}.jsonl", max_frames=120)
        out = run.communicate(timeout=240)[0].decode()
        assert run.returncode == 0, out[-3000:]
    produced = sum(len(read_events(tmp_path / f"run{n}.jsonl")) for n in (1, 2, 3))
    final = json.loads((tmp_path / "vtest-counts.json").read_text())["counts"]
    assert (
        final["scene"]["enter"]
        + final["scene"]["exit"]
        + final["lawn"]["enter"]
        + final["lawn"]["exit"]
        + final["crossing"]["in"]
        + final["crossing"]["out"]
        == produced
    )  # every event of the 3 runs counted
    assert sub.wait_for(
        lambda s: s.retained().get("edgepipe/vtest/counts/scene/enter") == str(final["scene"]["enter"])
    )
    totals: dict[str, list[int]] = {}
    for topic, payload, _ in sub.messages:
        if topic.startswith("edgepipe/vtest/counts/") and not topic.endswith("/occupancy"):
            totals.setdefault(topic, []).append(int(payload))
    assert totals, "no plain totals arrived"
    assert all(values == sorted(values) for values in totals.values()), totals
    json_totals = [
        (c["crossing"]["in"], c["crossing"]["out"], c["scene"]["enter"], c["scene"]["exit"])
        for c in sub.payloads("edgepipe/vtest/counts")
    ]
    assert all(list(column) == sorted(column) for column in zip(*json_totals, strict=True)), json_totals
    # the first totals of run 2 are run 1's, never the zeros of a fresh start
    assert totals["edgepipe/vtest/counts/scene/enter"][0] >= after_first["scene"]["enter"]
