"""`edgepipe check`'s look at a broker: connect as `edgepipe run` would, and say in one line what
went wrong if it did (unreachable, TLS, refused credentials, no answer)."""

from __future__ import annotations

import queue
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edgepipe.errors import BrokerError
from edgepipe.publish.mqtt import MqttSettings


def probe_broker(settings: MqttSettings, timeout_s: float) -> None:
    """Connect to the broker as `edgepipe run` would (TLS, username and password) and disconnect;
    a BrokerError (one line, no password) if it cannot be reached, the TLS handshake fails, it
    refuses the credentials or does not answer within `timeout_s`. For `edgepipe check`: the client
    id is the pipeline's with `-check` appended, so a running pipeline is not taken over, and no
    Last Will is set, so nothing is published."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{settings.client_id}-check", protocol=mqtt.MQTTv5
    )
    client.connect_timeout = timeout_s
    if settings.tls is not None:
        client.tls_set_context(settings.tls)
        client.tls_insecure_set(not settings.tls.check_hostname)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    answers: queue.SimpleQueue[ReasonCode] = queue.SimpleQueue()
    client.on_connect = lambda _c, _u, _f, reason_code, _p: answers.put(reason_code)
    who = f"user {settings.username!r}" if settings.username is not None else "anonymous clients"
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except ssl.SSLCertVerificationError as err:
        raise BrokerError(
            f"the TLS certificate of MQTT broker {settings.broker} is not trusted ({err.verify_message}): "
            "check tls.ca_file and that the broker's certificate names this host"
        ) from None
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLEOFError) as err:
        during = "during the TLS handshake" if settings.tls is not None else "at once"
        raise BrokerError(
            f"MQTT broker {settings.broker} closed the connection {during} ({err.strerror or err}): check "
            "that the port speaks TLS if and only if a tls: section is given, and the broker's listener settings"
        ) from None
    except ssl.SSLError as err:
        raise BrokerError(
            f"the TLS handshake with MQTT broker {settings.broker} failed ({err.reason or err}): check the tls "
            "settings and that the port speaks TLS"
        ) from None
    except OSError as err:
        raise BrokerError(
            f"cannot reach MQTT broker {settings.broker} ({err.strerror or err}): check host and port, and "
            "that the broker runs"
        ) from None
    client.loop_start()
    try:
        reason_code = answers.get(timeout=timeout_s)
    except queue.Empty:
        raise BrokerError(
            f"MQTT broker {settings.broker} accepted the connection but gave no answer within {timeout_s:g} s: "
            "is it an MQTT broker, and does the port expect TLS?"
        ) from None
    finally:
        client.disconnect()
        client.loop_stop()
    if reason_code.is_failure:
        raise BrokerError(
            f"MQTT broker {settings.broker} refused the connection ({reason_code}) for {who}: check username "
            "and password (password_file / password_env) and the broker's ACL"
        )
