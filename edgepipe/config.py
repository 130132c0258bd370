"""Pipeline configuration: pydantic models of a pipeline YAML and `load_pipeline(path)`.

Every problem is reported as `FILE:LINE: field.path: what is wrong` (config_errors.py), all at once, in one
ConfigError. Relative paths in the file are relative to the file's own folder.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import time as dt_time
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgepipe.config_errors import describe, dotted, line_of, message
from edgepipe.config_yaml import read_pipeline_yaml
from edgepipe.errors import ConfigError, FieldError, mask_secrets
from edgepipe.geometry import ReferencePoint, Units

Point = tuple[float, float]
Precision = Literal["auto", "f32", "bf16", "f16"]
PerformanceHint = Literal["throughput", "latency"]
MODEL_SUFFIXES = (".xml", ".onnx")  # OpenVINO IR (with its .bin) or ONNX
NAME_MAX_LENGTH = 64  # pipeline and rule names end up in MQTT topics, entity ids and file names
# Topic levels: MQTT forbids NUL and reserves + and # for subscriptions; a broker drops what breaks it.
TOPIC_PATTERN = r"^[^\x00+#]+$"


class Model(BaseModel):
    # NaN and infinity are never a setting: a NaN roi or line point would silently match nothing
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _is_file(path: Path) -> bool:
    """Whether `path` is a regular file; a path the system refuses to look at (too long, a loop of
    links, not allowed) is a ValueError that says why."""
    try:
        return path.is_file()
    except OSError as error:
        raise ValueError(f"{_shown(path)}: {error.strerror}") from None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError as error:
        raise ValueError(f"{_shown(path)}: {error.strerror}") from None


def _is_dir_quietly(path: Path) -> bool:
    """is_dir, False where the system refuses to look (the file check then says why)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _shown(path: Path) -> str:
    """A path for a message: long ones cut in the middle."""
    text = str(path)
    return text if len(text) <= 120 else f"{text[:60]}…{text[-50:]}"


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """A path of the file, relative to the file's folder; one the system cannot take is a ValueError."""
    if "\0" in str(value):
        raise ValueError("a path cannot hold a NUL character")
    base = (info.context or {}).get("base_dir")
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() or base is None else Path(base) / path


def _existing_file(value: Path | None, info: ValidationInfo, what: str = "file") -> Path | None:
    """A file setting, relative to the YAML file, that must exist (`what` names it in the error)."""
    if value is None:
        return None
    path = _resolve(value, info)
    if not _is_file(path):
        raise ValueError(f"{what} {_shown(path)} does not exist")
    return path


def _first_line(path: Path) -> str:
    """A secret file's first line ("" when it is empty); a ValueError saying why it cannot be read."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ValueError(error.strerror or str(error)) from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    return lines[0] if lines else ""


# ---------------------------------------------------------------- sources
STREAM_URL_PATTERN = r"^(rtsps?|https?)://"  # the one check of a stream URL (config and --source)


def is_stream_url(text: str) -> bool:
    return re.match(STREAM_URL_PATTERN, text) is not None


def parse_camera_device(device: object) -> int | str:
    """0, "0" → 0; "/dev/video2" stays a path; anything else is a ValueError with what to write."""
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    if isinstance(device, str):
        if device.isdigit():
            return int(device)
        if re.fullmatch(r"/dev/[\w./-]+", device):
            return device
    raise ValueError(f"camera device {device!r}: use an index (0, 1, ...) or a path like /dev/video0")


class FileSourceConfig(Model):
    """A video file; every frame is processed."""

    type: Literal["file"] = "file"
    path: Path = Field(description="video file (relative to this YAML file)")
    loop: bool = Field(False, description="start again at the end instead of ending the run")
    realtime: bool = Field(False, description="pace frames at the file's fps, like a live camera")

    @field_validator("path")
    @classmethod
    def _exists(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        if not _is_file(path):
            raise ValueError(f"video file {_shown(path)} does not exist")
        return path


class ImageFolderSourceConfig(Model):
    """A folder of images, read in name order."""

    type: Literal["images"] = "images"
    path: Path = Field(description="folder of .jpg/.png files (relative to this YAML file)")
    fps: float = Field(10.0, gt=0, le=1000, description="frame rate the images were taken at")
    loop: bool = False

    @field_validator("path")
    @classmethod
    def _exists(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        if not _is_dir(path):
            raise ValueError(f"image folder {_shown(path)} does not exist")
        return path


class LiveSourceConfig(Model):
    """Timeouts and reconnect backoff of a camera or stream."""

    open_timeout_s: float = Field(
        10.0, gt=0, le=300, description="give up one opening attempt after this long"
    )
    read_timeout_s: float = Field(5.0, gt=0, le=300, description="reconnect when no frame came for this long")
    reconnect_initial_s: float = Field(0.5, gt=0, le=60, description="first retry delay")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="retry delay cap")

    @model_validator(mode="after")
    def _backoff_order(self) -> LiveSourceConfig:
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_initial_s {self.reconnect_initial_s:g} must not exceed "
                f"reconnect_max_s {self.reconnect_max_s:g}"
            )
        return self


class CameraSourceConfig(LiveSourceConfig):
    """A USB (V4L2) camera."""

    type: Literal["camera"] = "camera"
    device: int | str = Field(0, description="camera index or /dev/videoN")
    width: int | None = Field(None, gt=0, le=8192)
    height: int | None = Field(None, gt=0, le=8192)
    fps: float | None = Field(None, gt=0, le=1000)

    @field_validator("device", mode="before")  # before: YAML's `true` must not become camera 1
    @classmethod
    def _device(cls, value: Any) -> int | str:
        return parse_camera_device(value)


class RtspSourceConfig(LiveSourceConfig):
    """An RTSP or HTTP stream (OpenCV's FFmpeg backend)."""

    type: Literal["rtsp"] = "rtsp"
    url: str = Field(description="rtsp://, rtsps://, http:// or https:// URL")
    transport: Literal["tcp", "udp"] = "tcp"

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not is_stream_url(value):
            raise ValueError(
                f"stream URL {mask_secrets(value)!r} must start with rtsp://, rtsps://, http:// or https://"
            )
        return value


SourceConfig = Annotated[
    FileSourceConfig | ImageFolderSourceConfig | CameraSourceConfig | RtspSourceConfig,
    Field(discriminator="type"),
]


# ---------------------------------------------------------------- detector and tracker
class DetectorConfig(Model):
    """NanoDet-Plus on OpenVINO. Labels, input size and reg_max come from the model itself."""

    model: Path = Field(description="OpenVINO IR .xml (with its .bin) or .onnx, relative to this YAML file")
    device: str = Field("CPU", pattern=r"^(CPU|GPU(\.\d+)?|NPU|AUTO(:.+)?)$", description="OpenVINO device")
    precision: Precision = Field("auto", description="inference precision hint")
    performance_hint: PerformanceHint = "throughput"
    in_flight: int | None = Field(
        None, ge=1, le=16, description="inference requests in flight (default: measured)"
    )
    threshold: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="score from which a detection counts and starts a track (lower ones, down to "
        "tracker.low_threshold, only continue tracks); chosen with the default tracker on TUD-Campus",
    )
    nms_iou: float = Field(
        0.5, gt=0, le=1, description="IoU above which a lower-scored box of the same class is dropped"
    )
    classes: list[str] | None = Field(None, min_length=1, description="label names to keep, e.g. [person]")
    min_box_area: float = Field(0.0, ge=0, description="drop boxes smaller than this many pixels")
    roi: tuple[float, float, float, float] | None = Field(
        None, description="[x1, y1, x2, y2]: keep boxes whose centre lies inside"
    )
    max_detections: int = Field(100, ge=1, le=10000)

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        if path.suffix not in MODEL_SUFFIXES:
            raise ValueError(f"model must be an OpenVINO .xml or an .onnx file, got {path.name}")
        if not _is_file(path):
            raise ValueError(f"model file {_shown(path)} does not exist (see `edgepipe models list`)")
        if path.suffix == ".xml" and not _is_file(path.with_suffix(".bin")):
            raise ValueError(f"weights {path.with_suffix('.bin')} are missing next to {path.name}")
        return path

    @field_validator("roi")
    @classmethod
    def _roi_order(
        cls, value: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if value is not None and (value[2] <= value[0] or value[3] <= value[1]):
            raise ValueError(f"roi {list(value)} must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
        return value


class TrackerConfig(Model):
    """Which tracker, and its parameters (SORT's named as in the paper).

    `type: occlusion` (the default) is SORT with what keeps an id through an occlusion
    (edgepipe/track/occlusion.py); `type: sort` is the SORT reference. A field that only the
    other type uses is an error. The defaults of the occlusion tracker were chosen on MOT15 and
    on NanoDet detections of TUD-Campus (README, "Tracker")."""

    type: Literal["occlusion", "sort"] = Field("occlusion", description="occlusion or sort")
    min_hits: int = Field(3, ge=1, le=1000, description="matches in a row before a track is reported")
    iou_threshold: float = Field(0.3, gt=0, le=1, description="minimum IoU for a detection to match a track")
    match_classes: bool = Field(False, description="only match detections of the track's class")
    # sort only
    max_age: int = Field(1, ge=0, le=1000, description="sort: frames a track may go unmatched before it ends")
    # occlusion only
    max_age_s: float = Field(
        1.5, gt=0, le=600, description="occlusion: seconds a confirmed track may go unmatched before it ends"
    )
    low_threshold: float = Field(
        0.1,
        ge=0,
        le=1,
        description="occlusion: least score of a box that may continue (never start) a track; the "
        "detector's threshold is the score that starts one",
    )
    low_iou_threshold: float = Field(
        0.7, gt=0, le=1, description="occlusion: minimum IoU for a low-score box to continue a track"
    )
    buffer_ratio: float = Field(
        0.4,
        ge=0,
        le=2,
        description="occlusion: a coasting track and a box are compared grown by this share of their size",
    )
    assumed_fps: float = Field(
        10.0, gt=0, le=1000, description="occlusion: frame rate assumed for frames that carry no time"
    )

    @model_validator(mode="after")
    def _fields_of_the_type(self) -> TrackerConfig:
        # Only a value that differs from the default is an error: a dumped config, which holds
        # every field, must validate again.
        other = _SORT_ONLY if self.type == "occlusion" else _OCCLUSION_ONLY
        fields = type(self).model_fields
        misplaced = sorted(name for name in other if getattr(self, name) != fields[name].default)
        if misplaced:
            owner = "sort" if self.type == "occlusion" else "occlusion"
            raise ValueError(
                f"{', '.join(misplaced)}: only for type {owner}, and this tracker is type {self.type}"
            )
        return self


_SORT_ONLY = frozenset({"max_age"})
_OCCLUSION_ONLY = frozenset(
    {"max_age_s", "low_threshold", "low_iou_threshold", "buffer_ratio", "assumed_fps"}
)


# ---------------------------------------------------------------- rules
class LinkingConfig(Model):
    """Counting through broken tracks (linking.py): when a track ends and a new one is first seen
    soon after, near where the old one was heading, the new one carries on the old one's state in
    every rule (its side of each line, the zone it is in), so a crossing during the gap counts once
    and a re-found person is not counted again. One setting for all rules of the pipeline: they must
    agree on who is who. The defaults were chosen on MOT15 (tests/data/counting/)."""

    max_gap_s: float = Field(
        2.0,
        ge=0,
        le=10,
        description="longest time from the old track's last sighting to the new one's first; "
        "0 turns linking off. A zone exit of a lost track waits this long for a successor",
    )
    max_distance: float = Field(
        0.75,
        gt=0,
        le=5,
        description="how far, in the old track's box heights, the new track may first appear from the "
        "old one's path (from where it was last seen to where its speed would have taken it)",
    )


def _check_points(points: list[Point], what: str, minimum: int) -> list[Point]:
    if len(points) < minimum:
        raise ValueError(f"{what} needs at least {minimum} points [x, y], got {len(points)}")
    return points


def _check_relative(points: list[Point], units: Units) -> None:
    """Relative points are fractions of the frame: each coordinate within 0..1."""
    if units != "relative":
        return
    outside = [point for point in points if not all(0.0 <= v <= 1.0 for v in point)]
    if outside:
        shown = ", ".join(f"[{x:g}, {y:g}]" for x, y in outside)
        raise ValueError(
            f"units: relative points are fractions of the frame's width and height (0..1); "
            f"{shown} {'is' if len(outside) == 1 else 'are'} not (for pixels, leave out units)"
        )


class LineRuleConfig(Model):
    """Counts tracks crossing a segment: direction 'in' when they move into `in_side`."""

    type: Literal["line"]
    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=NAME_MAX_LENGTH,
        description="rule name used in events and topics",
    )
    points: list[Point] = Field(
        description="[[x1, y1], [x2, y2]] in frame pixels, or fractions with units: relative"
    )
    units: Units = Field(
        "px", description="px: frame pixels; relative: fractions of the frame's width and height (0..1)"
    )
    in_side: Literal["left", "right"] = Field(
        "right", description="side of the segment, walking from the first to the second point, that is 'in'"
    )
    reference_point: ReferencePoint = "bottom_center"
    hysteresis_px: float = Field(10.0, ge=0, le=1000, description="distance past the line needed to count")
    classes: list[str] | None = Field(None, min_length=1, description="label names this rule counts")

    @field_validator("points")
    @classmethod
    def _two_points(cls, value: list[Point]) -> list[Point]:
        _check_points(value, "a line", 2)
        if len(value) != 2:
            raise ValueError(f"a line is exactly 2 points [x, y], got {len(value)}")
        if value[0] == value[1]:
            raise ValueError("the two points of a line must differ")
        return value

    @model_validator(mode="after")
    def _relative_in_frame(self) -> LineRuleConfig:
        _check_relative(self.points, self.units)
        return self


class ZoneRuleConfig(Model):
    """A polygon: zone_enter / zone_exit (with dwell time) and optional loitering events."""

    type: Literal["zone"]
    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=NAME_MAX_LENGTH,
        description="rule name used in events and topics",
    )
    polygon: list[Point] = Field(
        description="[[x, y], ...] at least 3 points, in frame pixels or fractions with units: relative"
    )
    units: Units = Field(
        "px", description="px: frame pixels; relative: fractions of the frame's width and height (0..1)"
    )
    reference_point: ReferencePoint = "bottom_center"
    loiter_s: float | None = Field(None, gt=0, description="emit zone_loiter after this long inside")
    hysteresis_px: float = Field(
        10.0, ge=0, le=1000, description="distance inside/outside the edge needed to enter/exit"
    )
    classes: list[str] | None = Field(None, min_length=1, description="label names this rule watches")

    @field_validator("polygon")
    @classmethod
    def _three_points(cls, value: list[Point]) -> list[Point]:
        return _check_points(value, "a zone polygon", 3)

    @model_validator(mode="after")
    def _relative_in_frame(self) -> ZoneRuleConfig:
        _check_relative(self.polygon, self.units)
        return self


RuleConfig = Annotated[LineRuleConfig | ZoneRuleConfig, Field(discriminator="type")]


# ---------------------------------------------------------------- outputs
class TlsConfig(Model):
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client key (mutual TLS)")
    insecure: bool = Field(False, description="skip the host name check (testing only)")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _existing_file(value, info)

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both or neither")
        return self


class OutboxConfig(Model):
    path: Path | None = Field(
        None,
        description="SQLite file of undelivered messages, relative to this YAML file "
        "(default: <name>-outbox.sqlite in $STATE_DIRECTORY or ./state)",
    )
    max_messages: int = Field(
        100_000, ge=100, description="oldest messages are dropped (with a warning) past this"
    )
    max_age_s: float = Field(
        7 * 24 * 3600, gt=0, description="messages older than this are dropped (with a warning)"
    )

    @field_validator("path")
    @classmethod
    def _relative_to_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    max_memory_messages: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="while the disk refuses writes, this many messages wait in memory (beyond: lost, reported)",
    )


class MqttConfig(Model):
    host: str = Field(min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(
        None, pattern=r"^[^\x00]+$", max_length=256, description="default: edgepipe-<pipeline>"
    )
    keepalive_s: int = Field(30, ge=5, le=3600)
    qos: Literal[0, 1, 2] = 1
    topic_prefix: str = Field(
        "edgepipe",
        pattern=TOPIC_PATTERN,
        max_length=256,
        description="topics are <prefix>/<pipeline>/...; no NUL, + or #",
    )
    username: str | None = Field(None, pattern=r"^[^\x00]+$", max_length=256)
    password_file: Path | None = Field(None, description="file whose first line is the password")
    password_env: str | None = Field(None, description="environment variable holding the password")
    tls: TlsConfig | None = None
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    home_assistant_discovery: bool = Field(
        False, description="publish retained Home Assistant discovery configs: a device per pipeline (README)"
    )
    discovery_prefix: str = Field(
        "homeassistant",
        pattern=TOPIC_PATTERN,
        max_length=256,
        description="Home Assistant's discovery prefix (its MQTT integration setting); no NUL, + or #",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError("inline 'password' is not accepted: use password_file or password_env")
        return data

    @field_validator("password_file")
    @classmethod
    def _password_file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _existing_file(value, info, "password file")

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        if (self.password_file is not None or self.password_env is not None) and self.username is None:
            raise ValueError("a password needs a username")
        return self

    def password(self) -> SecretStr | None:
        """Read the password where the config says it is; called when the client is built."""
        if self.password_file is not None:
            try:
                return SecretStr(_first_line(self.password_file))
            except ValueError as error:
                raise FieldError(
                    ("password_file",), f"cannot read the password file {self.password_file}: {error}"
                ) from None
        if self.password_env is not None:
            if self.password_env not in os.environ:
                raise FieldError(
                    ("password_env",), f"the environment variable {self.password_env} is not set"
                )
            return SecretStr(os.environ[self.password_env])
        return None


class JsonlConfig(Model):
    path: str = Field(
        min_length=1, description="file to append events to (relative to this YAML file), or '-'"
    )

    @field_validator("path")
    @classmethod
    def _relative_to_file(cls, value: str, info: ValidationInfo) -> str:
        return value if value == "-" else str(_resolve(Path(value), info))


class OutputsConfig(Model):
    mqtt: MqttConfig | None = None
    jsonl: JsonlConfig | None = None


# ---------------------------------------------------------------- the web page, /metrics, /healthz
MIN_TOKEN_CHARS = 16  # a shorter token is guessable; `openssl rand -hex 16` gives 32


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


class HttpConfig(Model):
    """The process's web server: a page with each pipeline's live annotated view, MJPEG streams,
    snapshots, /metrics (Prometheus), /healthz and /api/status. Off unless a pipeline file has this
    section; one server serves every pipeline of the process, so where several files have it, the
    sections must agree. Anything but a loopback address needs a token, and then every request does."""

    host: str = Field(
        "127.0.0.1", min_length=1, description="address to listen on; a non-loopback one needs a token"
    )
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one (logged)")
    token_file: Path | None = Field(None, description="file whose first line is the access token")
    token_env: str | None = Field(None, description="environment variable holding the access token")
    stream_fps: float = Field(
        5.0, gt=0, le=30, description="most annotated frames per second drawn for each pipeline's viewers"
    )
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of streams and snapshots")
    max_streams: int = Field(
        8, ge=1, le=64, description="live streams open at once, all pipelines together; more get 503"
    )
    alive_timeout_s: float = Field(
        10.0, gt=0, le=600, description="/healthz reports a frame loop silent for this long as hung"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_token(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token" in data:
            raise ValueError("inline 'token' is not accepted: use token_file or token_env")
        return data

    @field_validator("token_file")
    @classmethod
    def _token_file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _existing_file(value, info, "token file")

    @model_validator(mode="after")
    def _token_where_needed(self) -> HttpConfig:
        if self.token_file is not None and self.token_env is not None:
            raise ValueError("give token_file or token_env, not both")
        if not is_loopback(self.host) and self.token_file is None and self.token_env is None:
            raise ValueError(
                f"host {self.host} is reachable from other machines: give token_file or token_env "
                "(or listen on 127.0.0.1)"
            )
        return self

    def token(self) -> SecretStr | None:
        """Read the token where the config says it is; called when the server is built."""
        if self.token_file is not None:
            try:
                value = _first_line(self.token_file).strip()
            except ValueError as error:
                raise ConfigError(f"cannot read HTTP token file {self.token_file}: {error}") from None
            where = f"HTTP token file {self.token_file}"
        elif self.token_env is not None:
            if self.token_env not in os.environ:
                raise ConfigError(f"HTTP token variable {self.token_env} is not set")
            value, where = os.environ[self.token_env].strip(), f"HTTP token variable {self.token_env}"
        else:
            return None
        if len(value) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"{where}: the token has {len(value)} characters, fewer than {MIN_TOKEN_CHARS} "
                "(make one with `openssl rand -hex 16`)"
            )
        return SecretStr(value)


class CountsConfig(Model):
    """The rules' totals across restarts and reset periods (counts.py)."""

    reset: Literal["never", "daily", "hourly"] = Field(
        "never",
        description="when the totals go back to zero (a counts_reset event per rule says what they were)",
    )
    at: str = Field(
        "00:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="HH:MM; daily: the local time of the reset; hourly: 00:MM, the minute of every hour",
    )
    time_zone: str | None = Field(
        None,
        description="IANA time zone of `at`, e.g. Europe/Berlin (default: the machine's, TZ or /etc/localtime)",
    )
    persist: bool | None = Field(
        None, description="save the totals and take them up at the next start (default: with an MQTT output)"
    )
    path: Path | None = Field(
        None,
        description="the totals file (default: <name>-counts.json beside the MQTT outbox, or in the state directory)",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as Europe/Berlin or UTC"
            ) from None
        return value

    @field_validator("path")
    @classmethod
    def _relative_to_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)

    @model_validator(mode="after")
    def _hourly_minute(self) -> CountsConfig:
        if self.reset == "hourly" and not self.at.startswith("00:"):
            raise ValueError(
                f"reset hourly happens at a minute of every hour: write at: '00:{self.at[3:]}', not '{self.at}'"
            )
        return self

    def at_time(self) -> dt_time:
        hours, minutes = self.at.split(":")
        return dt_time(int(hours), int(minutes))


# ---------------------------------------------------------------- the pipeline
class PipelineConfig(Model):
    """One camera: source → detector → tracker → rules → outputs."""

    name: str = Field(
        pattern=r"^[a-z0-9_-]+$",
        max_length=NAME_MAX_LENGTH,
        description="lower-case name; used in topics, events and file names",
    )
    source: SourceConfig
    detector: DetectorConfig
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    rules: list[RuleConfig] = Field(default_factory=list)
    linking: LinkingConfig = Field(default_factory=LinkingConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    counts: CountsConfig = Field(default_factory=CountsConfig)
    http: HttpConfig | None = Field(None, description="serve a live page, /metrics and /healthz (off)")
    status_interval_s: float = Field(
        10.0, gt=0, le=3600, description="how often stats go to the status topic"
    )

    # where the settings came from, for errors found after parsing (PipelineConfig.error_at)
    _origin: tuple[Path, yaml.Node | None] | None = PrivateAttr(default=None)

    def error_at(self, field: tuple[str | int, ...], message: str) -> ConfigError:
        """A ConfigError for one field, `FILE:LINE: field.path: message` when the config came from
        a file (load_pipeline), `field.path: message` otherwise."""
        if self._origin is None:
            return ConfigError(mask_secrets(f"{dotted(field)}: {message}"))
        path, root = self._origin
        return ConfigError(mask_secrets(f"{path}:{line_of(root, field)}: {dotted(field)}: {message}"))

    def rule_name_errors(self) -> list[str]:
        """Each rule whose name an earlier rule has, at its own line."""
        errors, seen = [], set()
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                errors.append(
                    str(
                        self.error_at(
                            ("rules", index, "name"),
                            f"{rule.name!r} is the name of an earlier rule; rule names must be unique",
                        )
                    )
                )
            seen.add(rule.name)
        return errors


# ---------------------------------------------------------------- loading with file:line errors
def load_pipeline(path: str | Path) -> PipelineConfig:
    """Parse and validate one pipeline file; every problem is reported in one ConfigError."""
    path = Path(path)
    data, root = read_pipeline_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a pipeline file must be a mapping with name, source, detector, ...")
    try:
        cfg = PipelineConfig.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as error:
        lines = [describe(path, root, item, PipelineConfig) for item in error.errors(include_url=False)]
        raise ConfigError("\n".join(lines)) from None
    cfg._origin = (path, root)
    problems = cfg.rule_name_errors()
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


SectionT = TypeVar("SectionT", bound=BaseModel)


def settings_from_options(
    section: type[SectionT], values: Mapping[str, object], options: Mapping[str, str]
) -> SectionT:
    """A config section from command-line options, so that an option has the same default, bounds
    and words as the YAML field (`options` maps a field to its flag). None values are left to the
    section's defaults. Every problem is one ConfigError line naming the option."""
    data = {key: value for key, value in values.items() if value is not None}
    try:
        return section.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors(include_url=False):
            loc = tuple(item["loc"])
            if not loc:  # a check of the whole section: its message names the fields
                lines.append(mask_secrets(message(item, loc, section)))
                continue
            field = str(loc[0])
            shown = f" {data[field]}" if field in data and not isinstance(data[field], (list, dict)) else ""
            lines.append(mask_secrets(f"{options.get(field, field)}{shown}: {message(item, loc, section)}"))
        raise ConfigError("\n".join(lines)) from None


def check_option(section: type[BaseModel], field: str, value: Any, option: str) -> Any:
    """`value` checked with the bounds of `section.field`, for an option that stands for that field
    without being the section (e.g. --high-threshold for detector.threshold)."""
    info = section.model_fields[field]
    try:
        return TypeAdapter(Annotated[info.annotation, info]).validate_python(value)  # type: ignore[arg-type]
    except ValidationError as error:
        item = error.errors(include_url=False)[0]
        text = message({**item, "loc": (field,)}, (field,), section)
        raise ConfigError(mask_secrets(f"{option} {value}: {text}")) from None


def source_from_argument(text: str, base: PipelineConfig) -> PipelineConfig:
    """The pipeline with its source replaced by `--source PATH_OR_URL` (a path is relative to the cwd)."""
    spec: dict[str, Any]
    if is_stream_url(text):
        spec = {"type": "rtsp", "url": text}
    elif text.isdigit() or text.startswith("/dev/video"):
        spec = {"type": "camera", "device": int(text) if text.isdigit() else text}
    elif _is_dir_quietly(Path(text)):
        spec = {"type": "images", "path": str(Path(text).resolve())}
    else:
        spec = {"type": "file", "path": str(Path(text).resolve())}
    data = base.model_dump(mode="python")
    data["source"] = spec
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        details = "; ".join(message(e, tuple(e["loc"]), PipelineConfig) for e in error.errors())
        raise ConfigError(f"--source {text}: {details}") from None
