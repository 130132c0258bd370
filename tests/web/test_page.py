"""The page (edgepipe/web/page.py): its HTML, and a real headless Chromium looking at it while the
demo runs: the picture shows the video with the line where the config says, it changes over time,
and the text shows the counts the events file has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client.parser import text_string_to_metric_families

from edgepipe.config import HttpConfig, load_pipeline
from edgepipe.detect import ModelPool
from edgepipe.pipeline import Pipeline, build
from edgepipe.web import Web
from edgepipe.web.page import render_page
from tests.waiting import wait_until

CHROMIUM = "/usr/bin/chromium"
# as root on a closed network: no sandbox, no GPU, and none of the background connections that would be refused
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def test_the_page_lists_each_pipeline_with_its_stream_counts_and_status() -> None:
    page = render_page(
        {
            "door": {
                "state": "online",
                "frames": 120,
                "fps": 9.5,
                "source_state": "connected",
                "dropped_frames": 3,
                "counts": {"entry": {"in": 4, "out": 1, "by_label": {"person": {"in": 4, "out": 1}}}},
            },
            "yard": {"state": "starting", "counts": None},
        }
    )
    assert '<section data-pipeline="door"><h2>door</h2>' in page
    assert '<div class="status">online · source connected · 9.5 fps · 120 frames · 3 dropped</div>' in page
    assert '<img src="door/stream.mjpg" alt="door, live">' in page
    assert (
        '<tr data-rule="entry"><th>entry</th><td>in <span data-key="in">4</span></td>'
        '<td>out <span data-key="out">1</span></td></tr>'
    ) in page
    assert '<section data-pipeline="yard"><h2>yard</h2><div class="status">starting</div>' in page
    assert "by_label" not in page and "person" not in page  # totals only


def page_counts(page: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for rule, cells in re.findall(r'<tr data-rule="([^"]+)">(.*?)</tr>', page):
        counts[rule] = {key: int(value) for key, value in re.findall(r'data-key="([^"]+)">(\d+)<', cells)}
    return counts


def file_counts(events: Path) -> dict[str, dict[str, int]]:
    """The demo's counts as its events file has them (occupancy: entered and not yet left)."""
    seen: Counter[tuple[str, str]] = Counter()
    if events.exists():
        for line in events.read_text().splitlines():
            event = json.loads(line)
            seen[event["rule"], event.get("direction") or event["type"].removeprefix("zone_")] += 1
    return {
        "crossing": {"in": seen["crossing", "in"], "out": seen["crossing", "out"]},
        "junction": {
            "occupancy": seen["junction", "enter"] - seen["junction", "exit"],
            "enter": seen["junction", "enter"],
            "exit": seen["junction", "exit"],
            "loiter": seen["junction", "loiter"],
        },
    }


class Browser:
    """Debian's Chromium, headless, one fresh profile per call."""

    def __init__(self, profiles: Path) -> None:
        self.profiles = profiles
        self.calls = 0

    def run(self, url: str, *options: str, timeout_ms: int = 3000) -> bytes:
        self.calls += 1
        profile = self.profiles / f"profile-{self.calls}"
        result = subprocess.run(
            [
                CHROMIUM,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--timeout={timeout_ms}",
                *options,
                url,
            ],
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
        return result.stdout

    def screenshot(self, url: str, path: Path) -> NDArray[np.uint8]:
        self.run(url, "--window-size=900,700", f"--screenshot={path}")
        image = cv2.imread(str(path))
        assert image is not None, f"chromium wrote no screenshot at {path}"
        return np.asarray(image, np.uint8)

    def dom(self, url: str) -> str:
        return self.run(url, "--dump-dom").decode()


@pytest.fixture
def browser(tmp_path: Path) -> Browser:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("chromium missing: apt-get install -y chromium (scripts/test installs it)")
    return Browser(tmp_path)


@pytest.fixture
def demo_running(tmp_path: Path, shared_data: Path) -> Iterator[tuple[Web, Pipeline, Path, threading.Thread]]:
    """pipelines/demo.yml at the video's own pace (10 fps, as a camera) with the web server up; the
    server outlives the run, so the page can be read again once the counts are final."""
    from tests.test_api import demo_config

    events = tmp_path / "events.jsonl"
    text = demo_config(tmp_path, shared_data, events).read_text()
    text = re.sub(r"(\n  path: \S+vtest\.mp4)", r"\1\n  realtime: true", text, count=1)
    config_path = tmp_path / "live-demo.yml"
    config_path.write_text(text)
    cfg = load_pipeline(config_path)
    assert cfg.source.type == "file" and cfg.source.realtime
    web = Web(HttpConfig(port=0), [cfg.name])
    with web.server:
        pipeline = build(
            cfg,
            ModelPool(),
            max_frames=150,
            watcher=web.views[cfg.name],
            prometheus=web.prometheus.pipeline(cfg.name),
        )
        loop = threading.Thread(target=pipeline.run, name="demo-loop")
        loop.start()
        try:
            yield web, pipeline, events, loop
        finally:
            pipeline.stop()
            loop.join(timeout=60)


def find_line(screenshot: NDArray[np.uint8]) -> tuple[int, int, int]:
    """The demo's vertical magenta line in a screenshot: (column, first row, last row)."""
    b, g, r = (screenshot[..., i].astype(int) for i in range(3))
    magenta = (b > 170) & (r > 170) & (g < 110)
    column = int(magenta.sum(axis=0).argmax())
    rows = np.flatnonzero(magenta[:, column])
    return column, int(rows.min()), int(rows.max())


@pytest.mark.slow
@pytest.mark.integration
def test_a_browser_sees_the_demo_with_its_line_and_counts(
    demo_running: tuple[Web, Pipeline, Path, threading.Thread], browser: Browser, tmp_path: Path
) -> None:
    web, pipeline, events, loop = demo_running
    url = web.server.url
    assert wait_until(lambda: (pipeline.stats.frames or 0) >= 20, 60), "the demo did not start"

    first = browser.screenshot(url, tmp_path / "first.png")
    # the line (240, 100) → (240, 300) of demo.yml, in its colour along its whole length, in a video
    # shown at its own size (480x360): the picture's offset on the page is where the line is found
    column, top, bottom = find_line(first)
    assert 200 - 4 <= bottom - top <= 200 + 14, (top, bottom)  # the segment, plus its end dots
    left, upper = column - 240, top + (bottom - top - 200) // 2 - 100
    assert left >= 0 and upper >= 0 and left + 480 <= first.shape[1] and upper + 360 <= first.shape[0]
    video = first[upper : upper + 360, left : left + 480]
    for y in range(110, 291, 10):
        b, g, r = video[y, 240].astype(int)
        assert b > 170 and r > 170 and g < 110, (y, (b, g, r))
    # the zone's edge (480, 300) → (270, 200) in cyan: the most cyan pixel within 2 px of the point on it,
    # as JPEG and the line's anti-aliasing blend a single pixel with the video behind it
    near = video[248:253, 373:378].astype(int).reshape(-1, 3)
    b, g, r = near[(near[:, 0] + near[:, 1] - 2 * near[:, 2]).argmax()]
    assert b > 170 and g > 170 and r < 110, (b, g, r)
    # it is the video: grass at the bottom left is green, not the page's dark grey
    b, g, r = video[330, 60].astype(int)
    assert g > b and g > r and g > 60

    page_before = file_counts(events)
    page = page_counts(browser.dom(url))
    page_after = file_counts(events)
    for rule, values in page.items():  # counts only grow: the page's lie between the file's before and after
        for key, value in values.items():
            if key != "occupancy":
                assert page_before[rule][key] <= value <= page_after[rule][key], (rule, key, value)

    assert wait_until(lambda: pipeline.stats.frames >= 60, 60)
    second = browser.screenshot(url, tmp_path / "second.png")
    # the page did not move (JPEG may move an end of the line by a pixel, with the video behind it, and
    # tip the line's two columns either way: CI saw 256, then 257)
    column_now, top_now, bottom_now = find_line(second)
    assert abs(column_now - column) <= 1 and abs(top_now - top) <= 2 and abs(bottom_now - bottom) <= 2
    later = second[upper : upper + 360, left : left + 480]
    assert np.abs(later.astype(int) - video.astype(int)).mean() > 2.0  # people walked, the clock moved on

    loop.join(timeout=60)  # the run ends at max_frames; the server still shows what it counted
    assert not loop.is_alive()
    final = page_counts(browser.dom(url))
    assert (
        final
        == file_counts(events)
        == {
            rule: {key: value for key, value in values.items() if isinstance(value, int)}
            for rule, values in pipeline.rules.counts().items()
        }
    )
    assert sum(final["junction"].values()) > 0  # people did use the zone in 15 s of the demo
    # /metrics, read with prometheus-client's parser, counts the same events
    with urlopen(url + "metrics", timeout=10) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    counted = {
        (s.labels["rule"], s.labels["type"], s.labels["direction"]): s.value
        for s in families["edgepipe_events"].samples
        if s.name == "edgepipe_events_total"
    }
    in_file = Counter(
        (e["rule"], e["type"], e.get("direction", ""))
        for e in map(json.loads, events.read_text().splitlines())
    )
    assert counted == dict(in_file)
    frames = families["edgepipe_frames"].samples[0]
    assert frames.name == "edgepipe_frames_total" and frames.value == pipeline.stats.frames == 150
