"""MQTT publisher on paho-mqtt 2.x: events and counts go through the durable outbox, a sender
thread hands them to paho, and only the broker's PUBACK deletes them.

Threads: the frame loop only inserts outbox rows (`publish`, `publish_counts`); paho's network
thread (`loop_start`) connects, reconnects with capped exponential backoff and reports acks; one
sender thread moves rows from the outbox to paho with at most `max_inflight` unacknowledged. paho
calls `on_publish` while holding its own lock, so the callback only queues the message id and the
sender thread (the one owner of the mid → row map) deletes the row: no lock is taken by both
threads, hence no deadlock.

Within one process paho itself resends its unacknowledged messages after a reconnect (DUP flag),
so a row handed to paho is never handed over again; across processes the outbox is the truth and
the next start sends everything left, oldest first. A subscriber may therefore see a message twice
(QoS 1 is at-least-once): every event carries a unique `id` to drop duplicates by.

Topics (topics.py; README, "Events and topics"): `events` (QoS `qos`, not retained); `counts` (JSON)
and `counts/<rule>/<key>` (plain integers), retained, through the outbox, only the newest of each
pending; and, published directly and again on every connect, retained: `available` (`online`,
`offline` as the Last Will, `stopped` after a clean shutdown), `camera` (the source state) and
`status` (JSON stats). With Home Assistant discovery the configs are published on every connect,
and retained configs of this pipeline's device that are no longer among them (a rule was removed)
are cleared with an empty retained message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import ssl
import threading
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgepipe.config import MqttConfig, TlsConfig
from edgepipe.errors import FieldError, OutputError
from edgepipe.paths import state_directory
from edgepipe.publish.outbox import Outbox, check_outbox_path
from edgepipe.publish.topics import OFFLINE, ONLINE, STOPPED, Topics
from edgepipe.types import Counts, Event, utc_iso

log = logging.getLogger(__name__)

# A broker that stays away should not fill the log: one line per interval, with the attempt count.
_RETRY_LOG_INTERVAL_S = 30.0
# Home Assistant removes a cleared entity asynchronously: a config with the same unique id (an older
# edgepipe's config was cleared, edgepipe/publish/discovery.py) that it sees before then is refused, and
# one that comes just after gets a new entity id ("…_2"). Measured with HA 2024.3: sent again at once,
# "_2"; 3 s later, the old entity id. The configs are sent again this long after the last clear.
_DISCOVERY_SETTLE_S = 3.0


class _PipelineLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with the pipeline name."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.extra['pipeline'] if self.extra else '?'}: {msg}", kwargs


class _Throttle:
    """True at most once per interval; the first call is always True."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval_s
        return True

    def reset(self) -> None:
        self._next = 0.0


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """Load the TLS files now, so a file that is not what it should be fails at start-up (and in
    `check`) naming its field; the system CAs when no ca_file is given. (That the files exist and a
    key comes with its certificate, the config has checked.)"""
    ca_file, cert_file, key_file = tls.ca_file, tls.cert_file, tls.key_file
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else os.fspath(ca_file))
    except (ssl.SSLError, OSError, ValueError) as err:
        raise FieldError(("tls", "ca_file"), f"{ca_file} is not a PEM CA certificate: {err}") from err
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, OSError, ValueError) as err:
            raise FieldError(
                ("tls", "cert_file"),
                f"client certificate {cert_file} (key {key_file or 'in the same file'}) cannot be loaded: "
                f"{err}; check that both are PEM and belong together",
            ) from err
    if tls.insecure:
        context.check_hostname = False  # still verifies the chain; only the host name is not checked
    return context


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """An `outputs.mqtt` section with everything read and checked that can be before connecting:
    the password, the TLS files, the outbox location. `mqtt_settings` makes it, for `edgepipe run`
    and `edgepipe check` alike."""

    host: str
    port: int
    client_id: str
    keepalive_s: int
    qos: int
    topic_prefix: str
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None = field(repr=False)
    outbox_path: Path
    outbox_max_messages: int
    outbox_max_age_s: float
    outbox_max_memory_messages: int
    discovery: tuple[tuple[str, bytes], ...] = ()  # (topic, payload), retained on every connect
    # topic filters of this pipeline's discovery configs: retained ones not among `discovery` are cleared
    discovery_cleanup: tuple[str, ...] = ()

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"


def mqtt_settings(
    pipeline: str,
    cfg: MqttConfig,
    discovery: Sequence[tuple[str, bytes]] = (),
    discovery_cleanup: Sequence[str] = (),
) -> MqttSettings:
    """Read and check an `outputs.mqtt` section; problems are FieldErrors inside it."""
    password = cfg.password()
    outbox_path = cfg.outbox.path or state_directory() / f"{pipeline}-outbox.sqlite"
    try:
        check_outbox_path(outbox_path)
    except OutputError as err:
        raise FieldError(("outbox", "path"), str(err)) from None
    return MqttSettings(
        host=cfg.host,
        port=cfg.port,
        client_id=cfg.client_id or f"edgepipe-{pipeline}",
        keepalive_s=cfg.keepalive_s,
        qos=cfg.qos,
        topic_prefix=cfg.topic_prefix,
        tls=None if cfg.tls is None else tls_context(cfg.tls),  # a tls: section without ca_file: system CAs
        username=cfg.username,
        password=None if password is None else password.get_secret_value(),
        outbox_path=outbox_path,
        outbox_max_messages=cfg.outbox.max_messages,
        outbox_max_age_s=cfg.outbox.max_age_s,
        outbox_max_memory_messages=cfg.outbox.max_memory_messages,
        discovery=tuple(discovery),
        discovery_cleanup=tuple(discovery_cleanup),
    )


class MqttPublisher:
    """Publisher to one MQTT broker for one pipeline; see the module docstring."""

    def __init__(
        self,
        pipeline: str,
        settings: MqttSettings,
        *,
        max_inflight: int = 100,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 10,
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.broker = settings.broker
        self.qos = settings.qos
        self.username = settings.username
        self.topics = Topics.of(settings.topic_prefix, pipeline)
        self.events_topic, self.counts_topic, self.status_topic = (
            self.topics.events,
            self.topics.counts,
            self.topics.status,
        )
        self.max_inflight = max_inflight
        self.discovery = list(settings.discovery)
        self._discovery_topics = frozenset(topic for topic, _ in self.discovery)
        self.discovery_removed = 0  # retained configs of entities that are gone, cleared
        # when a config was last cleared (paho's thread), and the clear they were sent again for (sender)
        self._cleared_at: float | None = None
        self._resent_for: float | None = None
        self._log = _PipelineLog(log, {"pipeline": pipeline})

        # state seen by paho's thread too: plain attributes written by one side only
        self._connected = False
        self._closing = False
        self._closed = False
        self._status: dict[str, object] = {}
        self._camera: str | None = None  # the source state last heard of (status "source_state")
        self._count_values: dict[str, int] = {}  # plain count topic → value last queued; frame loop only
        self.sent = 0  # messages handed to paho
        self.delivered = 0  # acknowledged by the broker and deleted from the outbox
        self.rejected = 0  # acknowledged with a failure reason code (e.g. not authorised): deleted, logged
        self.reconnects = 0
        self.connect_failures = 0
        self._connect_throttle = _Throttle(_RETRY_LOG_INTERVAL_S)
        self._refused_throttle = _Throttle(_RETRY_LOG_INTERVAL_S)
        self._subscribe_throttle = _Throttle(_RETRY_LOG_INTERVAL_S)

        self._outbox = Outbox(
            settings.outbox_path,
            max_messages=settings.outbox_max_messages,
            max_age_s=settings.outbox_max_age_s,
        )
        if self._outbox.depth:
            self._log.info(
                "MQTT outbox %s holds %d messages from an earlier run",
                settings.outbox_path,
                self._outbox.depth,
            )
        self._acks: queue.SimpleQueue[tuple[int, ReasonCode | None]] = queue.SimpleQueue()
        # paho mid → (outbox row id, its outbox generation, topic); sender thread only
        self._inflight: dict[int, tuple[int, int, str]] = {}
        self._cursor = 0  # highest outbox row id handed to paho; sender thread only
        self._generation = self._outbox.generation  # of the rows the cursor counts in
        self._sender_problem: str | None = None  # the sender's last failure, while it lasts
        self._wake = threading.Event()
        self._stop = threading.Event()

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=mqtt.MQTTv5)
        if settings.tls is not None:
            client.tls_set_context(settings.tls)
            client.tls_insecure_set(not settings.tls.check_hostname)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        client.will_set(self.topics.available, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        # + the messages published beside the outbox (availability, camera, status); paho queues any beyond
        client.max_inflight_messages_set(max_inflight + 3)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        self._sender = threading.Thread(target=self._send_loop, name=f"mqtt-sender-{pipeline}", daemon=True)
        self._sender.start()
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        client.loop_start()

    # ------------------------------------------------------------ frame-loop side
    @property
    def connected(self) -> bool:
        """True only between an accepted CONNACK and the next disconnect."""
        return self._connected

    @property
    def outbox_depth(self) -> int:
        return self._outbox.depth

    def backlog(self) -> int | None:
        return self._outbox.depth

    def lost(self) -> int:
        return self._outbox.lost

    def problems(self) -> list[str]:
        """What keeps delivery from working normally right now (the outbox, the sender thread)."""
        return [p for p in (self._outbox.problem, self._sender_problem) if p is not None]

    @property
    def outbox_dropped(self) -> int:
        return self._outbox.dropped

    def publish(self, event: Event) -> None:
        """Queue one event (an SQLite insert); the sender thread delivers it."""
        self._put(self.events_topic, event.to_json().encode(), retain=False, replace_key=None)

    def publish_counts(self, counts: Counts) -> None:
        """Queue the retained totals, replacing any not yet sent: the JSON, and each plain integer
        that changed since it was last queued (all of them the first time)."""
        # e.g. {"door": {"in": 3, "out": 1, "by_label": {...}}}, so templates read value_json.door.in
        self._put(self.counts_topic, _dumps(counts), retain=True, replace_key=self.counts_topic)
        for topic, value in self.topics.count_values(counts):
            if self._count_values.get(topic) != value:
                self._put(topic, str(value).encode(), retain=True, replace_key=topic)
                self._count_values[topic] = value

    def publish_status(self, status: dict[str, object]) -> None:
        """Publish retained stats now if connected, and the camera state when it changed (not
        queued: only the newest matters and both are sent again on every connect)."""
        self._status = dict(status)
        camera = status.get("source_state")
        camera_changed = isinstance(camera, str) and camera != self._camera
        if camera_changed:
            self._camera = str(camera)
        if self._connected:
            if camera_changed:
                self._client.publish(self.topics.camera, self._camera, qos=1, retain=True)
            self._client.publish(self.status_topic, self._status_payload(), qos=1, retain=True)

    def stats(self) -> dict[str, object]:
        return {
            "connected": self._connected,
            "outbox_depth": self._outbox.depth,
            "outbox_dropped": self._outbox.dropped,
            "outbox_held_in_memory": self._outbox.held_in_memory,
            "outbox_recoveries": self._outbox.recoveries,
            "lost": self._outbox.lost,
            "sent": self.sent,
            "delivered": self.delivered,
            "rejected": self.rejected,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
        }

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what can be sent within `timeout_s`, publish "stopped", disconnect. Whatever is
        left stays in the outbox for the next start; without an acknowledged "stopped" the broker
        publishes the Last Will ("offline")."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        # Not only while connected: a short run may end before the first CONNACK has arrived.
        while self._outbox.depth and time.monotonic() < deadline:
            time.sleep(0.02)
        stopped_sent = False
        if self._connected:
            info = self._client.publish(self.topics.available, STOPPED, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # connection lost meanwhile
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            stopped_sent = info.is_published()
        self._closing = True
        # Without an acknowledged "stopped", ask the broker to publish the Last Will (MQTT 5, reason 4).
        self._client.disconnect(None if stopped_sent else ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        self._client.loop_stop()
        self._stop.set()
        self._wake.set()
        self._sender.join()
        left = self._outbox.depth
        self._outbox.close()
        if left:
            self._log.warning(
                "%d MQTT messages not yet acknowledged by %s stay in the outbox for the next start",
                left,
                self.broker,
            )

    def __enter__(self) -> MqttPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, topic: str, payload: bytes, *, retain: bool, replace_key: str | None) -> None:
        # Never raises for a disk problem: the outbox holds the message in memory and says so.
        self._outbox.put(topic, payload, qos=self.qos, retain=retain, replace_key=replace_key)
        self._wake.set()

    def _status_payload(self) -> bytes:
        payload: dict[str, object] = {"pipeline": self.pipeline, "ts": utc_iso(time.time())}
        payload.update(self._status)
        payload["mqtt"] = self.stats()
        return _dumps(payload)

    # ------------------------------------------------------------ paho network thread
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: object,
    ) -> None:
        if reason_code.is_failure:
            self._connected = False
            self.connect_failures += 1
            if self._refused_throttle():
                who = f"user {self.username!r}" if self.username is not None else "anonymous clients"
                self._log.error(
                    "MQTT broker %s refused the connection (%s) for %s: check username and password "
                    "(password_file / password_env) and the broker's ACL; retrying, events wait in the outbox "
                    "(%d queued)",
                    self.broker,
                    reason_code,
                    who,
                    self._outbox.depth,
                )
            return
        self._connected = True
        self._connect_throttle.reset()
        self._refused_throttle.reset()
        self._log.info("connected to MQTT broker %s (%d messages queued)", self.broker, self._outbox.depth)
        client.publish(self.topics.available, ONLINE, qos=1, retain=True)
        if self._camera is not None:
            client.publish(self.topics.camera, self._camera, qos=1, retain=True)
        if self._status:
            client.publish(self.status_topic, self._status_payload(), qos=1, retain=True)
        for topic, payload in self.discovery:
            client.publish(topic, payload, qos=1, retain=True)
        if self.settings.discovery_cleanup:
            # The broker sends the retained configs under these filters; noLocal: not our own clears.
            options = SubscribeOptions(qos=1, noLocal=True)
            client.subscribe([(topic, options) for topic in self.settings.discovery_cleanup])
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """A retained discovery config of this device (`discovery_cleanup`): clear it if its entity is
        gone (a rule removed or renamed, a config of an older edgepipe), so Home Assistant removes it."""
        if not message.retain or not message.payload or message.topic in self._discovery_topics:
            return
        client.publish(message.topic, b"", qos=1, retain=True)
        self.discovery_removed += 1
        self._log.info("removed the Home Assistant entity of %s: it is no longer published", message.topic)
        self._cleared_at = time.monotonic()  # the sender thread sends the configs again (see there)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: object,
    ) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused and self._subscribe_throttle():
            self._log.warning(
                "MQTT broker %s refused the subscription to this pipeline's Home Assistant configs (%s): entities "
                "of removed rules are not cleared; the broker's ACL must let this user read %s",
                self.broker,
                ", ".join(refused),
                " and ".join(self.settings.discovery_cleanup[:1]),
            )

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self.connect_failures += 1
        if self._connect_throttle():
            self._log.warning(
                "cannot connect to MQTT broker %s (%d failed attempts so far): check host, port and TLS "
                "settings and that the broker runs; retrying with backoff, events wait in the outbox (%d queued)",
                self.broker,
                self.connect_failures,
                self._outbox.depth,
            )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: object,
    ) -> None:
        was_connected, self._connected = self._connected, False
        if self._closing or not was_connected:
            return
        self.reconnects += 1
        self._log.warning(
            "lost the connection to MQTT broker %s (%s); reconnecting, events wait in the outbox",
            self.broker,
            reason_code,
        )

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason_code: ReasonCode, properties: object
    ) -> None:
        # Called under paho's message lock: only hand the ack over, never touch state the sender owns.
        self._acks.put((mid, reason_code))
        self._wake.set()

    # ------------------------------------------------------------ sender thread
    def _send_loop(self) -> None:
        """Runs for the publisher's lifetime whatever happens: a failure is logged once with its
        cause, reported by `problems()` (so the status says degraded), and retried."""
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(0.5 if failures == 0 else min(0.5 * 2**failures, 5.0))
            self._wake.clear()
            try:
                self._take_acks()
                if self._connected and not self._stop.is_set():
                    self._send_pending()
                    self._resend_discovery()
            except Exception as err:
                failures += 1
                problem = f"the MQTT sender failed: {type(err).__name__}: {err}"
                if problem != self._sender_problem:
                    self._log.error("%s; retrying", problem)
                self._sender_problem = problem
                continue
            if self._sender_problem is not None:
                self._log.warning("the MQTT sender works again (after: %s)", self._sender_problem)
            self._sender_problem, failures = None, 0
        with contextlib.suppress(Exception):
            self._take_acks()

    def _resend_discovery(self) -> None:
        """The discovery configs again, `_DISCOVERY_SETTLE_S` after configs were cleared (see there)."""
        cleared_at = self._cleared_at
        if cleared_at is None or cleared_at == self._resent_for:
            return
        if time.monotonic() - cleared_at < _DISCOVERY_SETTLE_S:
            return
        self._resent_for = cleared_at
        for topic, payload in self.discovery:
            self._client.publish(topic, payload, qos=1, retain=True)

    def _take_acks(self) -> None:
        while True:
            try:
                mid, reason_code = self._acks.get_nowait()
            except queue.Empty:
                return
            sent = self._inflight.pop(mid, None)
            if sent is None:
                continue  # a status message, published directly
            row_id, generation, topic = sent
            # Gone from the outbox before it is counted: whoever reads `delivered` sees the depth agree.
            self._outbox.ack(row_id, generation)
            if reason_code is not None and reason_code.is_failure:
                # Sending it again would be refused again (e.g. the ACL forbids the topic).
                self.rejected += 1
                self._log.error(
                    "MQTT broker %s refused a message on %s (%s): it is dropped; check the broker's ACL",
                    self.broker,
                    topic,
                    reason_code,
                )
            else:
                self.delivered += 1

    def _send_pending(self) -> None:
        if self._outbox.generation != self._generation:  # a damaged outbox was replaced: ids start over
            self._generation, self._cursor = self._outbox.generation, 0
        free = self.max_inflight - len(self._inflight)
        if free <= 0:
            return
        for message in self._outbox.pending(self._cursor, free):
            info = self._client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
            # NO_CONN: paho keeps the message and sends it after the next CONNACK, like its in-flight ones
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                self._log.warning(
                    "paho refused to queue a message (%s); retrying later", mqtt.error_string(info.rc)
                )
                return
            self._inflight[info.mid] = (message.id, self._generation, message.topic)
            self._cursor = message.id
            self.sent += 1


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
