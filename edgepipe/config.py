"""Pipeline configuration: pydantic models of a pipeline YAML and `load_pipeline(path)`.

Every problem is reported as `FILE:LINE: field.path: what is wrong` (config_errors.py), all at once, in one
ConfigError. Relative paths in the file are relative to the file's own folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgepipe.config_errors import describe, message
from edgepipe.errors import ConfigError

Point = tuple[float, float]
ReferencePointName = Literal["bottom_center", "center", "top_center"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() or base is None else Path(base) / path


# ---------------------------------------------------------------- sources
class FileSourceConfig(Model):
    """A video file; every frame is processed."""

    type: Literal["file"]
    path: Path = Field(description="video file (relative to this YAML file)")
    loop: bool = Field(False, description="start again at the end instead of ending the run")
    realtime: bool = Field(False, description="pace frames at the file's fps, like a live camera")

    @field_validator("path")
    @classmethod
    def _exists(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        if not path.is_file():
            raise ValueError(f"video file {path} does not exist")
        return path


class ImageFolderSourceConfig(Model):
    """A folder of images, read in name order."""

    type: Literal["images"]
    path: Path = Field(description="folder of .jpg/.png files (relative to this YAML file)")
    fps: float = Field(10.0, gt=0, le=1000, description="frame rate the images were taken at")
    loop: bool = False

    @field_validator("path")
    @classmethod
    def _exists(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        if not path.is_dir():
            raise ValueError(f"image folder {path} does not exist")
        return path


class CameraSourceConfig(Model):
    """A USB (V4L2) camera."""

    type: Literal["camera"]
    device: int | str = Field(0, description="camera index or /dev/videoN")
    width: int | None = Field(None, gt=0, le=8192)
    height: int | None = Field(None, gt=0, le=8192)
    fps: float | None = Field(None, gt=0, le=1000)
    reconnect_initial_s: float = Field(0.5, gt=0, le=60, description="first retry delay")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="retry delay cap")


class RtspSourceConfig(Model):
    """An RTSP or HTTP stream (OpenCV's FFmpeg backend)."""

    type: Literal["rtsp"]
    url: str = Field(pattern=r"^(rtsps?|https?)://", description="rtsp://, rtsps://, http:// or https:// URL")
    transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = Field(
        10.0, gt=0, le=300, description="give up one opening attempt after this long"
    )
    read_timeout_s: float = Field(5.0, gt=0, le=300, description="reconnect when no frame came for this long")
    reconnect_initial_s: float = Field(0.5, gt=0, le=60, description="first retry delay")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="retry delay cap")


SourceConfig = Annotated[
    FileSourceConfig | ImageFolderSourceConfig | CameraSourceConfig | RtspSourceConfig,
    Field(discriminator="type"),
]


# ---------------------------------------------------------------- detector and tracker
class DetectorConfig(Model):
    """NanoDet-Plus on OpenVINO. Labels, input size and reg_max come from the model itself."""

    model: Path = Field(description="OpenVINO IR .xml (with its .bin) or .onnx, relative to this YAML file")
    device: str = Field("CPU", pattern=r"^(CPU|GPU(\.\d+)?|NPU|AUTO(:.+)?)$", description="OpenVINO device")
    precision: Literal["auto", "f32", "bf16", "f16"] = Field("auto", description="inference precision hint")
    performance_hint: Literal["throughput", "latency"] = "throughput"
    in_flight: int | None = Field(
        None, ge=1, le=16, description="inference requests in flight (default: measured)"
    )
    threshold: float = Field(0.4, ge=0, lt=1, description="minimum class score")
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
        if path.suffix not in (".xml", ".onnx"):
            raise ValueError(f"model must be an OpenVINO .xml or an .onnx file, got {path.name}")
        if not path.is_file():
            raise ValueError(f"model file {path} does not exist (see `edgepipe models list`)")
        if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
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
def _check_points(points: list[Point], what: str, minimum: int) -> list[Point]:
    if len(points) < minimum:
        raise ValueError(f"{what} needs at least {minimum} points [x, y], got {len(points)}")
    return points


class LineRuleConfig(Model):
    """Counts tracks crossing a segment: direction 'in' when they move into `in_side`."""

    type: Literal["line"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="rule name used in events and topics")
    points: list[Point] = Field(description="[[x1, y1], [x2, y2]] in frame pixels")
    in_side: Literal["left", "right"] = Field(
        "right", description="side of the segment, walking from the first to the second point, that is 'in'"
    )
    reference_point: ReferencePointName = "bottom_center"
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


class ZoneRuleConfig(Model):
    """A polygon: zone_enter / zone_exit (with dwell time) and optional loitering events."""

    type: Literal["zone"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="rule name used in events and topics")
    polygon: list[Point] = Field(description="[[x, y], ...] at least 3 points, in frame pixels")
    reference_point: ReferencePointName = "bottom_center"
    loiter_s: float | None = Field(None, gt=0, description="emit zone_loiter after this long inside")
    hysteresis_px: float = Field(
        10.0, ge=0, le=1000, description="distance inside/outside the edge needed to enter/exit"
    )
    classes: list[str] | None = Field(None, min_length=1, description="label names this rule watches")

    @field_validator("polygon")
    @classmethod
    def _three_points(cls, value: list[Point]) -> list[Point]:
        return _check_points(value, "a zone polygon", 3)


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
        if value is None:
            return None
        path = _resolve(value, info)
        if not path.is_file():
            raise ValueError(f"file {path} does not exist")
        return path

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both or neither")
        return self


class OutboxConfig(Model):
    path: Path | None = Field(
        None, description="SQLite file of undelivered messages (default: $STATE_DIRECTORY or ./state)"
    )
    max_messages: int = Field(
        100_000, ge=100, description="oldest messages are dropped (with a warning) past this"
    )
    max_age_s: float = Field(
        7 * 24 * 3600, gt=0, description="messages older than this are dropped (with a warning)"
    )


class MqttConfig(Model):
    host: str = Field(min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(None, description="default: edgepipe-<pipeline>")
    keepalive_s: int = Field(30, ge=5, le=3600)
    qos: Literal[0, 1, 2] = 1
    topic_prefix: str = Field(
        "edgepipe", pattern=r"^[^#+]+$", description="topics are <prefix>/<pipeline>/..."
    )
    username: str | None = None
    password_file: Path | None = Field(None, description="file whose first line is the password")
    password_env: str | None = Field(None, description="environment variable holding the password")
    tls: TlsConfig | None = None
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    home_assistant_discovery: bool = Field(
        False, description="publish retained Home Assistant discovery configs: one sensor per rule count"
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
        if value is None:
            return None
        path = _resolve(value, info)
        if not path.is_file():
            raise ValueError(f"password file {path} does not exist")
        return path

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
                lines = self.password_file.read_text(encoding="utf-8").splitlines()
            except OSError as error:
                raise ConfigError(
                    f"cannot read MQTT password file {self.password_file}: {error.strerror}"
                ) from None
            return SecretStr(lines[0] if lines else "")
        if self.password_env is not None:
            if self.password_env not in os.environ:
                raise ConfigError(f"MQTT password variable {self.password_env} is not set")
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


# ---------------------------------------------------------------- the pipeline
class PipelineConfig(Model):
    """One camera: source → detector → tracker → rules → outputs."""

    name: str = Field(pattern=r"^[a-z0-9_-]+$", description="lower-case name; used in topics and events")
    source: SourceConfig
    detector: DetectorConfig
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    rules: list[RuleConfig] = Field(default_factory=list)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    status_interval_s: float = Field(
        10.0, gt=0, le=3600, description="how often stats go to the status topic"
    )

    @model_validator(mode="after")
    def _unique_rule_names(self) -> PipelineConfig:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(duplicates)}")
        return self


# ---------------------------------------------------------------- loading with file:line errors
def load_pipeline(path: str | Path) -> PipelineConfig:
    """Parse and validate one pipeline file; every problem is reported in one ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read pipeline file: {error.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = error.problem or error.context or "invalid YAML"
        raise ConfigError(f"{path}{line}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a pipeline file must be a mapping with name, source, detector, ...")
    try:
        return PipelineConfig.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as error:
        lines = [describe(path, root, item, PipelineConfig) for item in error.errors(include_url=False)]
        raise ConfigError("\n".join(lines)) from None


def source_from_argument(text: str, base: PipelineConfig) -> PipelineConfig:
    """The pipeline with its source replaced by `--source PATH_OR_URL` (a path is relative to the cwd)."""
    spec: dict[str, Any]
    if re.match(r"^(rtsps?|https?)://", text):
        spec = {"type": "rtsp", "url": text}
    elif text.isdigit() or text.startswith("/dev/video"):
        spec = {"type": "camera", "device": int(text) if text.isdigit() else text}
    elif Path(text).is_dir():
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
