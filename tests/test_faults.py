"""Faults end to end through `edgepipe run`: a full disk under the MQTT outbox and under the events
file, an events file deleted mid-run, a damaged outbox at start. Real mosquitto, real tmpfs, real
video and model; the events the rules produced (the run's own --events file on a healthy disk) are
compared by id with what was delivered, and any loss must be reported, never silent."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mqtt import Broker, Subscriber
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "nanodet-plus-m_320_fp16.xml"
EVENTS = "edgepipe/faults/events"


def pipeline(tmp_path: Path, video: Path, outputs: str, *, realtime: bool = True) -> Path:
    """vtest at its own pace (in real time: the 20 fps copy, long enough to act in the middle of a
    run) with a zone over the whole picture (an enter and an exit per person)."""
    path = tmp_path / "faults.yml"
    path.write_text(
        f"name: faults\nsource: {{type: file, path: {video}, realtime: {str(realtime).lower()}}}\n"
        f"detector: {{model: {MODEL}, classes: [person]}}\n"
        "rules:\n  - {type: zone, name: scene, polygon: [[0, 0], [480, 0], [480, 360], [0, 360]]}\n"
        f"outputs:\n{outputs}status_interval_s: 0.5\n"
    )
    return path


def start(config: Path, produced: Path, max_frames: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgepipe", "-v", "run", str(config), "--events", str(produced),
         "--max-frames", str(max_frames), "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def events_in(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def fill(disk: Path, leave_bytes: int) -> Path:
    """A file that takes all of the disk but `leave_bytes`, or all of it: the run writes to that
    disk meanwhile, so the space left may shrink between asking and filling."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave_bytes))
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    return filler


def test_a_full_disk_under_the_outbox_loses_no_event(
    mosquitto: Callable[..., Broker],
    subscribe: Callable[..., Subscriber],
    small_disk: Callable[[int], Path],
    tmp_path: Path,
    vtest_20fps: Path,
) -> None:
    """Broker down and the outbox's disk full: events wait in memory; space comes back, then the
    broker: every produced event arrives, once per id, and the run ends with 0."""
    broker = mosquitto(persistence=True)
    subscribe(broker, EVENTS, session=True, client_id="faults-disk").close()  # a session to queue for
    broker.stop()
    disk = small_disk(1 << 20)
    outbox = disk / "outbox.sqlite"
    mqtt = f"  mqtt: {{host: {broker.host}, port: {broker.port}, outbox: {{path: {outbox}}}}}\n"
    produced_path = tmp_path / "produced.jsonl"
    # 20 events come by frame ~172; the 128 frames after (6.4 s) and the close's 5 s outlast the
    # publisher's longest wait between reconnects (10 s) once the broker is back
    run = start(pipeline(tmp_path, vtest_20fps, mqtt), produced_path, max_frames=300)
    lines: list[str] = []
    try:
        assert wait_until(lambda: outbox.exists(), timeout_s=120)
        filler = fill(disk, 16 << 10)
        before = len(events_in(produced_path))
        assert wait_until(lambda: len(events_in(produced_path)) >= before + 20, timeout_s=60)
        filler.unlink()  # space comes back while the run goes on
        broker.start()
        sub = subscribe(broker, EVENTS, session=True, client_id="faults-disk")
        out, _ = run.communicate(timeout=240)
        lines = out.splitlines()
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, "\n".join(lines[-30:])
    produced = events_in(produced_path)
    assert sub.wait_for(
        lambda s: {p["id"] for p in s.payloads()} >= {e["id"] for e in produced}, timeout_s=30
    )
    received = Counter(str(p["id"]) for p in sub.payloads())
    print(
        f"\nfull outbox disk: produced {len(produced)}, received {sum(received.values())}, unique {len(received)}"
    )
    assert set(received) == {e["id"] for e in produced}
    errors = [line for line in lines if " ERROR " in line]
    # one line for the episode from each file on that disk: the outbox, and the totals saved beside it
    assert len([e for e in errors if "cannot write the MQTT outbox" in e]) == 1
    assert len([e for e in errors if "counts.json" in e and "a restart would lose them" in e]) <= 1
    assert len(errors) == len([e for e in errors if "outbox" in e or "counts.json" in e]), errors
    assert any("can be written again" in line for line in lines)
    assert any("DEGRADED: cannot write the outbox" in line for line in lines)  # the status said so meanwhile
    assert "Traceback" not in "\n".join(lines)


def test_events_beyond_the_memory_queue_are_reported_lost_and_the_run_fails(
    mosquitto: Callable[..., Broker], small_disk: Callable[[int], Path], tmp_path: Path, vtest_20fps: Path
) -> None:
    broker = mosquitto(start=False)
    disk = small_disk(1 << 20)
    outbox = disk / "outbox.sqlite"
    mqtt = (
        f"  mqtt: {{host: {broker.host}, port: {broker.port}, "
        f"outbox: {{path: {outbox}, max_memory_messages: 10}}}}\n"
    )
    produced_path = tmp_path / "produced.jsonl"
    run = start(pipeline(tmp_path, vtest_20fps, mqtt), produced_path, max_frames=200)
    try:
        assert wait_until(lambda: outbox.exists(), timeout_s=120)
        fill(disk, 8 << 10)  # and it stays full
        out, _ = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
    produced = len(events_in(produced_path))
    assert run.returncode == 1, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("edgepipe: error: events were lost (see the errors above): faults ")
    lost = int(last.rsplit(" ", 1)[1])
    # every event is either in the outbox (stored before the disk filled) or counted lost: exactly
    import sqlite3

    stored = (
        sqlite3.connect(outbox)
        .execute("SELECT COUNT(*) FROM outbox WHERE topic LIKE '%/events'")
        .fetchone()[0]
    )
    print(f"\nfull disk, 10 messages of memory: produced {produced}, stored {stored}, reported lost {lost}")
    assert lost > 0 and stored + lost == produced
    assert "Traceback" not in out


def test_a_full_disk_under_the_events_file_keeps_every_line(
    small_disk: Callable[[int], Path], tmp_path: Path, vtest_20fps: Path
) -> None:
    disk = small_disk(1 << 20)
    events_path = disk / "events.jsonl"
    produced_path = tmp_path / "produced.jsonl"
    run = start(pipeline(tmp_path, vtest_20fps, f"  jsonl: {{path: {events_path}}}\n"), produced_path, 250)
    try:
        assert wait_until(lambda: events_path.exists(), timeout_s=120)
        filler = fill(disk, 0)
        before = len(events_in(produced_path))
        assert wait_until(lambda: len(events_in(produced_path)) >= before + 20, timeout_s=60)
        filler.unlink()
        out, _ = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out[-3000:]
    written = events_in(events_path)  # whole lines only: a half-written line would not parse
    assert [e["id"] for e in written] == [e["id"] for e in events_in(produced_path)]
    assert "cannot write the events file" in out and "can be written again" in out


def test_an_events_file_deleted_mid_run_is_written_anew(tmp_path: Path, vtest_20fps: Path) -> None:
    events_path = tmp_path / "out" / "events.jsonl"
    kept = tmp_path / "before-deletion.jsonl"
    produced_path = tmp_path / "produced.jsonl"
    run = start(pipeline(tmp_path, vtest_20fps, f"  jsonl: {{path: {events_path}}}\n"), produced_path, 250)
    try:
        assert wait_until(lambda: len(events_in(events_path)) >= 5, timeout_s=120)
        os.link(events_path, kept)  # what was written so far stays readable for the test
        events_path.unlink()  # like a user's rm, or log rotation without copytruncate
        out, _ = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out[-3000:]
    assert "was deleted or replaced: writing to a new one" in out
    before, after = events_in(kept), events_in(events_path)
    assert before and after
    assert [e["id"] for e in before + after] == [e["id"] for e in events_in(produced_path)]


def test_a_damaged_outbox_at_start_is_set_aside_and_the_run_goes_on(
    mosquitto: Callable[..., Broker], subscribe: Callable[..., Subscriber], tmp_path: Path, shared_data: Path
) -> None:
    broker = mosquitto()
    outbox = tmp_path / "outbox.sqlite"
    outbox.write_bytes(b"garbage header, not SQLite " * 400)
    mqtt = f"  mqtt: {{host: {broker.host}, port: {broker.port}, outbox: {{path: {outbox}}}}}\n"
    sub = subscribe(broker, EVENTS)
    produced_path = tmp_path / "produced.jsonl"
    video = shared_data / "video" / "vtest.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "edgepipe", "run", str(pipeline(tmp_path, video, mqtt, realtime=False)),
         "--events", str(produced_path), "--max-frames", "60"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"MQTT outbox {outbox} was damaged (file is not a database): moved it aside to" in result.stderr
    assert list(tmp_path.glob("outbox.sqlite.corrupt-*"))
    produced = {e["id"] for e in events_in(produced_path)}
    assert produced and sub.wait_for(lambda s: {p["id"] for p in s.payloads()} >= produced, timeout_s=30)


def test_no_secret_in_any_output_even_at_debug_level(
    mosquitto: Callable[..., Broker], tmp_path: Path, shared_data: Path
) -> None:
    """A camera URL with a password that keeps failing, a broker that refuses a password: `-vv` logs
    every reconnect and refusal, and neither password appears anywhere in stdout or stderr."""
    from tests.fixtures.rtsp import free_port

    secret_url, secret_mqtt = "Cam-S3cret-9f2", "Mqtt-S3cret-7c1"
    broker = mosquitto(users={"edge": "the-right-one"})
    config = tmp_path / "secrets.yml"
    config.write_text(
        f"name: secrets\nsource: {{type: rtsp, url: 'rtsp://admin:{secret_url}@127.0.0.1:{free_port()}/x', "
        "open_timeout_s: 0.5, read_timeout_s: 0.5, reconnect_initial_s: 0.1, reconnect_max_s: 0.2}\n"
        f"detector: {{model: {MODEL}}}\n"
        f"outputs:\n  mqtt: {{host: {broker.host}, port: {broker.port}, username: edge, password_env: EDGEPIPE_SECRET,"
        f" outbox: {{path: {tmp_path / 'o.sqlite'}}}}}\nstatus_interval_s: 0.5\n"
    )
    env = {**os.environ, "EDGEPIPE_SECRET": secret_mqtt}
    run = subprocess.Popen(
        [sys.executable, "-m", "edgepipe", "-vv", "run", str(config)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    lines: list[str] = []
    assert run.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(run.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        text = lambda: "".join(lines)  # noqa: E731
        # until the camera failed to open and the broker refused the password, each logged
        assert wait_until(
            lambda: "source rtsp://admin:***@" in text() and "refused the connection" in text(), 60
        )
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if run.poll() is None:
            run.kill()
    output = "".join(lines)
    assert run.returncode == 0, output[-3000:]
    assert secret_url not in output and secret_mqtt not in output
    assert "rtsp://admin:***@127.0.0.1" in output
    check = subprocess.run(
        [sys.executable, "-m", "edgepipe", "-vv", "check", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert secret_url not in check.stdout + check.stderr and secret_mqtt not in check.stdout + check.stderr
