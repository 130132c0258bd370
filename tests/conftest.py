"""Session fixtures shared by the whole suite. Area-specific fixtures live in tests/fixtures/."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import cv2
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


@pytest.fixture(scope="session")
def vtest_20fps(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vtest.mp4's very frames with their timestamps halved: a real-time run plays it at 20 fps,
    so tests that pace a run to act in the middle of it take half the time (FFmpeg copies the
    stream, nothing is decoded again)."""
    vtest = shared_data / "video" / "vtest.mp4"
    fast = tmp_path_factory.mktemp("video") / "vtest-20fps.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-itsscale", "0.5", "-i", str(vtest), "-c", "copy", str(fast)],
        check=True, timeout=60,
    )  # fmt: skip
    # The tests that play it count on every frame at twice the rate: an FFmpeg that wrote it
    # otherwise would make them test other timings, not fail. (OpenCV reads the copy as 19.97 fps,
    # its mean rate over the remuxed duration.)
    original, copy = cv2.VideoCapture(str(vtest)), cv2.VideoCapture(str(fast))
    frames = [int(c.get(cv2.CAP_PROP_FRAME_COUNT)) for c in (original, copy)]
    rates = [float(c.get(cv2.CAP_PROP_FPS)) for c in (original, copy)]
    original.release()
    copy.release()
    assert frames[1] == frames[0] > 0, f"{fast}: {frames[1]} frames, vtest.mp4 has {frames[0]}"
    assert abs(rates[1] / rates[0] - 2) < 0.02, f"{fast}: {rates[1]} fps, vtest.mp4 {rates[0]}"
    return fast


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Generator[Path, None, None]:
    """One compiled-model cache for the whole suite, its subprocesses too, never the user's own
    ~/.cache: each model variant is compiled once, later pools and runs import it."""
    from edgepipe.paths import MODEL_CACHE_ENV

    folder = tmp_path_factory.mktemp("model-cache")
    before = os.environ.get(MODEL_CACHE_ENV)
    os.environ[MODEL_CACHE_ENV] = str(folder)
    yield folder
    if before is None:
        os.environ.pop(MODEL_CACHE_ENV, None)
    else:
        os.environ[MODEL_CACHE_ENV] = before


# Area fixtures (broker, RTSP server, compiled models), each in its own module.
pytest_plugins = [
    "tests.fixtures.mqtt",
    "tests.fixtures.rtsp",
    "tests.fixtures.model",
    "tests.fixtures.homeassistant",
]


# A test that uses one of these needs a real broker, RTSP server or Home Assistant: it is `slow`,
# never in the fast lane.
SERVER_FIXTURES = frozenset(
    {"broker", "mosquitto", "subscribe", "tls_broker", "rtsp_server", "rtsp_server_fn", "home_assistant"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a broker or an RTSP server `slow`, so that `-m "not slow"` (the
    fast lane) needs neither; tests that need torch mark themselves."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """In CI (CI=true, as .ci/run is run) a skip is a failure: every tool a test needs is installed
    there, so a skip could only hide a broken install."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be skipped: {report.longrepr}"


@pytest.fixture
def small_disk(tmp_path: Path) -> Generator[Callable[[int], Path], None, None]:
    """Factory: `small_disk(size_bytes)` → a folder on a real tmpfs of that size, for disk-full tests
    (needs root, as CI has; unmounted at the end)."""
    import subprocess

    mounted: list[Path] = []

    def make(size_bytes: int) -> Path:
        if os.geteuid() != 0:
            pytest.fail("disk-full tests mount a tmpfs: run the suite as root (CI does)")
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)], check=True)
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
