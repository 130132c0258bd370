"""Session fixtures shared by the whole suite. Area-specific fixtures live in tests/fixtures/."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the suite needs ../shared beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def shared_models(shared_dir: Path) -> Path:
    return shared_dir / "models"


@pytest.fixture(scope="session")
def shared_data(shared_dir: Path) -> Path:
    return shared_dir / "data"


# Area fixtures (broker, RTSP server, compiled models), each in its own module.
pytest_plugins = ["tests.fixtures.mqtt", "tests.fixtures.rtsp", "tests.fixtures.model"]
