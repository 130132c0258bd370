"""Home Assistant itself, for the discovery tests: its MQTT discovery schemas, and a real instance.

Run with the Python of `.venv-ha` (homeassistant==2024.3.3, the newest that installs on Python
3.11; `scripts/test` makes that venv), never the project's:

    .venv-ha/bin/python tests/home_assistant.py validate < messages.json
        [[topic, payload], ...] on stdin → one JSON object per message on stdout: the component, the
        schema's error (or null) and the keys the schema does not know. Home Assistant's schemas
        drop unknown keys silently (voluptuous REMOVE_EXTRA), so a key they did not keep, at any
        depth, is reported as unknown.

    .venv-ha/bin/python tests/home_assistant.py live --port PORT --config-dir DIR [--prefix P]
        A Home Assistant core with its MQTT integration connected to the broker on 127.0.0.1:PORT
        (no frontend, no recorder). Prints {"ready": true}, then one JSON line per state change of
        an entity: {"entity_id", "state", "attributes"}, and {"device": {...}} per device in the
        registry once, when the first entity appears. Ends on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any


def validate(messages: list[list[str]]) -> list[dict[str, Any]]:
    import voluptuous as vol
    from homeassistant.components.mqtt import binary_sensor, event, sensor

    schemas = {
        "sensor": sensor.DISCOVERY_SCHEMA,
        "binary_sensor": binary_sensor.DISCOVERY_SCHEMA,
        "event": event.DISCOVERY_SCHEMA,
    }
    results = []
    for topic, payload in messages:
        component = topic.split("/")[1]
        config = json.loads(payload)
        result: dict[str, Any] = {"topic": topic, "component": component, "error": None, "unknown": []}
        try:
            validated = schemas[component](config)
        except (vol.Invalid, KeyError) as err:
            result["error"] = f"{type(err).__name__}: {err}"
        else:
            result["unknown"] = _dropped(config, validated)
        results.append(result)
    return results


def _dropped(sent: Any, kept: Any, path: str = "") -> list[str]:
    """Keys of `sent` that validation left out of `kept`, as dotted paths."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        missing = [f"{path}{key}" for key in sent if key not in kept]
        for key in sent:
            if key in kept:
                missing += _dropped(sent[key], kept[key], f"{path}{key}.")
        return missing
    if isinstance(sent, list) and isinstance(kept, list):
        return [m for s, k in zip(sent, kept, strict=True) for m in _dropped(s, k, path)]
    return []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _emit(item: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(item, default=str) + "\n")
    sys.stdout.flush()


async def live(port: int, config_dir: Path, prefix: str) -> None:
    from homeassistant import auth, bootstrap, config_entries, core, loader
    from homeassistant.const import EVENT_STATE_CHANGED
    from homeassistant.helpers import device_registry
    from homeassistant.setup import async_setup_component

    (config_dir / ".storage").mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text("")
    entry = {
        "entry_id": "edgepipe-test-broker",
        "version": 1,
        "minor_version": 1,
        "domain": "mqtt",
        "title": "test broker",
        "data": {"broker": "127.0.0.1", "port": port, "discovery": True, "discovery_prefix": prefix},
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
    }
    stored = {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}}
    (config_dir / ".storage" / "core.config_entries").write_text(json.dumps(stored))

    hass = core.HomeAssistant(str(config_dir))
    hass.config.skip_pip = True
    loader.async_setup(hass)
    hass.config_entries = config_entries.ConfigEntries(hass, {})
    await bootstrap.async_load_base_functionality(hass)
    hass.auth = await auth.auth_manager_from_config(hass, [{"type": "homeassistant"}], [])
    http = {"http": {"server_host": "127.0.0.1", "server_port": _free_port()}}
    if not (
        await async_setup_component(hass, "http", http) and await async_setup_component(hass, "mqtt", {})
    ):
        raise SystemExit("Home Assistant could not set up its MQTT integration")

    devices_told = False

    # A callback runs in the event loop, in the order the states changed. (A plain function is run in
    # Home Assistant's executor threads, where two quick changes of one entity could be told in the
    # wrong order: a sensor's last value printed after its `unavailable`.)
    @core.callback
    def on_state(event: Any) -> None:
        nonlocal devices_told
        state = event.data.get("new_state")
        if not devices_told:
            devices_told = True
            for device in device_registry.async_get(hass).devices.values():
                _emit(
                    {
                        "device": {
                            k: getattr(device, k) for k in ("name", "manufacturer", "model", "sw_version")
                        }
                    }
                )
        if state is None:
            _emit({"entity_id": event.data["entity_id"], "state": None, "attributes": {}})
        else:
            _emit({"entity_id": state.entity_id, "state": state.state, "attributes": dict(state.attributes)})

    hass.bus.async_listen(EVENT_STATE_CHANGED, on_state)
    await hass.async_start()
    _emit({"ready": True})
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not sys.stdin.buffer.read1(1) else None)
    await done.wait()
    await hass.async_stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("validate")
    live_parser = sub.add_parser("live")
    live_parser.add_argument("--port", type=int, required=True)
    live_parser.add_argument("--config-dir", type=Path, required=True)
    live_parser.add_argument("--prefix", default="homeassistant")
    args = parser.parse_args()
    if args.mode == "validate":
        for result in validate(json.load(sys.stdin)):
            _emit(result)
        return 0
    asyncio.run(live(args.port, args.config_dir, args.prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
