"""Where edgepipe keeps its files when no option says: the state directory, the models folder and
the compiled-model cache; and the lock that keeps one process on a state file.

Installed code never assumes a checkout: these come from environment variables (systemd's
STATE_DIRECTORY and CACHE_DIRECTORY, EDGEPIPE_MODELS, EDGEPIPE_MODEL_CACHE, XDG_CACHE_HOME) or the
current directory, read when asked, never at import.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from edgepipe.errors import OutputError

MODELS_ENV = "EDGEPIPE_MODELS"
MODEL_CACHE_ENV = "EDGEPIPE_MODEL_CACHE"
MODEL_CACHE_OFF = "off"


def state_directory() -> Path:
    """$STATE_DIRECTORY (systemd's StateDirectory=, e.g. /var/lib/edgepipe), else ./state."""
    return Path(os.environ.get("STATE_DIRECTORY") or "state")


def models_directory() -> Path:
    """Where `edgepipe models fetch` puts models and other commands look for them:
    $EDGEPIPE_MODELS, else $STATE_DIRECTORY/models under systemd, else ./models."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    if os.environ.get("STATE_DIRECTORY"):
        return state_directory() / "models"
    return Path("models")


def model_cache_directory() -> Path | None:
    """Where OpenVINO keeps the models it compiled, so that the next start imports them instead of
    compiling again (0.3 s on a CPU; seconds on a GPU, more on an NPU): $EDGEPIPE_MODEL_CACHE
    ("off": no cache), else $CACHE_DIRECTORY/openvino under systemd (CacheDirectory=), else
    $XDG_CACHE_HOME/edgepipe/openvino, by default ~/.cache/edgepipe/openvino. None: no cache."""
    chosen = os.environ.get(MODEL_CACHE_ENV, "").strip()
    if chosen:
        return None if chosen.lower() == MODEL_CACHE_OFF else Path(chosen).expanduser()
    if os.environ.get("CACHE_DIRECTORY"):
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0]) / "openvino"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "edgepipe" / "openvino"
    try:
        return Path.home() / ".cache" / "edgepipe" / "openvino"
    except RuntimeError:  # no HOME and no passwd entry (a bare container user): no cache
        return None


def lock_beside(path: Path, in_use: str) -> IO[bytes]:
    """An exclusive lock on `path`.lock, held while the returned file stays open: two processes
    writing one state file (counts, outbox) would corrupt each other's. OutputError(`in_use`) when
    another process holds it."""
    handle = open(f"{path}.lock", "wb")  # noqa: SIM115  (held open for the state file's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputError(in_use) from None
    return handle
