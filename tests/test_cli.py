"""The command line as a user meets it: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_config import BROKEN

REPO = Path(__file__).resolve().parent.parent


def edgepipe(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgepipe", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_command() -> None:
    result = edgepipe("--help")
    assert result.returncode == 0
    for command in (
        "run",
        "check",
        "snapshot",
        "eval",
        "detect",
        "track",
        "bench",
        "models",
        "export",
        "train",
    ):
        assert f"    {command} " in result.stdout


@pytest.mark.slow
def test_check_reports_every_broken_config_one_line_each(tmp_path: Path) -> None:
    """The config cases of tests/test_config.py through the real command line, all in one run:
    exit 2, one `FILE:LINE: field: message` line per file, in order, no traceback, nothing on stdout."""
    (tmp_path / "m.xml").write_text("<net/>")
    (tmp_path / "m.bin").write_bytes(b"")
    (tmp_path / "v.mp4").write_bytes(b"")
    cases = [case for case in BROKEN if case[0] != "all at once"]
    paths = []
    for number, (_, text, _) in enumerate(cases):
        paths.append(tmp_path / f"p{number}.yml")
        paths[-1].write_text(text)
    result = edgepipe("check", *map(str, paths))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.removeprefix("edgepipe: error: ").splitlines()
    assert len(lines) == len(cases), result.stderr
    for line, path, (case, _, expected) in zip(lines, paths, cases, strict=True):
        assert line.startswith(f"{path}{expected}"), (case, line)


@pytest.mark.slow
def test_run_with_a_missing_pipeline_file(tmp_path: Path) -> None:
    result = edgepipe("run", str(tmp_path / "nope.yml"))
    assert result.returncode == 2
    assert (
        result.stderr
        == f"edgepipe: error: {tmp_path / 'nope.yml'}: cannot read pipeline file: No such file or directory\n"
    )


@pytest.mark.parametrize(("asked", "threads"), [(None, 1), ("3", 3)])
def test_opencv_works_on_the_asking_thread_unless_told_otherwise(asked: str | None, threads: int) -> None:
    """The command line keeps OpenCV's worker pool off the cores OpenVINO's inference runs on;
    OPENCV_FOR_THREADS_NUM, set by the user, still wins."""
    script = (
        "import sys; from edgepipe.cli import main; code = main(['check', '--no-broker', 'pipelines/demo.yml']); "
        "import cv2; print(code, cv2.getNumThreads())"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FOR_THREADS_NUM"}
    if asked is not None:
        env["OPENCV_FOR_THREADS_NUM"] = asked
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split()[-2:] == ["0", str(threads)], result.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_check_accepts_the_bundled_pipelines() -> None:
    # door.yml's broker is localhost:1883, which no test may count on (tests/commands/test_check.py
    # checks brokers, real ones on ports of their own)
    result = edgepipe("check", "--no-broker", "pipelines/demo.yml", "pipelines/door.yml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "pipelines/demo.yml: ok (demo: 2 rules, model nanodet-plus-m_416_fp16.xml, 480x360 frames)",
        "pipelines/door.yml: ok (door: 3 rules, model nanodet-plus-m_416_fp16.xml, 768x432 frames)",
    ]


@pytest.mark.slow
@pytest.mark.integration
def test_check_finds_what_only_the_model_and_the_machine_know_at_its_line(tmp_path: Path) -> None:
    """Errors found after parsing (a class the model lacks, a device not on this machine, an unset
    password variable, a folder as the events file) are FILE:LINE too, and one per file."""
    model = REPO / "models" / "nanodet-plus-m_320_fp16.xml"
    video = REPO.parent / "shared" / "data" / "video" / "vtest.mp4"
    head = f"name: NAME\nsource: {{type: file, path: {video}}}\n"
    cases = {
        "class": (head + f"detector:\n  model: {model}\n  classes: [persn]\n", ":5: detector.classes: unknown class name(s) persn; valid names: person, bicycle"),
        "device": (head + f"detector:\n  model: {model}\n  device: GPU.3\n", ":5: detector.device: device 'GPU.3' is not available on this machine"),
        "rule class": (head + f"detector: {{model: {model}}}\nrules:\n  - type: line\n    name: d\n    points: [[0, 0], [9, 9]]\n    classes: [unicorn]\n",
                       ":8: rules[0].classes: unknown class name(s) unicorn; valid names: person"),
        "password": (head + f"detector: {{model: {model}}}\noutputs:\n  mqtt:\n    host: localhost\n    username: u\n    password_env: EDGEPIPE_NOT_SET_HERE\n",
                     ":8: outputs.mqtt.password_env: the environment variable EDGEPIPE_NOT_SET_HERE is not set"),
        "events folder": (head + f"detector: {{model: {model}}}\noutputs:\n  jsonl: {{path: {tmp_path}}}\n",
                          f":5: outputs.jsonl.path: the events file {tmp_path} is not a file"),
        "counts folder": (head + f"detector: {{model: {model}}}\ncounts:\n  persist: true\n  path: {tmp_path}\n",
                          f":6: counts.path: the counts file {tmp_path} is not a file (a folder?)"),
    }  # fmt: skip
    paths = []
    for name, (text, _) in cases.items():
        paths.append(tmp_path / f"{name.replace(' ', '-')}.yml")
        paths[-1].write_text(text.replace("NAME", name.replace(" ", "-")))
    result = edgepipe("check", "--no-source", *map(str, paths))
    assert result.returncode == 2
    lines = result.stderr.removeprefix("edgepipe: error: ").splitlines()
    for line, path, (_, expected) in zip(lines, paths, cases.values(), strict=True):
        assert line.startswith(f"{path}{expected}"), line
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_check_finds_a_rule_outside_the_frame(tmp_path: Path) -> None:
    """A line at y = 5000 on a 432-pixel video: a finding at the rule's line that names the frame size
    (with --no-source the frame size is unknown and the file passes)."""
    text = (REPO / "pipelines" / "door.yml").read_text()
    text = text.replace("[[600, 300], [600, 432]]", "[[600, 300], [600, 5000]]")
    text = text.replace("../../shared/", str(REPO.parent / "shared") + "/").replace(
        "../models/", str(REPO / "models") + "/"
    )
    path = tmp_path / "door.yml"
    path.write_text(text)
    result = edgepipe("check", "--no-broker", str(path))  # door.yml's broker is not part of this test
    assert result.returncode == 2
    assert result.stderr == (
        f"edgepipe: error: {path}:24: rules[1].points: [600, 5000] is outside the 768x432 frame (x 0..768, y 0..432); "
        "`edgepipe snapshot` draws the frame with a pixel grid\n"
    )
    assert edgepipe("check", "--no-source", "--no-broker", str(path)).returncode == 0
    # without --no-broker both findings are reported: the rule, and the broker that is not there
    both = edgepipe("check", str(path)).stderr
    assert (
        f"{path}:24: rules[1].points" in both and f"{path}:32: outputs.mqtt: cannot reach MQTT broker" in both
    )


@pytest.mark.slow
@pytest.mark.integration
def test_check_reports_an_unreachable_source(tmp_path: Path) -> None:
    model = REPO / "models" / "nanodet-plus-m_320_fp16.xml"
    path = tmp_path / "p.yml"
    path.write_text(
        "name: a\nsource:\n  type: rtsp\n  url: rtsp://127.0.0.1:9/none\n  open_timeout_s: 2\n"
        f"detector:\n  model: {model}\n"
    )
    result = edgepipe("check", str(path))
    assert result.returncode == 2
    # (FFmpeg writes its own lines about the refused connection before ours)
    assert (
        result.stderr.splitlines()[-1]
        == f"edgepipe: error: {path}: rtsp://127.0.0.1:9/none: the source gave no frame within 2 s (state: ended)"
    )


def test_a_closed_pipe_is_not_a_traceback(shared_data: Path) -> None:
    # more output than a pipe buffer holds, so the writer must meet the closed pipe
    detections = shared_data / "mot15" / "Venice-2" / "det" / "det.txt"
    process = subprocess.Popen(
        [sys.executable, "-m", "edgepipe", "track", "--mot", str(detections)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    process.stdout.close()  # like `| head -1`
    _, stderr = process.communicate(timeout=60)
    assert first.startswith("1,1,")
    assert "Traceback" not in stderr
    assert process.returncode == 141


def test_readme_quick_start_fetches_the_model_the_demo_uses() -> None:
    """The README's one-line quick start stays true: the model it fetches is the one demo.yml runs."""
    from edgepipe.config import load_pipeline
    from edgepipe.models import load_manifest

    readme = (REPO / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("python3 -m venv .venv && "))
    fetched = command.split("models fetch ")[1].split()[0]
    assert command.endswith("edgepipe run pipelines/demo.yml")
    _, entries = load_manifest()
    assert load_pipeline(REPO / "pipelines" / "demo.yml").detector.model.resolve() == (
        REPO / "models" / entries[fetched].model_file
    )
