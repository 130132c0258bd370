"""The process's HTTP server: the page, each pipeline's MJPEG stream and snapshot, /metrics,
/healthz, /api/status and /api/counts (the MQTT status and counts payloads) and /api/live (what the
page refreshes), on stdlib `http.server` with a thread per request.

It only reads the `LiveView`s the loops hand their results to, never a stage. With a token
configured every request needs it, as `Authorization: Bearer TOKEN` (curl, Prometheus) or as the
password of HTTP basic auth with any user name (a browser asks for it); the comparison takes the same
time whatever the guess, and the token never appears in a log line or a message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import socket
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr

from edgepipe.config import HttpConfig
from edgepipe.errors import ConfigError
from edgepipe.metrics import PrometheusMetrics
from edgepipe.web.page import render_page
from edgepipe.web.view import LiveView

log = logging.getLogger(__name__)

BOUNDARY = "edgepipe-frame"
STREAM_WAIT_S = 1.0  # a stream re-checks shutdown at least this often while no new frame comes
SOCKET_TIMEOUT_S = 30.0  # a client that takes no data for this long is dropped (its thread ends)
SHUTDOWN_POLL_S = 0.1  # how soon the accepting thread notices close()


class WebServer:
    """Serves `views` (one per pipeline) and `prometheus` on `settings.host:port` from a thread of
    its own; `start()` binds (failing at once if it cannot), `close()` stops it."""

    def __init__(
        self, settings: HttpConfig, views: Sequence[LiveView], prometheus: PrometheusMetrics
    ) -> None:
        self.settings = settings
        self.views = {view.pipeline: view for view in views}
        self.prometheus = prometheus
        self._token: SecretStr | None = settings.token()
        self._streams = threading.BoundedSemaphore(settings.max_streams)
        self.closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one picked, with port 0)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"app": self})
        server_class = _Ipv6Server if ":" in self.settings.host else ThreadingHTTPServer
        try:
            server = server_class((self.settings.host, self.settings.port), handler)
        except OSError as error:
            raise ConfigError(
                f"http: cannot listen on {self.settings.host}:{self.settings.port} ({error.strerror}): "
                "choose another http.host or http.port"
            ) from None
        server.daemon_threads = True  # a stream still open at exit does not hold the process
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(SHUTDOWN_POLL_S,), name="edgepipe-http", daemon=True
        )
        self._thread.start()
        auth = "a token required" if self._token is not None else "no token: loopback only"
        log.info("http: serving %s on %s, %s", ", ".join(self.views), self.url, auth)

    def close(self) -> None:
        self.closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> WebServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header carries the token (always, without a token)."""
        if self._token is None:
            return True
        scheme, _, value = (header or "").strip().partition(" ")
        given = value.strip()
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(given, validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.encode(), self._token.get_secret_value().encode())

    def stream_slot(self) -> bool:
        return self._streams.acquire(blocking=False)

    def release_stream_slot(self) -> None:
        self._streams.release()


class _Ipv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    app: ClassVar[WebServer]
    server_version = "edgepipe"
    sys_version = ""  # no Python version in the Server header
    timeout = SOCKET_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        if not self.app.authorized(self.headers.get("Authorization")):
            self._send(
                HTTPStatus.UNAUTHORIZED,
                b"a token is needed: Authorization: Bearer TOKEN, or the token as the basic-auth password\n",
                "text/plain; charset=utf-8",
                {"WWW-Authenticate": 'Basic realm="edgepipe", charset="UTF-8"'},
            )
            return
        if path == "/":
            page = render_page({name: view.live() for name, view in self.app.views.items()})
            self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        elif path == "/metrics":
            self._send(HTTPStatus.OK, self.app.prometheus.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._health()
        elif path == "/api/status":
            self._json(HTTPStatus.OK, {name: view.status_payload() for name, view in self.app.views.items()})
        elif path == "/api/counts":
            self._json(HTTPStatus.OK, {name: view.seen().counts for name, view in self.app.views.items()})
        elif path == "/api/live":
            self._json(HTTPStatus.OK, {name: view.live() for name, view in self.app.views.items()})
        else:
            name, _, what = path.strip("/").partition("/")
            view = self.app.views.get(name)
            if view is not None and what == "stream.mjpg":
                self._stream(view)
            elif view is not None and what == "snapshot.jpg":
                self._snapshot(view)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})

    def _health(self) -> None:
        reasons = {
            name: view.health(self.app.settings.alive_timeout_s) for name, view in self.app.views.items()
        }
        bad = {name: reason for name, reason in reasons.items() if reason is not None}
        body: dict[str, object] = {
            "status": "unhealthy" if bad else "ok",
            "pipelines": {name: reason or "ok" for name, reason in reasons.items()},
        }
        if bad:
            body["reason"] = "; ".join(f"{name}: {reason}" for name, reason in bad.items())
        self._json(HTTPStatus.SERVICE_UNAVAILABLE if bad else HTTPStatus.OK, body)

    def _snapshot(self, view: LiveView) -> None:
        jpeg = view.snapshot()
        if jpeg is None:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"{view.pipeline}: no frame yet"})
        else:
            self._send(HTTPStatus.OK, jpeg, "image/jpeg", {"Cache-Control": "no-store"})

    def _stream(self, view: LiveView) -> None:
        """multipart/x-mixed-replace: a JPEG part each time the view has a new one, until the client
        goes, the pipeline stops or the server closes. A slow client only delays its own thread."""
        if not self.app.stream_slot():
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "too many live streams open; try later"})
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            sent = 0
            while not self.app.closing.is_set():
                got = view.jpeg(sent, STREAM_WAIT_S)
                if got is None:
                    if view.seen().stopped:
                        break
                    continue
                sent, jpeg = got
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode() + jpeg + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client went away or stopped reading
        finally:
            self.app.release_stream_slot()

    def _json(self, status: HTTPStatus, body: object) -> None:
        self._send(status, json.dumps(body, separators=(",", ":")).encode(), "application/json")

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # the request line and status only: never a header (the token travels in one)
        log.debug("http %s: %s", self.address_string(), format % args)
