"""The HTML page at `/`: every pipeline of the process with its live stream, counts and status.

The counts and status are written into the page when it is served and refreshed once a second from
/api/live by a few lines of script, so the page reads right without script too.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping

from edgepipe.types import Counts, totals

REFRESH_MS = 1000

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 16px; background: #111; color: #eee; }
h1 { font-size: 20px; margin: 0 0 12px; }
section { margin: 0 0 24px; }
h2 { font-size: 17px; margin: 0 0 6px; }
img { display: block; max-width: 100%; background: #000; }
table { border-collapse: collapse; margin-top: 6px; }
td, th { padding: 2px 10px 2px 0; text-align: left; }
.status { color: #aaa; }
"""

_SCRIPT = """
async function refresh() {
  try {
    const live = await fetch("api/live", {cache: "no-store"}).then(r => r.json());
    for (const [pipeline, payload] of Object.entries(live)) {
      for (const [rule, values] of Object.entries(payload.counts || {})) {
        for (const [key, value] of Object.entries(values)) {
          const cell = document.querySelector(
            `[data-pipeline="${pipeline}"] [data-rule="${rule}"] [data-key="${key}"]`);
          if (cell && typeof value === "number") cell.textContent = value;
        }
      }
      const line = document.querySelector(`[data-pipeline="${pipeline}"] .status`);
      if (line) line.textContent = statusLine(payload);
    }
  } catch (error) {
    document.querySelectorAll(".status").forEach(line => { line.textContent = "no answer from edgepipe"; });
  }
}
function statusLine(payload) {
  const parts = [payload.state];
  if (payload.source_state) parts.push(`source ${payload.source_state}`);
  if (typeof payload.fps === "number") parts.push(`${payload.fps.toFixed(1)} fps`);
  if (payload.frames !== undefined) parts.push(`${payload.frames} frames`);
  if (payload.dropped_frames !== undefined) parts.push(`${payload.dropped_frames} dropped`);
  return parts.join(" · ");
}
setInterval(refresh, REFRESH_MS);
"""


def status_line(payload: Mapping[str, object]) -> str:
    """A pipeline's live state in a few words (the script writes the same)."""
    parts = [str(payload.get("state", "unknown"))]
    if "source_state" in payload:
        parts.append(f"source {payload['source_state']}")
    fps = payload.get("fps")
    if isinstance(fps, (int, float)):
        parts.append(f"{fps:.1f} fps")
    for key, words in (("frames", "frames"), ("dropped_frames", "dropped")):
        if key in payload:
            parts.append(f"{payload[key]} {words}")
    return " · ".join(parts)


def _counts_table(counts: Counts | None) -> str:
    if not counts:
        return "<p>no rules</p>"
    rows = []
    for rule, values in counts.items():
        cells = "".join(
            f'<td>{html.escape(key)} <span data-key="{html.escape(key)}">{value}</span></td>'
            for key, value in totals(values).items()
        )
        rows.append(f'<tr data-rule="{html.escape(rule)}"><th>{html.escape(rule)}</th>{cells}</tr>')
    return f"<table>{''.join(rows)}</table>"


def render_page(pipelines: Mapping[str, Mapping[str, object]]) -> str:
    """The page for each pipeline's live state (LiveView.live: state, frames, fps, ..., counts)."""
    sections = []
    for name, live in pipelines.items():
        escaped = html.escape(name)
        counts = live.get("counts")
        sections.append(
            f'<section data-pipeline="{escaped}"><h2>{escaped}</h2>'
            f'<div class="status">{html.escape(status_line(live))}</div>'
            f'<img src="{escaped}/stream.mjpg" alt="{escaped}, live">'
            f"{_counts_table(counts if isinstance(counts, dict) else None)}</section>"
        )
    script = _SCRIPT.replace("REFRESH_MS", json.dumps(REFRESH_MS))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>edgepipe</title><style>{_STYLE}</style></head><body><h1>edgepipe</h1>"
        f"{''.join(sections)}<script>{script}</script></body></html>"
    )
