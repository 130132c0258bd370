"""Where edgepipe keeps its files when no option says: the state directory and the models folder;
and the lock that keeps one process on a state file.

Installed code never assumes a checkout: these come from environment variables (systemd's
STATE_DIRECTORY, EDGEPIPE_MODELS) or the current directory, read when asked, never at import.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from edgepipe.errors import OutputError

MODELS_ENV = "EDGEPIPE_MODELS"


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
