"""Every bad input a one-line error: generated corpora of broken pipeline files, models and media
through `edgepipe check`, `run` and `detect` (in process: hundreds of cases in seconds).

Each case must either be valid and work, or end with exit 2 (a setting: every line `FILE:LINE: …`)
or 1 (anything else: one `edgepipe: error:` line) — never a traceback, never a hang, never a
secret in the output. The figures (tried / clean / failures per area) are printed."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from edgepipe.cli import main

REPO = Path(__file__).resolve().parent.parent
SECRET = "Sup3r-S3cret-Pa55"
CASE_TIMEOUT_S = 60

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# ---------------------------------------------------------------- running one case
class Hang(Exception):
    pass


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`edgepipe ARGS` in this process: (exit status, stdout + stderr); a Hang after CASE_TIMEOUT_S."""

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"edgepipe {' '.join(args)} did not end within {CASE_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        code = main(args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out, err = capsys.readouterr()
    return code, out + err


def judge(code: int, output: str, path: Path) -> str:
    """'valid', 'clean' or what is wrong with the way the case was reported. A config error names
    `path` and a line (a pipeline file), or the option it is about (`--model …: …`)."""
    if SECRET in output:
        return "a secret in the output"
    if "Traceback" in output:
        return "a traceback"
    if code == 0:
        return "valid"
    errors = [line for line in output.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(errors) if line.startswith("edgepipe: error: ")), None)
    if first is None:
        return f"exit {code} without an 'edgepipe: error:' line"
    if code == 2:
        reported = [errors[first].removeprefix("edgepipe: error: "), *errors[first + 1 :]]
        # FILE:LINE: … — or, for a file that cannot be read at all, FILE: cannot read pipeline file: …
        where = re.escape(str(path))
        located = rf"{where}(:\d+: \S|: cannot read pipeline file: )|--[a-z][a-z-]* \S+: \S"
        bad = [line for line in reported if not re.match(located, line)]
        return "clean" if not bad else f"a config error without FILE:LINE: {bad[0]!r}"
    return "clean" if code == 1 else f"exit {code}"


# ---------------------------------------------------------------- pipeline files
def base_configs(tmp_path: Path, shared: Path) -> dict[str, dict[str, Any]]:
    """demo.yml and door.yml with absolute paths, the 320 model, JSON lines into tmp_path."""
    model = REPO / "models" / "nanodet-plus-m_320_fp16.xml"
    configs = {}
    for name in ("demo", "door"):
        cfg = yaml.safe_load((REPO / "pipelines" / f"{name}.yml").read_text())
        cfg["source"]["path"] = str(shared / "data" / "video" / Path(cfg["source"]["path"]).name)
        cfg["detector"]["model"] = str(model)
        cfg["outputs"] = {"jsonl": {"path": str(tmp_path / f"{name}-events.jsonl")}}
        configs[name] = cfg
    door = configs["door"]
    door["outputs"]["mqtt"] = {"host": "127.0.0.1", "port": 1, "username": "u", "password_env": "EDGEPIPE_CORPUS_PW",
                               "outbox": {"path": str(tmp_path / "door-outbox.sqlite")}}  # fmt: skip
    return configs


def paths_of(node: Any, where: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) of a parsed config, mappings and lists included."""
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths_of(value, (*where, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths_of(value, (*where, index))


def with_value(cfg: dict[str, Any], where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    mutated = copy.deepcopy(cfg)
    node: Any = mutated
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    return mutated


def mutations(configs: dict[str, dict[str, Any]]) -> Iterator[tuple[str, bytes | str]]:
    """(case name, file content): wrong types, ranges, NaN/inf, unknown keys at every level, syntax,
    encodings, duplicate keys, anchors and aliases, secrets inline."""
    for name, cfg in configs.items():
        text = yaml.safe_dump(cfg, sort_keys=False)
        yield f"{name}: as shipped", text
        for where, value in list(paths_of(cfg))[1:]:
            label = f"{name}: {'.'.join(map(str, where))}"
            if isinstance(value, dict):
                yield (
                    f"{label}: unknown key",
                    yaml.safe_dump(with_value(cfg, where, {**value, "colour": 1}), sort_keys=False),
                )
                yield (
                    f"{label}: a list instead",
                    yaml.safe_dump(with_value(cfg, where, [1, 2]), sort_keys=False),
                )
            elif isinstance(value, list):
                yield f"{label}: empty", yaml.safe_dump(with_value(cfg, where, []), sort_keys=False)
                yield (
                    f"{label}: a string instead",
                    yaml.safe_dump(with_value(cfg, where, "x"), sort_keys=False),
                )
            elif isinstance(value, bool):
                yield f"{label}: a list", yaml.safe_dump(with_value(cfg, where, [True]), sort_keys=False)
            elif isinstance(value, (int, float)):
                for bad in (-1, 10**9, "many"):
                    yield f"{label}: {bad}", yaml.safe_dump(with_value(cfg, where, bad), sort_keys=False)
                for bad in (".nan", ".inf", "-.inf"):
                    yield f"{label}: {bad}", yaml.safe_dump(with_value(cfg, where, 0.5), sort_keys=False).replace(
                        f"{where[-1]}: 0.5", f"{where[-1]}: {bad}", 1) if isinstance(where[-1], str) else ""  # fmt: skip
            elif isinstance(value, str):
                yield f"{label}: a number", yaml.safe_dump(with_value(cfg, where, 12), sort_keys=False)
                yield (
                    f"{label}: 5000 characters",
                    yaml.safe_dump(with_value(cfg, where, "a" * 5000), sort_keys=False),
                )
                yield f"{label}: NUL inside", yaml.safe_dump(with_value(cfg, where, "a\0b"), sort_keys=False)
        # syntax, cut short at every tenth of the file
        for tenth in range(1, 10):
            yield f"{name}: cut at {tenth}/10", text[: len(text) * tenth // 10]
        yield f"{name}: tab indentation", text.replace("  ", "\t", 3)
        yield f"{name}: unbalanced bracket", text.replace("]", "", 1)
        yield f"{name}: duplicate key", text + "name: twice\n"
        yield f"{name}: duplicate nested key", text.replace("detector:\n", "detector:\n  threshold: 0.3\n", 1)
        yield f"{name}: latin-1", text.replace("name:", "# café\nname:", 1).encode("latin-1")
        yield f"{name}: utf-16", text.encode("utf-16")
        yield f"{name}: NUL bytes", text.encode()[:40] + b"\0\0\0" + text.encode()[40:]
        yield f"{name}: alias bomb", text + "".join(
            f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9) if i else 'x, x, x, x, x, x, x, x, x'}]\n" for i in range(8)
        )  # fmt: skip
        yield f"{name}: a merge of a list", text + "extra: &l [1, 2]\nmore: {<<: *l}\n"
        yield f"{name}: not a mapping", "- " + text.replace("\n", "\n  ")
        yield (
            f"{name}: inline password",
            yaml.safe_dump(
                {**cfg, "outputs": {"mqtt": {"host": "h", "username": "u", "password": SECRET}}},
                sort_keys=False,
            ),
        )
        yield (
            f"{name}: password in a stream URL",
            yaml.safe_dump(
                {
                    **cfg,
                    "source": {
                        "type": "rtsp",
                        "url": f"rtsps//admin:{SECRET}@127.0.0.1/x",
                        "transport": "quic",
                    },
                },
                sort_keys=False,
            ),
        )
        yield f"{name}: booleans of YAML 1.1", text.replace(f"name: {cfg['name']}", "name: off", 1)


def test_a_corpus_of_broken_pipeline_files(
    tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGEPIPE_CORPUS_PW", raising=False)
    files: list[tuple[str, Path]] = []
    for number, (name, content) in enumerate(mutations(base_configs(tmp_path, shared_dir))):
        if content == "":
            continue
        path = tmp_path / f"case{number:03d}.yml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        files.append((name, path))
    for kind in ("fifo", "folder", "missing", "device"):
        path = {"device": Path("/dev/null")}.get(kind, tmp_path / f"{kind}.yml")
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "folder":
            path.mkdir()
        files.append((f"special: {kind}", path))
    verdicts: Counter[str] = Counter()
    failures = []
    for name, path in files:
        for command in (["check", "--no-source"], ["run", "--max-frames", "5", "--no-progress"]):
            code, output = run_cli([*command[:1], str(path), *command[1:]], capsys)
            verdict = judge(code, output, path)
            verdicts[verdict] += 1
            if verdict not in ("valid", "clean"):
                failures.append(f"{name} ({command[0]}): {verdict}\n{output[-600:]}")
    tried = sum(verdicts.values())
    print(f"\npipeline files: {len(files)} files, {tried} runs: {dict(verdicts)}")
    assert len(files) >= 200
    assert failures == [], "\n\n".join(failures[:10])


# ---------------------------------------------------------------- models
def broken_models(folder: Path, shared_models: Path) -> Iterator[tuple[str, Path]]:
    ir = shared_models / "nanodet-plus-m_320_fp16.xml"
    xml, weights = ir.read_bytes(), ir.with_suffix(".bin").read_bytes()
    labels = (shared_models / "coco.names").read_text()

    def model(name: str, xml_bytes: bytes | None, bin_bytes: bytes | None, card: str | None = None,
              names: str | None = labels, suffix: str = ".xml") -> Path:  # fmt: skip
        case = folder / name
        case.mkdir(parents=True)
        path = case / f"m{suffix}"
        if xml_bytes is not None:
            path.write_bytes(xml_bytes)
        if bin_bytes is not None:
            path.with_suffix(".bin").write_bytes(bin_bytes)
        if card is not None:
            path.with_suffix(".json").write_text(card)
        if names is not None:
            (case / "coco.names").write_text(names)
        return path

    card = json.dumps({"arch": "nanodet-plus-m", "input_size": 320, "labels": labels.split("\n")[:80]})
    yield "empty xml", model("empty-xml", b"", weights)
    yield "garbage xml", model("garbage-xml", b"<net><layers><layer id='x'", weights)
    yield "no bin", model("no-bin", xml, None)
    yield "empty bin", model("empty-bin", xml, b"")
    yield "truncated bin", model("short-bin", xml, weights[: len(weights) // 2])
    yield "garbage bin", model("garbage-bin", xml, bytes(len(weights)))
    yield "truncated xml", model("short-xml", xml[: len(xml) // 2], weights)
    yield "garbage onnx", model("garbage-onnx", b"\x08\x07garbage", None, suffix=".onnx")
    yield "empty onnx", model("empty-onnx", b"", None, suffix=".onnx")
    onnx = (shared_models / "nanodet-plus-m_320.onnx").read_bytes()
    yield "truncated onnx", model("short-onnx", onnx[: len(onnx) // 3], None, suffix=".onnx")
    yield "wrong suffix", model("pth", b"x", None, suffix=".pth")
    yield "no labels anywhere", model("no-names", xml, weights, names=None)
    yield "too few labels", model("few-names", xml, weights, names="person\ncar\n")
    yield "empty labels", model("empty-names", xml, weights, names="")
    latin = model("latin-names", xml, weights, names=None)
    (latin.parent / "coco.names").write_bytes(b"caf\xe9\n")
    yield "latin-1 labels", latin
    yield "card not JSON", model("card-syntax", xml, weights, card="{")
    yield "card of another size", model("card-size", xml, weights, card=card.replace("320", "416"))
    yield (
        "card of an unknown architecture",
        model("card-arch", xml, weights, card=card.replace("nanodet-plus-m", "yolox-s")),
    )
    yield (
        "card with a bad channel order",
        model("card-order", xml, weights, card=card[:-1] + ', "channel_order": "grb"}'),
    )
    yield (
        "card labels not a list",
        model("card-labels", xml, weights, card=card.replace('"labels": [', '"labels": 7, "x": [', 1)),
    )
    (folder / "dir" / "m.xml").mkdir(parents=True)
    yield "a folder named m.xml", folder / "dir" / "m.xml"
    (folder / "dangling").mkdir()
    (folder / "dangling" / "m.xml").symlink_to(folder / "nowhere.xml")
    yield "a dangling link", folder / "dangling" / "m.xml"


def test_a_corpus_of_broken_models(
    tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = shared_dir / "models" / "samples" / "bus.jpg"
    video = shared_dir / "data" / "video" / "vtest.mp4"
    verdicts: Counter[str] = Counter()
    failures = []
    cases = list(broken_models(tmp_path / "models", shared_dir / "models"))
    for name, model in cases:
        pipeline = tmp_path / f"{model.parent.name}.yml"
        pipeline.write_text(f"name: m\nsource: {{type: file, path: {video}}}\ndetector: {{model: {model}}}\n")
        for args, path in ((["detect", str(image), "--model", str(model)], Path("--model")),
                           (["run", str(pipeline), "--max-frames", "5", "--no-progress"], pipeline)):  # fmt: skip
            code, output = run_cli(args, capsys)
            verdict = judge(code, output, path)
            verdicts[verdict] += 1
            if verdict not in ("clean",):  # none of these models is usable
                failures.append(f"{name} ({args[0]}): {verdict}\n{output[-600:]}")
    print(f"\nmodels: {len(cases)} models, {sum(verdicts.values())} runs: {dict(verdicts)}")
    assert len(cases) >= 20
    assert failures == [], "\n\n".join(failures[:10])


# ---------------------------------------------------------------- media
def broken_media(folder: Path, shared: Path) -> Iterator[tuple[str, Path, bool]]:
    """(case, file, whether it holds a usable picture)."""
    folder.mkdir()
    bus = cv2.imread(str(shared / "models" / "samples" / "bus.jpg"))
    jpeg = (shared / "models" / "samples" / "bus.jpg").read_bytes()
    video = (shared / "data" / "video" / "vtest.mp4").read_bytes()

    def write(name: str, data: bytes) -> Path:
        (folder / name).write_bytes(data)
        return folder / name

    def image(name: str, picture: np.ndarray) -> Path:
        cv2.imwrite(str(folder / name), picture)
        return folder / name

    yield "empty jpg", write("empty.jpg", b""), False
    yield "truncated jpg", write("short.jpg", jpeg[: len(jpeg) // 2]), False  # OpenCV refuses it whole
    yield "garbage jpg", write("garbage.jpg", bytes(range(256)) * 40), False
    yield "text as png", write("text.png", b"this is not a picture\n"), False
    yield (
        "png with a bad crc",
        write("badcrc.png", bytearray(cv2.imencode(".png", bus)[1].tobytes()[:60]) + b"\0" * 40),
        False,
    )
    yield "gray png", image("gray.png", cv2.cvtColor(bus, cv2.COLOR_BGR2GRAY)), True
    yield "rgba png", image("rgba.png", cv2.cvtColor(bus, cv2.COLOR_BGR2BGRA)), True
    yield "16-bit png", image("deep.png", bus.astype(np.uint16) * 257), True
    yield "1x1 png", image("dot.png", bus[:1, :1]), True
    yield "2x2000 png", image("strip.png", cv2.resize(bus, (2000, 2))), True
    yield "webp", image("bus.webp", bus), True
    yield "tiff", image("bus.tif", bus), True
    yield "bmp", image("bus.bmp", bus), True
    yield "empty mp4", write("empty.mp4", b""), False
    yield "garbage mp4", write("garbage.mp4", bytes(range(256)) * 400), False
    yield "text as mp4", write("text.mp4", b"not a video\n" * 100), False
    yield "jpg named mp4", write("picture.mp4", jpeg), False  # read as a video by its name: no frame
    yield "mp4 without its end", write("head.mp4", video[: len(video) // 3]), True
    yield "mp4 without its start", write("tail.mp4", video[len(video) // 3 :]), False
    damaged = bytearray(video)
    for fraction in (0.2, 0.5, 0.8):
        start = int(len(damaged) * fraction)
        damaged[start : start + 30_000] = bytes((i * 31) % 256 for i in range(30_000))
    yield "mp4 damaged inside", write("damaged.mp4", bytes(damaged)), True
    audio = folder / "audio.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1", str(audio)], check=True
    )
    yield "audio only", audio, False
    (folder / "folder.mp4").mkdir()
    yield "a folder named mp4", folder / "folder.mp4", False


def test_a_corpus_of_broken_media(
    tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = REPO / "models" / "nanodet-plus-m_320_fp16.xml"
    config = tmp_path / "p.yml"
    config.write_text(
        f"name: media\nsource: {{type: file, path: {shared_dir / 'data' / 'video' / 'vtest.mp4'}}}\n"
        f"detector: {{model: {model}}}\noutputs: {{jsonl: {{path: {tmp_path / 'events.jsonl'}}}}}\n"
    )
    verdicts: Counter[str] = Counter()
    failures = []
    cases = list(broken_media(tmp_path / "media", shared_dir))
    for name, media, usable in cases:
        folder = tmp_path / "as-folder" / media.name
        folder.mkdir(parents=True)
        if media.is_file():
            shutil.copy(media, folder / ("x.png" if media.suffix == ".mp4" else media.name))
        runs = (
            ["detect", str(media), "--model", str(model)],
            ["run", str(config), "--source", str(media), "--max-frames", "3", "--no-progress"],
            ["run", str(config), "--source", str(folder), "--max-frames", "3", "--no-progress"],
        )
        for args in runs:
            code, output = run_cli(list(args), capsys)
            verdict = judge(code, output, config)
            verdicts[verdict] += 1
            if verdict not in ("valid", "clean"):
                failures.append(f"{name} ({' '.join(args[:1])}): {verdict}\n{output[-600:]}")
            if args[0] == "detect" and usable and verdict != "valid":
                failures.append(f"{name}: a usable picture was refused by detect\n{output[-600:]}")
    print(f"\nmedia: {len(cases)} files, {sum(verdicts.values())} runs: {dict(verdicts)}")
    assert len(cases) >= 20
    assert failures == [], "\n\n".join(failures[:10])
