"""MqttPublisher against a real mosquitto and a real paho subscriber: exact payloads, retained
counts/status, Last Will, bad settings. The broker outage and the SIGKILL with the broker down run
end to end through `edgepipe run` in tests/test_pipeline_mqtt.py."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from edgepipe.config import MqttConfig
from edgepipe.errors import FieldError
from edgepipe.publish.discovery import RuleEntities, discovery_messages, discovery_scope, legacy_topics
from edgepipe.publish.mqtt import MqttPublisher, MqttSettings, mqtt_settings
from edgepipe.publish.outbox import Outbox
from edgepipe.types import Event
from tests.fixtures.mqtt import Broker, Subscriber, TlsFiles, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EVENTS = "edgepipe/door/events"
COUNTS = "edgepipe/door/counts"
STATUS = "edgepipe/door/status"
AVAILABLE = "edgepipe/door/available"


def event(n: int) -> Event:
    return Event(
        "line_cross", "door", "entry", 1_800_000_000.0 + n,
        track_id=n, label="person", score=0.9, bbox=(1, 2, 3, 4), frame=n, direction="in",
    )  # fmt: skip


def settings(
    host: str,
    port: int,
    outbox: Path,
    *,
    password: str | None = None,
    discovery: Sequence[tuple[str, bytes]] = (),
    scope: str | None = None,
    **section: Any,
) -> MqttSettings:
    """An `outputs.mqtt` section read as `edgepipe run` reads it; a password given inline (the
    config only takes it from a file or a variable)."""
    cfg = MqttConfig.model_validate({"host": host, "port": port, "outbox": {"path": outbox}, **section})
    cleanup = () if scope is None else (scope,)
    return dataclasses.replace(mqtt_settings("door", cfg, discovery, cleanup), password=password)


def publisher(broker: Broker, tmp_path: Path, **kwargs: Any) -> MqttPublisher:
    return MqttPublisher(
        "door", settings(broker.host, broker.port, tmp_path / "outbox.sqlite", **kwargs), reconnect_max_s=1
    )


def outbox_depth(path: Path) -> int:
    box = Outbox(path)
    depth = box.depth
    box.close()
    return depth


def ids(messages: list[dict[str, object]]) -> list[str]:
    return [str(m["id"]) for m in messages]


def test_events_counts_and_status_reach_a_subscriber_exactly(
    broker: Broker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    sub = subscribe(broker, "edgepipe/#")
    pub = publisher(broker, tmp_path)
    events = [event(n) for n in range(20)]
    for e in events:  # published at once, most of them before the CONNACK
        pub.publish(e)
    pub.publish_counts({"entry": {"in": 20, "out": 0}})
    assert sub.wait_for(lambda s: len(s.payloads(EVENTS)) == 20 and len(s.payloads(COUNTS)) == 1)
    assert sub.payloads(EVENTS) == [e.to_dict() for e in events]  # every field, in order
    assert sub.payloads(COUNTS)[0] == {"entry": {"in": 20, "out": 0}}
    pub.publish_status({"fps": 12.5, "frames": 100})
    assert sub.wait_for(lambda s: any("fps" in p for p in s.payloads(STATUS)))
    assert pub.connected
    # the subscriber can see a message before the publisher's sender thread has taken its PUBACK
    wait_until(lambda: pub.delivered >= 23, timeout_s=10)
    assert (pub.delivered, pub.outbox_depth) == (23, 0)  # 20 events, the JSON counts, 2 plain ones
    pub.close()
    assert sub.wait_for(lambda s: s.texts(AVAILABLE) == ["online", "stopped"])  # a clean close: stopped
    stats = sub.payloads(STATUS)[-1]
    assert (stats["fps"], stats["frames"], stats["pipeline"]) == (12.5, 100, "door")
    assert "state" not in stats  # availability has its own topic
    assert outbox_depth(tmp_path / "outbox.sqlite") == 0
    # a late subscriber gets the retained totals, the plain ones, the stats and "stopped"
    late = subscribe(broker, "edgepipe/door/#")
    assert late.wait_for(lambda s: len(s.messages) == 5)
    assert late.retained() == {
        COUNTS: '{"entry":{"in":20,"out":0}}',
        f"{COUNTS}/entry/in": "20",
        f"{COUNTS}/entry/out": "0",
        STATUS: late.texts(STATUS)[0],
        AVAILABLE: "stopped",
    }
    assert all(retain for _, _, retain in late.messages)
    assert ids(sub.payloads(EVENTS)) == [e.id for e in events]


def test_close_right_after_publish_still_delivers(
    broker: Broker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    """A short run may end before the first CONNACK: close() waits for the backlog, not only
    while connected."""
    sub = subscribe(broker, EVENTS)
    pub = publisher(broker, tmp_path)
    sent = [event(n) for n in range(3)]
    for e in sent:
        pub.publish(e)
    pub.close(timeout_s=10)
    assert outbox_depth(tmp_path / "outbox.sqlite") == 0
    assert sub.wait_for(lambda s: len(s.messages) == 3)
    assert sub.payloads() == [e.to_dict() for e in sent]


def test_only_the_latest_counts_are_kept_while_disconnected(
    mosquitto: Callable[..., Broker], subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    broker = mosquitto(start=False)
    pub = publisher(broker, tmp_path)
    for n in range(1, 6):
        pub.publish_counts({"entry": {"in": n}})
    assert pub.outbox_depth == 2  # the JSON and the plain counts/entry/in
    pub.close(0.1)
    broker.start()
    sub = subscribe(broker, f"{COUNTS}/#")
    pub = publisher(broker, tmp_path)
    assert sub.wait_for(lambda s: len(s.messages) == 2)
    assert sub.retained() == {COUNTS: '{"entry":{"in":5}}', f"{COUNTS}/entry/in": "5"}
    pub.close()


def test_last_will_says_offline_when_the_process_dies(
    broker: Broker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    child = (
        "import os, signal, sys, time\n"
        "from edgepipe.publish.mqtt import MqttPublisher\n"
        "from tests.publish.test_mqtt import settings\n"
        "p = MqttPublisher('door', settings('127.0.0.1', int(sys.argv[1]), sys.argv[2], keepalive_s=5))\n"
        "while not p.connected: time.sleep(0.05)\n"
        "print('connected', flush=True)\n"
        "time.sleep(60)\n"
    )
    sub = subscribe(broker, AVAILABLE)
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(broker.port), str(tmp_path / "o.sqlite")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
        assert sub.wait_for(lambda s: s.texts() == ["online"])
    finally:
        proc.kill()  # the socket closes without DISCONNECT: the broker publishes the will
        proc.wait()
    assert sub.wait_for(lambda s: s.texts() == ["online", "offline"])


# ---------------------------------------------------------------- bad settings
@pytest.mark.slow
def test_unreachable_broker_logs_a_retry_line_and_keeps_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens here
    with caplog.at_level(logging.INFO, logger="edgepipe.publish"):
        pub = MqttPublisher("door", settings("127.0.0.1", port, tmp_path / "o.sqlite"), reconnect_max_s=1)
        for n in range(5):
            pub.publish(event(n))  # never blocks, never raises
        wait_until(lambda: pub.connect_failures >= 2, timeout_s=10)
        assert not pub.connected
        pub.close(timeout_s=0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"door: cannot connect to MQTT broker 127.0.0.1:{port} (1 failed attempts so far)" in warnings[0]
    assert "events wait in the outbox" in warnings[0]
    # rate-limited: two failures, one line (plus the closing note about the outbox)
    assert sum("cannot connect" in w for w in warnings) == 1
    assert "5 MQTT messages not yet acknowledged" in warnings[-1]
    assert "Traceback" not in caplog.text
    assert outbox_depth(tmp_path / "o.sqlite") == 5


def test_wrong_password_is_a_clear_error_and_never_logged(
    mosquitto: Callable[..., Broker], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mosquitto(users={"edge": "right-horse-battery"})
    # The event is queued before the publisher exists: a publish() after construction races the
    # broker's refusal, and the error line would then say "0 queued" or "1 queued" by chance.
    backlog = Outbox(tmp_path / "outbox.sqlite")
    backlog.put(EVENTS, json.dumps(event(1).to_dict()).encode(), qos=1, retain=False)
    backlog.close()
    with caplog.at_level(logging.INFO, logger="edgepipe.publish"):
        pub = publisher(broker, tmp_path, username="edge", password="wrong-staple-42")
        wait_until(lambda: pub.connect_failures >= 2, timeout_s=10)
        assert not pub.connected
        pub.close(timeout_s=0.5)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"door: MQTT broker 127.0.0.1:{broker.port} refused the connection (Not authorized) for user 'edge': "
        "check username and password (password_file / password_env) and the broker's ACL; retrying, "
        "events wait in the outbox (1 queued)"
    ]
    assert "wrong-staple-42" not in caplog.text
    assert outbox_depth(tmp_path / "outbox.sqlite") == 1


def test_right_password_delivers(
    mosquitto: Callable[..., Broker], subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    broker = mosquitto(users={"edge": "right-horse-battery"})
    sub = subscribe(broker, EVENTS, username="edge", password="right-horse-battery")
    pub = publisher(broker, tmp_path, username="edge", password="right-horse-battery")
    sent = event(7)
    pub.publish(sent)
    assert sub.wait_for(lambda s: len(s.messages) == 1)
    assert sub.payloads() == [sent.to_dict()]
    pub.close()


def test_a_message_the_broker_refuses_is_dropped_with_an_error_not_retried_forever(
    mosquitto: Callable[..., Broker], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The ACL lets `edge` write the counts topics but not the events topic: PUBACK "Not authorized".
    # (The Last Will's topic must be allowed: mosquitto refuses a CONNECT whose will it may not publish.)
    acl = "user edge\ntopic write edgepipe/door/counts/#\ntopic write edgepipe/door/available\n"
    broker = mosquitto(users={"edge": "pw"}, acl=acl)
    with caplog.at_level(logging.ERROR, logger="edgepipe.publish"):
        pub = publisher(broker, tmp_path, username="edge", password="pw")
        pub.publish(event(1))
        pub.publish_counts({"entry": {"in": 1}})
        wait_until(lambda: pub.delivered + pub.rejected >= 3, timeout_s=10)
        pub.close()
    assert (pub.delivered, pub.rejected) == (2, 1)  # counts and counts/entry/in; not the event
    assert (
        f"MQTT broker 127.0.0.1:{broker.port} refused a message on edgepipe/door/events (Not authorized): it is dropped"
        in caplog.text
    )
    assert outbox_depth(tmp_path / "outbox.sqlite") == 0


def test_tls_with_ca_and_client_certificate_delivers(
    mosquitto: Callable[..., Broker], tls_files: TlsFiles, tmp_path: Path
) -> None:
    broker = mosquitto(tls=tls_files, require_client_cert=True)
    pub = publisher(
        broker,
        tmp_path,
        tls={"ca_file": tls_files.ca, "cert_file": tls_files.client_cert, "key_file": tls_files.client_key},
    )
    for n in range(3):
        pub.publish(event(n))
    wait_until(lambda: pub.delivered >= 3, timeout_s=10)
    assert (pub.connected, pub.delivered, pub.outbox_depth) == (True, 3, 0)
    pub.close()


def test_tls_with_a_ca_that_did_not_sign_the_server_retries_with_a_warning(
    mosquitto: Callable[..., Broker], tls_files: TlsFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mosquitto(tls=tls_files)
    with caplog.at_level(logging.WARNING, logger="edgepipe.publish"):
        pub = publisher(broker, tmp_path, tls={"ca_file": tls_files.client_cert})  # a certificate, not our CA
        wait_until(lambda: pub.connect_failures >= 1, timeout_s=10)
        assert not pub.connected
        pub.close(timeout_s=0.1)
    assert f"cannot connect to MQTT broker 127.0.0.1:{broker.port}" in caplog.text
    assert "check host, port and TLS settings" in caplog.text


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("garbage_ca", r"tls.ca_file: .*garbage.crt is not a PEM CA certificate"),
        (
            "mismatched_key",
            r"tls.cert_file: client certificate .*client.crt \(key .*server.key\) cannot be loaded",
        ),
    ],
)
def test_bad_tls_files_fail_before_any_connection_naming_the_field(
    kind: str, message: str, tls_files: TlsFiles, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    table: dict[str, dict[str, object]] = {
        "garbage_ca": {"ca_file": garbage},
        "mismatched_key": {
            "ca_file": tls_files.ca,
            "cert_file": tls_files.client_cert,
            "key_file": tls_files.server_key,
        },
    }
    with pytest.raises(FieldError, match=message):
        settings("127.0.0.1", 1, tmp_path / "o.sqlite", tls=table[kind])
    assert not (tmp_path / "o.sqlite").exists()  # nothing was created: `check` can run this safely


def door_discovery(rules: Sequence[RuleEntities]) -> list[tuple[str, bytes]]:
    return discovery_messages("door", rules, event_types=["line_cross"], model="test model")


def test_home_assistant_discovery_is_published_retained_on_connect(
    broker: Broker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    messages = door_discovery([RuleEntities("entry", ("in", "out"), ("person",))])
    pub = publisher(broker, tmp_path, discovery=messages, scope=discovery_scope("door"))
    pub.publish_counts({"entry": {"in": 4, "out": 1}})
    pub.close()
    sub = subscribe(broker, "homeassistant/#")  # after the fact: retained
    assert sub.wait_for(lambda s: len(s.messages) == len(messages)), [(t, len(p)) for t, p, _ in sub.messages]
    assert sub.retained() == {topic: payload.decode() for topic, payload in messages}
    config = json.loads(sub.retained()["homeassistant/sensor/edgepipe_door/entry_in/config"])
    assert config["state_topic"] == f"{COUNTS}/entry/in"
    assert config["availability_mode"] == "all"
    assert [a["topic"] for a in config["availability"]] == [AVAILABLE, "edgepipe/door/camera"]


def test_discovery_clears_the_entities_of_a_rule_that_is_gone(
    broker: Broker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    """A rule removed from the pipeline file: its retained configs are cleared at the next connect
    (an empty retained message is how Home Assistant deletes an entity), the others stay."""
    before = door_discovery(
        [RuleEntities("entry", ("in", "out"), None), RuleEntities("desk", ("occupancy",), None)]
    )
    after = door_discovery([RuleEntities("entry", ("in", "out"), None)])
    pub = publisher(broker, tmp_path, discovery=before, scope=discovery_scope("door"))
    assert wait_until(lambda: pub.connected, timeout_s=10)
    pub.close()
    other = subscribe(broker, "homeassistant/#")  # another device's config is left alone
    other.client.publish("homeassistant/sensor/other_device/x/config", b'{"name": "x"}', qos=1, retain=True)
    watcher = subscribe(broker, "homeassistant/sensor/edgepipe_door/desk_occupancy/config")
    assert watcher.wait_for(lambda s: len(s.messages) == 1)  # retained from the first run
    pub = publisher(broker, tmp_path, discovery=after, scope=discovery_scope("door"))
    assert watcher.wait_for(lambda s: s.texts()[-1] == "")  # cleared
    assert pub.discovery_removed == 1
    pub.close()
    late = subscribe(broker, "homeassistant/#")
    expected = {topic for topic, _ in after} | {"homeassistant/sensor/other_device/x/config"}
    assert late.wait_for(lambda s: set(s.retained()) == expected)


def test_discovery_clears_the_configs_an_older_edgepipe_left(
    broker: Broker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    """edgepipe 0.2 published `homeassistant/sensor/edgepipe_door_entry_in/config`, with the unique id
    today's entry_in sensor has: Home Assistant would refuse the new config while the old is retained."""
    old = "homeassistant/sensor/edgepipe_door_entry_in/config"
    keeper = subscribe(broker, "homeassistant/#")
    keeper.client.publish(old, b'{"unique_id": "edgepipe_door_entry_in"}', qos=1, retain=True)
    rules = [RuleEntities("entry", ("in", "out"), None)]
    cleanup = (discovery_scope("door"), *legacy_topics("door", rules))
    assert old in cleanup
    cfg = MqttConfig.model_validate(
        {"host": broker.host, "port": broker.port, "outbox": {"path": tmp_path / "o.sqlite"}}
    )
    pub = MqttPublisher("door", mqtt_settings("door", cfg, door_discovery(rules), cleanup))
    assert keeper.wait_for(lambda s: s.texts(old)[-1:] == [""])
    pub.close()
    late = subscribe(broker, "homeassistant/#")
    assert late.wait_for(lambda s: set(s.retained()) == {topic for topic, _ in door_discovery(rules)})


def test_an_outbox_damaged_while_running_is_repaired_and_delivery_goes_on(
    mosquitto: Callable[..., Broker], subscribe: Callable[..., Subscriber], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """8 KiB of garbage in the middle of the outbox of a running publisher (the sender thread used to
    die on it, silently): the damage is repaired, what can be read is delivered, the rest is
    counted lost, and the publisher stays healthy."""
    broker = mosquitto(persistence=True)
    sub = subscribe(broker, EVENTS, session=True, client_id="damaged-sub")
    broker.stop()
    pub = publisher(broker, tmp_path)
    produced = [event(n) for n in range(3000)]
    for e in produced:
        pub.publish(e)
    outbox = pub._outbox
    with outbox._lock:
        outbox._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        outbox._db.execute("PRAGMA cache_size=0")
        size = (tmp_path / "outbox.sqlite").stat().st_size
        with (tmp_path / "outbox.sqlite").open("r+b") as handle:
            handle.seek(size // 2)
            handle.write(bytes(range(256)) * 32)
    with caplog.at_level(logging.ERROR, logger="edgepipe.publish"):
        broker.start()
        assert wait_until(lambda: pub.connected and pub.backlog() == 0, timeout_s=60)
    assert pub.problems() == []
    assert sub.wait_for(lambda s: len({p["id"] for p in s.payloads()}) == 3000 - pub.lost(), timeout_s=30)
    received = {p["id"] for p in sub.payloads()}
    assert received <= {e.id for e in produced}
    assert 0 < pub.lost() < 100 and len(received) + pub.lost() == 3000
    assert any("was damaged" in r.getMessage() for r in caplog.records)
    pub.close()
