"""`edgepipe check` against real MQTT brokers: it connects as `run` would (TLS, username and
password) and reports a broker it cannot reach, one that refuses the credentials and a certificate
it cannot trust as one `FILE:LINE: outputs.mqtt: …` line each, never with the password; `--no-broker`
leaves the brokers alone; and a check never takes over the connection of a pipeline that runs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgepipe.config import MqttConfig
from edgepipe.publish.mqtt import MqttPublisher, mqtt_settings
from tests.fixtures.mqtt import Broker, Subscriber, TlsFiles, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "nanodet-plus-m_320_fp16.xml"
VIDEO = REPO.parent / "shared" / "data" / "video" / "vtest.mp4"


def pipeline_file(tmp_path: Path, name: str, mqtt: str) -> Path:
    """A pipeline whose `outputs.mqtt` section is `mqtt` (YAML lines indented by four), at line 5."""
    path = tmp_path / f"{name}.yml"
    path.write_text(
        f"name: {name}\nsource: {{type: file, path: {VIDEO}}}\n"
        f"detector: {{model: {MODEL}}}\noutputs:\n  mqtt:\n{mqtt}"
        f"    outbox: {{path: {tmp_path / name}-outbox.sqlite}}\n"
    )
    return path


def check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgepipe", "check", "--no-source", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_connects_to_each_broker_and_reports_the_ones_that_fail(
    mosquitto: Callable[..., Broker], tls_files: TlsFiles, tmp_path: Path
) -> None:
    plain = mosquitto()
    secured = mosquitto(users={"edge": "right-horse-battery"})
    tls = mosquitto(tls=tls_files, require_client_cert=True)
    (tmp_path / "right").write_text("right-horse-battery\n")
    (tmp_path / "wrong").write_text("wrong-staple-42\n")
    nobody = free_port()
    client_cert = f"cert_file: {tls_files.client_cert}, key_file: {tls_files.client_key}"
    files = {
        "reachable": f"    host: 127.0.0.1\n    port: {plain.port}\n",
        "password": f"    host: 127.0.0.1\n    port: {secured.port}\n    username: edge\n"
        f"    password_file: {tmp_path / 'right'}\n",
        "tls": f"    host: 127.0.0.1\n    port: {tls.port}\n    tls: {{ca_file: {tls_files.ca}, {client_cert}}}\n",
        "unreachable": f"    host: 127.0.0.1\n    port: {nobody}\n",
        "refused": f"    host: 127.0.0.1\n    port: {secured.port}\n    username: edge\n"
        f"    password_file: {tmp_path / 'wrong'}\n",
        "untrusted": f"    host: 127.0.0.1\n    port: {tls.port}\n    tls: {{ca_file: {tls_files.client_cert}}}\n",
        "plain-to-tls": f"    host: 127.0.0.1\n    port: {plain.port}\n    tls: {{ca_file: {tls_files.ca}}}\n",
    }
    paths = {name: pipeline_file(tmp_path, name, mqtt) for name, mqtt in files.items()}
    result = check(*paths.values())
    assert result.returncode == 2
    model = MODEL.name
    assert result.stdout.splitlines() == [
        f"{paths['reachable']}: ok (reachable: 0 rules, model {model}, MQTT broker 127.0.0.1:{plain.port})",
        f"{paths['password']}: ok (password: 0 rules, model {model}, MQTT broker 127.0.0.1:{secured.port})",
        f"{paths['tls']}: ok (tls: 0 rules, model {model}, MQTT broker 127.0.0.1:{tls.port})",
    ]
    lines = result.stderr.removeprefix("edgepipe: error: ").splitlines()
    assert lines == [
        f"{paths['unreachable']}:5: outputs.mqtt: cannot reach MQTT broker 127.0.0.1:{nobody} (Connection "
        "refused): check host and port, and that the broker runs",
        f"{paths['refused']}:5: outputs.mqtt: MQTT broker 127.0.0.1:{secured.port} refused the connection (Not "
        "authorized) for user 'edge': check username and password (password_file / password_env) and the "
        "broker's ACL",
        f"{paths['untrusted']}:5: outputs.mqtt: the TLS certificate of MQTT broker 127.0.0.1:{tls.port} is not "
        "trusted (self-signed certificate in certificate chain): check tls.ca_file and that the broker's "
        "certificate names this host",
        f"{paths['plain-to-tls']}:5: outputs.mqtt: MQTT broker 127.0.0.1:{plain.port} closed the connection "
        "during the TLS handshake (Connection reset by peer): check that the port speaks TLS if and only if a "
        "tls: section is given, and the broker's listener settings",
    ]
    assert "wrong-staple-42" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_no_broker_leaves_the_broker_alone(tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, "away", f"    host: 127.0.0.1\n    port: {free_port()}\n")
    result = check("--no-broker", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: ok (away: 0 rules, model {MODEL.name})\n"


def test_check_does_not_take_over_a_running_pipelines_connection(
    broker: Broker, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    """MQTT lets one connection per client id: a check with the pipeline's id would throw the
    running pipeline off (and its Last Will would say offline). The check uses `<id>-check`."""
    sub = subscribe(broker, "edgepipe/door/available")
    cfg = MqttConfig.model_validate(
        {"host": broker.host, "port": broker.port, "outbox": {"path": tmp_path / "running.sqlite"}}
    )
    running = MqttPublisher("door", mqtt_settings("door", cfg))
    try:
        assert wait_until(lambda: running.connected, timeout_s=10)
        path = pipeline_file(tmp_path, "door", f"    host: 127.0.0.1\n    port: {broker.port}\n")
        assert check(path).returncode == 0
        assert running.connected and running.reconnects == 0
        assert sub.texts() == ["online"]
    finally:
        running.close()
