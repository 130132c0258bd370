"""`edgepipe bench tracker`'s options reach the benchmark, and bad ones are one clean line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import edgepipe.bench.tracker as bench_tracker
from edgepipe.cli import main


def test_a_high_threshold_outside_0_1_is_one_line_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "tracker", "--data", str(tmp_path), "--high-threshold", "1.5"]) != 0
    assert (
        capsys.readouterr().err.strip().splitlines()[-1].startswith("edgepipe: error: --high-threshold 1.5: ")
    )


def test_the_high_threshold_and_the_gate_file_reach_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The benchmark itself is tested in tests/bench; here only what the command line hands it and
    writes from its report."""
    asked: list[tuple[Path, float, int]] = []

    def run(data: Path, high: float, repeats: int) -> dict[str, Any]:
        asked.append((data, high, repeats))
        return {"settings": {"fps": 7}, "accuracy": "the accuracy part"}

    monkeypatch.setattr(bench_tracker, "run_benchmark", run)
    monkeypatch.setattr(bench_tracker, "format_report", lambda report: "report")
    monkeypatch.setattr(bench_tracker, "accuracy_summary", lambda accuracy: {"from": accuracy})
    gate = tmp_path / "gate.json"
    code = main(["bench", "tracker", "--data", str(tmp_path), "--high-threshold", "0.7", "--repeats", "2",
                 "--gate", str(gate)])  # fmt: skip
    assert code == 0 and capsys.readouterr().out == "report\n"
    assert asked == [(tmp_path, 0.7, 2)]
    assert json.loads(gate.read_text()) == {
        "data": tmp_path.name,
        "high_threshold": 0.7,
        "settings": {"fps": 7},
        "trackers": {"from": "the accuracy part"},
    }
    main(["bench", "tracker", "--data", str(tmp_path)])
    assert asked[-1][1] == bench_tracker.MOT15_HIGH_THRESHOLD  # without the option
