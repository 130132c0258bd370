"""Where edgepipe keeps its files when no option says: the state directory and the models folder.

Installed code never assumes a checkout: these come from environment variables (systemd's
STATE_DIRECTORY, EDGEPIPE_MODELS) or the current directory, read when asked, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path

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
