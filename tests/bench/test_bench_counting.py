"""Counting on MOT15 (SORT on det.txt, lines of tests/data/counting/mot15_lines.yml): the stored
numbers are the regression gate, and linking must keep halving the count error of the rules before
it without adding double counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepipe.bench.counting import format_report, read_lines, run_benchmark
from edgepipe.config import LinkingConfig
from edgepipe.errors import ConfigError

DATA = Path(__file__).resolve().parent.parent / "data" / "counting"
STORED = json.loads((DATA / "mot15_counts.json").read_text())


@pytest.fixture(scope="module")
def report(shared_data: Path) -> dict[str, object]:
    return run_benchmark(shared_data / "mot15", DATA / "mot15_lines.yml")


@pytest.mark.slow
def test_counts_per_line_and_direction_match_the_stored_numbers(report: dict[str, object]) -> None:
    assert report["linking"] == LinkingConfig().model_dump() == STORED["linking"]
    sequences = report["sequences"]
    assert isinstance(sequences, dict)
    for name, modes in sequences.items():
        for mode in ("unlinked", "linked"):
            assert modes[mode] == STORED["sequences"][name][mode], (name, mode)
    assert report["overall"] == {mode: STORED["overall"][mode] for mode in ("unlinked", "linked")}


def test_linking_halves_the_count_error_without_double_counts(report: dict[str, object]) -> None:
    overall = report["overall"]
    assert isinstance(overall, dict)
    today, linked = STORED["overall"]["today"], overall["linked"]
    assert linked["abs_count_error"] <= today["abs_count_error"] / 2
    assert linked["extra"] <= today["extra"]
    assert linked["true"] == today["true"]  # both on the same truth


def test_the_report_table_lists_every_line_and_direction(report: dict[str, object]) -> None:
    table = format_report(report).splitlines()
    lines = sum(len(seq.lines) for seq in read_lines(DATA / "mot15_lines.yml"))
    assert len(table) == 1 + 2 * lines + 2
    assert table[-1].startswith("linked: 122 true, ")


def test_a_bad_lines_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "lines.yml"
    path.write_text("sequences:\n  TUD-Campus:\n    - {name: a, points: [[0, 0]]}\n")
    with pytest.raises(ConfigError) as error:
        read_lines(path)
    assert (
        str(error.value)
        == f"{path}: sequences.TUD-Campus[0]: points: a line needs at least 2 points [x, y], got 1"
    )
