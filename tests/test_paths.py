"""Where edgepipe keeps its files when no option says (edgepipe/paths.py): the compiled-model cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepipe.paths import MODEL_CACHE_ENV, model_cache_directory


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({MODEL_CACHE_ENV: "/srv/cache"}, "/srv/cache"),  # named: used as it is, before all others
        ({MODEL_CACHE_ENV: "off", "CACHE_DIRECTORY": "/var/cache/edgepipe"}, None),
        ({MODEL_CACHE_ENV: " OFF "}, None),
        ({"CACHE_DIRECTORY": "/var/cache/edgepipe"}, "/var/cache/edgepipe/openvino"),  # systemd
        ({"CACHE_DIRECTORY": "/var/cache/a:/var/cache/b"}, "/var/cache/a/openvino"),  # several: the first
        ({"XDG_CACHE_HOME": "/home/u/.xdg"}, "/home/u/.xdg/edgepipe/openvino"),
        ({"HOME": "/home/u"}, "/home/u/.cache/edgepipe/openvino"),
        ({MODEL_CACHE_ENV: "  ", "HOME": "/home/u"}, "/home/u/.cache/edgepipe/openvino"),  # blank: unset
    ],
)
def test_the_model_cache_is_where_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], expected: str | None
) -> None:
    for name in (MODEL_CACHE_ENV, "CACHE_DIRECTORY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert model_cache_directory() == (None if expected is None else Path(expected))
