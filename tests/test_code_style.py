"""The house rules that tools can check: ruff (lint + format) and mypy --strict on the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_installed_code_assumes_no_checkout() -> None:
    """Nothing in the package reaches beside or above itself: no ../shared, no parents[N], no
    repository-relative models folder (an installed edgepipe has no checkout around it)."""
    import re

    pattern = re.compile(r"shared/|parents\[\d\]|\.\./")
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted((REPO / "edgepipe").rglob("*"))
        if path.suffix in (".py", ".json", ".names")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if pattern.search(line)
    ]
    assert found == []
