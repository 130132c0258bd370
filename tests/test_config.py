"""Pipeline YAML → PipelineConfig, and the file:line errors for everything a user can get wrong."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgepipe.config import (
    CameraSourceConfig,
    HttpConfig,
    LineRuleConfig,
    TrackerConfig,
    is_loopback,
    load_pipeline,
    settings_from_options,
    source_from_argument,
)
from edgepipe.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A model path that exists (config checks presence, not content)."""
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    xml.with_suffix(".bin").write_bytes(b"")
    return xml


@pytest.fixture
def video_file(tmp_path: Path) -> Path:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    return video


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


VALID = """
name: door
source:
  type: file
  path: v.mp4
detector:
  model: m.xml
  threshold: 0.5
  classes: [person]
rules:
  - type: line
    name: door
    points: [[0, 10], [100, 10]]
    in_side: left
"""


def test_valid_pipeline_loads_with_paths_relative_to_the_file(
    tmp_path: Path, model_file: Path, video_file: Path
) -> None:
    cfg = load_pipeline(write(tmp_path, VALID))
    assert cfg.name == "door"
    assert cfg.detector.model == model_file
    assert cfg.source.path == video_file  # type: ignore[union-attr]
    assert cfg.tracker.max_age == 1 and cfg.tracker.min_hits == 3 and cfg.tracker.iou_threshold == 0.3
    assert (cfg.linking.max_gap_s, cfg.linking.max_distance) == (2.0, 0.75)  # on unless turned off
    rule = cfg.rules[0]
    assert isinstance(rule, LineRuleConfig)
    assert rule.points == [(0.0, 10.0), (100.0, 10.0)]
    assert rule.in_side == "left"


BROKEN = [
    (
        "bad yaml",
        "name: a\nsource: {type: file, path: v.mp4\ndetector: [\n",
        ":3: YAML syntax error: expected ',' or '}'",
    ),
    (
        "threshold out of range",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector:\n  model: m.xml\n  threshold: 1.7\n",
        ":5: detector.threshold: 1.7 is not between 0 and 1",
    ),
    (
        "unknown key",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector:\n  model: m.xml\n  treshold: 0.5\n",
        ":5: detector.treshold: unknown key (did you mean 'threshold'?); allowed: model, device,",
    ),
    (
        "missing model file",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector:\n  model: nope.xml\n",
        ":4: detector.model: model file",
    ),
    (
        "line with one point",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nrules:\n"
        "  - type: line\n    name: d\n    points: [[1, 2]]\n",
        ":7: rules[0].points: a line needs at least 2 points [x, y], got 1",
    ),
    (
        "typo inside a tagged union",
        "name: a\nsource:\n  type: rtsp\n  url: rtsp://cam/door\n  open_timout_s: 3\ndetector: {model: m.xml}\n",
        ":5: source.open_timout_s: unknown key (did you mean 'open_timeout_s'?)",
    ),
    (
        "unknown source type",
        "name: a\nsource:\n  type: webcam\ndetector: {model: m.xml}\n",
        ":2: source: unknown type 'webcam'; expected one of 'file', 'images', 'camera', 'rtsp'",
    ),
    (
        "wrong type",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\ntracker:\n  max_age: many\n",
        ":5: tracker.max_age: 'many': input should be a valid integer",
    ),
    (
        "inline password",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\noutputs:\n  mqtt:\n"
        "    host: localhost\n    password: hunter2\n",
        ":5: outputs.mqtt: inline 'password' is not accepted: use password_file or password_env",
    ),
    (
        "missing section",
        "name: a\nsource: {type: file, path: v.mp4}\n",
        ":1: detector: required field is missing",
    ),
    (
        "zone with two points",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nrules:\n"
        "  - type: zone\n    name: z\n    polygon: [[0, 0], [1, 1]]\n",
        ":7: rules[0].polygon: a zone polygon needs at least 3 points [x, y], got 2",
    ),
    ("not a mapping", "- a\n- b\n", ":1: a pipeline file must be a mapping"),
    (
        "bad name",
        "name: Door Cam\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\n",
        ":1: name: 'Door Cam' does not match the pattern",
    ),
    (
        "duplicate rule names",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nrules:\n"
        "  - {type: line, name: d, points: [[0, 0], [1, 1]]}\n  - {type: zone, name: d, polygon: [[0, 0], [1, 1], [0, 1]]}\n",
        ":6: rules[1].name: 'd' is the name of an earlier rule; rule names must be unique",
    ),
    (
        "roi inverted",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector:\n  model: m.xml\n  roi: [100, 0, 10, 50]\n",
        ":5: detector.roi: roi [100.0, 0.0, 10.0, 50.0] must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1",
    ),
    (
        "missing video file",
        "name: a\nsource:\n  type: file\n  path: nope.mp4\ndetector: {model: m.xml}\n",
        ":4: source.path: video file ",
    ),
    (
        "stream URL without a known scheme",
        "name: a\nsource:\n  type: rtsp\n  url: ftp://admin:s3cret@cam/door\ndetector: {model: m.xml}\n",
        ":4: source.url: stream URL 'ftp://admin:***@cam/door' must start with rtsp://, rtsps://, http:// or https://",
    ),
    (
        "camera device",
        "name: a\nsource:\n  type: camera\n  device: -1\ndetector: {model: m.xml}\n",
        ":4: source.device: camera device -1: use an index (0, 1, ...) or a path like /dev/video0",
    ),
    (
        "backoff order",
        "name: a\nsource:\n  type: rtsp\n  url: rtsp://cam/x\n  reconnect_initial_s: 20\n  reconnect_max_s: 5\n"
        "detector: {model: m.xml}\n",
        ":2: source: reconnect_initial_s 20 must not exceed reconnect_max_s 5",
    ),
    (
        "linking gap out of bounds",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nlinking:\n  max_gap_s: -1\n",
        ":5: linking.max_gap_s: -1 is not between 0 and 10",
    ),
    (
        "duplicate key",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector:\n  model: m.xml\n  threshold: 0.5\n"
        "  threshold: 0.6\n",
        ":6: detector.threshold: key given twice (first at line 5); keep one",
    ),
    (
        "NaN roi",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector:\n  model: m.xml\n  roi: [0, 0, .nan, 10]\n",
        ":5: detector.roi[2]: nan: input should be a finite number",
    ),
    (
        "infinite line point",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nrules:\n"
        "  - type: line\n    name: d\n    points: [[0, 0], [.inf, 5]]\n",
        ":7: rules[0].points[1][0]: inf: input should be a finite number",
    ),
    (
        "NUL in a topic",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\noutputs:\n  mqtt:\n"
        '    host: h\n    topic_prefix: "edge\\0pipe"\n',
        ":7: outputs.mqtt.topic_prefix: 'edge\\x00pipe' does not match the pattern",
    ),
    (
        "wildcard in a topic",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\noutputs:\n  mqtt:\n"
        "    host: h\n    topic_prefix: home/+/cams\n",
        ":7: outputs.mqtt.topic_prefix: 'home/+/cams' does not match the pattern",
    ),
    (
        "a name too long",
        "name: " + "a" * 5000 + "\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\n",
        ":1: name: 'aaaa",
    ),
    (
        "unknown time zone",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\ncounts:\n  reset: daily\n"
        "  time_zone: Europe/Berln\n",
        ":6: counts.time_zone: unknown time zone 'Europe/Berln': use an IANA name such as Europe/Berlin or UTC",
    ),
    (
        "reset time out of the day",
        'name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\ncounts:\n  at: "24:00"\n',
        ":5: counts.at: '24:00' does not match the pattern",
    ),
    (
        "hourly reset at an hour",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\ncounts:\n  reset: hourly\n"
        '  at: "03:15"\n',
        ":4: counts: reset hourly happens at a minute of every hour: write at: '00:15', not '03:15'",
    ),
    (
        "wildcard in the discovery prefix",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\noutputs:\n  mqtt:\n"
        "    host: h\n    discovery_prefix: ha/#\n",
        ":7: outputs.mqtt.discovery_prefix: 'ha/#' does not match the pattern",
    ),
    (
        "password without username",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\noutputs:\n  mqtt:\n"
        "    host: localhost\n    password_env: MQTT_PW\n",
        ":5: outputs.mqtt: a password needs a username",
    ),
    (
        "relative point beyond the frame",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nrules:\n"
        "  - type: line\n    name: d\n    units: relative\n    points: [[0.5, 0], [0.5, 1.2]]\n",
        ":5: rules[0]: units: relative points are fractions of the frame's width and height (0..1); "
        "[0.5, 1.2] is not (for pixels, leave out units)",
    ),
    (
        "relative zone in pixels",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nrules:\n"
        "  - type: zone\n    name: z\n    units: relative\n    polygon: [[0, 0], [300, 0], [300, 200]]\n",
        ":5: rules[0]: units: relative points are fractions of the frame's width and height (0..1); "
        "[300, 0], [300, 200] are not",
    ),
    (
        "unknown units",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nrules:\n"
        "  - type: line\n    name: d\n    units: percent\n    points: [[0, 0], [1, 1]]\n",
        ":7: rules[0].units: 'percent': input should be 'px' or 'relative'",
    ),
    (
        "http on all interfaces without a token",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nhttp:\n  host: 0.0.0.0\n",
        ":4: http: host 0.0.0.0 is reachable from other machines: give token_file or token_env (or listen on 127.0.0.1)",
    ),
    (
        "inline http token",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nhttp:\n  token: abc\n",
        ":4: http: inline 'token' is not accepted: use token_file or token_env",
    ),
    (
        "two token sources",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nhttp:\n"
        "  token_env: A\n  token_file: v.mp4\n",
        ":4: http: give token_file or token_env, not both",
    ),
    (
        "missing token file",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nhttp:\n  token_file: nope\n",
        ":5: http.token_file: token file ",
    ),
    (
        "stream rate out of bounds",
        "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\nhttp:\n  stream_fps: 100\n",
        ":5: http.stream_fps: 100 is not between 0 and 30",
    ),
]


@pytest.mark.parametrize(("case", "text", "expected"), BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_config_names_file_line_and_field(
    tmp_path: Path, model_file: Path, video_file: Path, case: str, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert f"{path}{expected}" in message, message


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("name: off\n", "name", "off"),  # YAML 1.1 made it False; 1.2 reads a string
        ("name: 'n'\n", "name", "n"),
        ("name: y\n", "name", "y"),
        ("name: a\nstatus_interval_s: 010\n", "status_interval_s", 10.0),  # decimal, not octal 8
    ],
)
def test_yaml_1_2_scalars(
    tmp_path: Path, model_file: Path, video_file: Path, text: str, field: str, value: object
) -> None:
    cfg = load_pipeline(
        write(tmp_path, text + "source: {type: file, path: v.mp4}\ndetector: {model: m.xml}\n")
    )
    assert getattr(cfg, field) == value


def test_libyaml_and_the_python_parser_read_a_file_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are composed by libyaml where PyYAML has it (fast), with the same YAML 1.2 scalars and
    line numbers as the pure-Python parser; a file libyaml refuses gets the Python parser's message."""
    from edgepipe import config_yaml
    from edgepipe.config_yaml import read_pipeline_yaml

    assert config_yaml._FastYaml12Loader is not None  # PyYAML's wheels carry libyaml
    path = tmp_path / "p.yml"
    path.write_text(
        "a: off\nb: 010\nc: 0o17\nd: 0x1f\ne: .inf\nf: ~\ng:\nh: True\ni: 1e3\nj: [1, 'x', y]\n"
        "k: &d {x: 1}\nl: {<<: *d, y: 2}\n"
    )
    fast_data, fast_root = read_pipeline_yaml(path)
    monkeypatch.setattr(config_yaml, "_FastYaml12Loader", None)
    plain_data, plain_root = read_pipeline_yaml(path)
    assert fast_data == plain_data
    assert (
        fast_data["a"] == "off"
        and fast_data["b"] == 10
        and fast_data["c"] == 15
        and fast_data["l"] == {"x": 1, "y": 2}
    )
    assert fast_root is not None and plain_root is not None
    lines = [
        [(k.start_mark.line, v.start_mark.line) for k, v in root.value] for root in (fast_root, plain_root)
    ]
    assert lines[0] == lines[1] == [(n, n) for n in range(12)]
    monkeypatch.undo()
    path.write_text("name: a\nrules: [1, 2\n")
    with pytest.raises(ConfigError) as caught:
        read_pipeline_yaml(path)
    assert str(caught.value) == f"{path}:3: YAML syntax error: expected ',' or ']', but got '<stream end>'"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"name: caf\xe9\n", ":1: not UTF-8 text (byte 0xe9): save the file as UTF-8"),
        (b"name: a\nsource:\n\x00\x01\x02", ":3: not a text file (a NUL byte)"),
        (b"\x89PNG\r\n\x1a\n", ":1: not UTF-8 text (byte 0x89)"),
    ],
    ids=["latin-1", "binary", "png"],
)
def test_a_file_that_is_not_utf8_text_is_one_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "p.yml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    assert str(caught.value).startswith(f"{path}{expected}")


def test_special_files_are_refused_without_waiting(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "p.yml"
    os.mkfifo(fifo)  # reading it would wait forever for a writer
    with pytest.raises(ConfigError, match=r"p\.yml: cannot read pipeline file: it is not a regular file"):
        load_pipeline(fifo)
    with pytest.raises(ConfigError, match=r": cannot read pipeline file: it is a folder"):
        load_pipeline(tmp_path)
    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match=r"big\.yml: cannot read pipeline file: 2097152 bytes is too large"):
        load_pipeline(big)


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="expands to more than 100000 nodes"):
        load_pipeline(path)


def test_merge_keys_and_anchors_work(tmp_path: Path, model_file: Path, video_file: Path) -> None:
    cfg = load_pipeline(
        write(
            tmp_path,
            """
            name: a
            source: {type: file, path: v.mp4}
            detector: {model: m.xml}
            rules:
              - &door {type: line, name: front, points: [[0, 10], [100, 10]], hysteresis_px: 4}
              - {<<: *door, name: back}
            """,
        )
    )
    assert [(r.name, r.hysteresis_px) for r in cfg.rules] == [("front", 4.0), ("back", 4.0)]


def test_all_errors_are_reported_at_once(tmp_path: Path, model_file: Path, video_file: Path) -> None:
    path = write(
        tmp_path,
        "name: a\nsource: {type: file, path: v.mp4}\ndetector:\n  model: m.xml\n  threshold: 2\n"
        "tracker:\n  min_hits: 0\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{path}:5: detector.threshold: 2 is not between 0 and 1",
        f"{path}:7: tracker.min_hits: 0 is not between 1 and 1000",
    ]


@pytest.mark.parametrize(
    ("device", "parsed"),
    [(0, 0), (2, 2), ("1", 1), ("/dev/video0", "/dev/video0"), ("/dev/v4l/by-id/cam", "/dev/v4l/by-id/cam")],
)
def test_camera_device_forms(device: int | str, parsed: int | str) -> None:
    assert CameraSourceConfig(device=device).device == parsed


@pytest.mark.parametrize("device", [-1, "video0", "", "rtsp://cam", True])
def test_camera_device_rejected(device: int | str) -> None:
    with pytest.raises(ValidationError, match=r"use an index .* or a path like /dev/video0"):
        CameraSourceConfig(device=device)


def test_a_stream_url_with_a_password_is_never_echoed(tmp_path: Path, model_file: Path) -> None:
    """Whatever fails next to it, the password of a stream URL appears in no message."""
    path = write(
        tmp_path,
        "name: a\nsource:\n  type: rtsp\n  url: rtsps//admin:Wr0ng-S3cret@127.0.0.1/x\n  transport: quic\n"
        "detector: {model: m.xml}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    assert "Wr0ng-S3cret" not in str(caught.value)
    assert "rtsps//admin:***@127.0.0.1/x" in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_age": -1}, "--max-age -1: -1 is not between 0 and 1000"),
        (
            {"min_hits": 0, "iou_threshold": 2.0},
            "--min-hits 0: 0 is not between 1 and 1000\n--iou 2.0: 2.0 is not between 0 and 1",
        ),
    ],
)
def test_command_line_options_get_the_config_bounds_and_name_the_option(
    values: dict[str, object], message: str
) -> None:
    options = {"max_age": "--max-age", "min_hits": "--min-hits", "iou_threshold": "--iou"}
    with pytest.raises(ConfigError) as caught:
        settings_from_options(TrackerConfig, values, options)
    assert str(caught.value) == message
    assert (
        settings_from_options(TrackerConfig, {"max_age": None}, options) == TrackerConfig()
    )  # None: the default


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yml: cannot read pipeline file: No such file"):
        load_pipeline(tmp_path / "nope.yml")


def test_password_is_read_from_file_and_env(
    tmp_path: Path, model_file: Path, video_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    base = "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\noutputs:\n  mqtt:\n    host: h\n    username: u\n"
    cfg = load_pipeline(write(tmp_path, base + "    password_file: pw\n"))
    assert cfg.outputs.mqtt is not None
    secret = cfg.outputs.mqtt.password()
    assert secret is not None and secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(secret)
    monkeypatch.setenv("EDGEPIPE_TEST_PW", "from-env")
    cfg = load_pipeline(write(tmp_path, base + "    password_env: EDGEPIPE_TEST_PW\n"))
    assert cfg.outputs.mqtt is not None
    assert cfg.outputs.mqtt.password().get_secret_value() == "from-env"  # type: ignore[union-attr]
    monkeypatch.delenv("EDGEPIPE_TEST_PW")
    with pytest.raises(
        ConfigError, match="password_env: the environment variable EDGEPIPE_TEST_PW is not set"
    ):
        cfg.outputs.mqtt.password()
    # found after parsing, still at its line: what build() and `edgepipe check` report
    from edgepipe.pipeline import located

    with pytest.raises(ConfigError) as caught:
        located(cfg, ("outputs", "mqtt"), cfg.outputs.mqtt.password)
    assert str(caught.value) == (
        f"{tmp_path / 'p.yml'}:8: outputs.mqtt.password_env: the environment variable EDGEPIPE_TEST_PW is not set"
    )


def test_a_secret_file_that_is_not_text_is_an_error_naming_it(
    tmp_path: Path, model_file: Path, video_file: Path
) -> None:
    """A password or token file in another encoding (a binary file given by mistake): one line that
    names the file, never the bytes, never a UnicodeDecodeError traceback."""
    (tmp_path / "pw").write_bytes(b"caf\xe9-s3cret\n")
    base = "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\noutputs:\n  mqtt:\n    host: h\n    username: u\n"
    cfg = load_pipeline(write(tmp_path, base + "    password_file: pw\n"))
    assert cfg.outputs.mqtt is not None
    with pytest.raises(ConfigError) as caught:
        cfg.outputs.mqtt.password()
    assert (
        str(caught.value) == f"password_file: cannot read the password file {tmp_path / 'pw'}: not UTF-8 text"
    )
    with pytest.raises(ConfigError) as caught:
        HttpConfig(host="0.0.0.0", token_file=tmp_path / "pw").token()
    assert str(caught.value) == f"cannot read HTTP token file {tmp_path / 'pw'}: not UTF-8 text"
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("argument", "kind"),
    [
        ("rtsp://cam.local/stream", "rtsp"),
        ("http://cam.local/mjpeg", "rtsp"),
        ("0", "camera"),
        ("/dev/video2", "camera"),
    ],
)
def test_source_override(
    tmp_path: Path, model_file: Path, video_file: Path, argument: str, kind: str
) -> None:
    cfg = source_from_argument(argument, load_pipeline(write(tmp_path, VALID)))
    assert cfg.source.type == kind
    assert cfg.detector.model == model_file


def test_source_override_with_missing_file(tmp_path: Path, model_file: Path, video_file: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"--source .*missing\.mp4: video file .*missing\.mp4 does not exist"
    ):
        source_from_argument(str(tmp_path / "missing.mp4"), load_pipeline(write(tmp_path, VALID)))


@pytest.mark.parametrize("name", ["demo.yml", "door.yml"])
def test_bundled_pipelines_are_valid(name: str) -> None:
    if not (REPO / "models" / "nanodet-plus-m_416_fp16.xml").is_file():
        pytest.fail(
            "models/nanodet-plus-m_416_fp16.xml missing: run `edgepipe models fetch nanodet-plus-m-416 --from ../shared/models`"
        )
    cfg = load_pipeline(REPO / "pipelines" / name)
    assert cfg.detector.classes == ["person"]
    assert cfg.rules[0].type == "line"


def test_the_readme_config_reference_is_a_valid_pipeline(tmp_path: Path) -> None:
    """The annotated example in README.md validates, once its files exist (keeps the reference true)."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("name: door                       # lower-case")
    text = readme[start : readme.index("```", start)]
    for name in (
        "ca.pem",
        "mqtt-password",
        "door.mp4",
        "nanodet-plus-m_416_fp16.xml",
        "nanodet-plus-m_416_fp16.bin",
    ):
        (tmp_path / name).write_text("x")
    text = text.replace("../videos/door.mp4", "door.mp4").replace("../models/", "")
    text = text.replace("/etc/edgepipe/mqtt-password", "mqtt-password")
    cfg = load_pipeline(write(tmp_path, text))
    assert [rule.name for rule in cfg.rules] == ["door", "table"]
    assert cfg.outputs.mqtt is not None and cfg.outputs.mqtt.tls is not None


@pytest.mark.parametrize(
    ("tracker", "expected"),
    [
        (
            "tracker:\n  max_age: 3\n",
            ":6: tracker: max_age: only for type sort, and this tracker is type occlusion",
        ),
        (
            "tracker:\n  type: sort\n  buffer_ratio: 0.2\n",
            ":6: tracker: buffer_ratio: only for type occlusion, and this tracker is type sort",
        ),
        ("tracker:\n  type: kalman\n", ":7: tracker.type: 'kalman': input should be 'occlusion' or 'sort'"),
        ("tracker:\n  max_age_s: 0\n", ":7: tracker.max_age_s: 0 is not between 0 and 600"),
    ],
)
def test_tracker_fields_belong_to_their_type(
    tmp_path: Path, model_file: Path, video_file: Path, tracker: str, expected: str
) -> None:
    path = write(
        tmp_path, "name: a\nsource: {type: file, path: v.mp4}\ndetector: {model: m.xml}\n\n\n" + tracker
    )
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    assert str(caught.value) == f"{path}{expected}"


def test_tracker_defaults_are_the_occlusion_tracker_and_sort_keeps_its_own() -> None:
    from edgepipe.config import TrackerConfig

    default = TrackerConfig()
    assert default.type == "occlusion" and default.max_age_s == 1.5 and default.low_threshold == 0.1
    sort = TrackerConfig(type="sort", max_age=3)
    assert (sort.max_age, sort.min_hits, sort.iou_threshold) == (3, 3, 0.3)
    # A dumped config holds every field and loads again (as `--source` does).
    assert TrackerConfig.model_validate(sort.model_dump()) == sort


def test_relative_rules_load_as_given(tmp_path: Path, model_file: Path, video_file: Path) -> None:
    text = VALID.replace(
        "    points: [[0, 10], [100, 10]]", "    units: relative\n    points: [[0, 0.5], [1, 0.5]]"
    )
    cfg = load_pipeline(write(tmp_path, text))
    rule = cfg.rules[0]
    assert rule.type == "line" and rule.units == "relative" and rule.points == [(0.0, 0.5), (1.0, 0.5)]
    assert load_pipeline(write(tmp_path, VALID)).rules[0].units == "px"  # pixels unless told


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("edge-box.local", False),
    ],
)
def test_only_loopback_addresses_go_without_a_token(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        assert HttpConfig(host=host).token() is None
    else:
        with pytest.raises(ValidationError, match="give token_file or token_env"):
            HttpConfig(host=host)


def test_the_http_token_is_read_from_a_file_or_the_environment_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "0123456789abcdef0123"
    (tmp_path / "token").write_text(token + "\n")
    settings = HttpConfig(host="0.0.0.0", token_file=tmp_path / "token")
    secret = settings.token()
    assert secret is not None and secret.get_secret_value() == token
    assert token not in repr(settings) and token not in str(secret)
    monkeypatch.setenv("EDGEPIPE_TEST_TOKEN", token)
    assert HttpConfig(host="0.0.0.0", token_env="EDGEPIPE_TEST_TOKEN").token().get_secret_value() == token  # type: ignore[union-attr]
    monkeypatch.setenv("EDGEPIPE_TEST_TOKEN", "short")
    with pytest.raises(ConfigError) as caught:
        HttpConfig(host="0.0.0.0", token_env="EDGEPIPE_TEST_TOKEN").token()
    assert str(caught.value) == (
        "HTTP token variable EDGEPIPE_TEST_TOKEN: the token has 5 characters, fewer than 16 "
        "(make one with `openssl rand -hex 16`)"
    )
    assert "short" not in str(caught.value)  # the value itself is never shown
    monkeypatch.delenv("EDGEPIPE_TEST_TOKEN")
    with pytest.raises(ConfigError, match=r"^HTTP token variable EDGEPIPE_TEST_TOKEN is not set$"):
        HttpConfig(token_env="EDGEPIPE_TEST_TOKEN").token()
