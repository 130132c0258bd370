"""An installed edgepipe works without the checkout: build a wheel, install it into a fresh venv,
and use it from a folder that is not the checkout (what the README's service install does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def sh(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


def test_a_wheel_installed_in_a_fresh_venv_lists_fetches_checks_and_runs(
    tmp_path: Path, shared_dir: Path
) -> None:
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", REPO, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("edgepipe-*.whl")
    sh(sys.executable, "-m", "venv", tmp_path / "venv", cwd=tmp_path)
    sh(tmp_path / "venv" / "bin" / "pip", "install", "-q", "--disable-pip-version-check", wheel, cwd=tmp_path)
    edgepipe = tmp_path / "venv" / "bin" / "edgepipe"
    work = tmp_path / "elsewhere"  # not the checkout: nothing may be found relative to it
    work.mkdir()

    listed = sh(edgepipe, "models", "list", cwd=work).stdout
    assert "* nanodet-plus-m-416" in listed and "nanodet-plus-m-320" in listed

    models = tmp_path / "my-models"
    sh(
        edgepipe,
        "models",
        "fetch",
        "nanodet-plus-m-320",
        "--from",
        shared_dir / "models",
        "--dest",
        models,
        cwd=work,
    )
    assert (models / "nanodet-plus-m_320_fp16.xml").is_file() and (
        models / "nanodet-plus-m_320_fp16.json"
    ).is_file()

    pipeline = work / "p.yml"
    pipeline.write_text(
        f"name: lobby\nsource: {{type: file, path: {shared_dir / 'data' / 'video' / 'vtest.mp4'}}}\n"
        f"detector: {{model: {models / 'nanodet-plus-m_320_fp16.xml'}, classes: [person]}}\n"
        "rules:\n  - {type: line, name: middle, points: [[240, 100], [240, 300]]}\n"
        "outputs: {jsonl: {path: events.jsonl}}\n"
    )
    assert sh(edgepipe, "check", pipeline, cwd=work).stdout.startswith(f"{pipeline}: ok (lobby: 1 rules")
    ran = sh(edgepipe, "run", pipeline, "--max-frames", "20", cwd=work)
    assert "lobby: 20 frames in" in ran.stderr
    # the installed package is the one that ran, not the checkout's
    where = sh(
        tmp_path / "venv" / "bin" / "python", "-c", "import edgepipe; print(edgepipe.__file__)", cwd=work
    )
    assert str(tmp_path / "venv") in where.stdout
