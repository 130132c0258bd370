"""The compiled-model cache on disk: a folder per compiled model, the least recently used removed
once the cache outgrows its bound.

A folder's name is a hash of everything that makes its compiled model (runtime.ModelPool), and
its modification time says when a process last used it: each compile through the cache touches
it. Only folders that look like edgepipe's (MODEL_FOLDER_NAME) are ever removed, so a cache place
shared with other files loses nothing else; nor any used in the last IN_USE_S, which another
process may be compiling into at that moment.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

MAX_CACHE_BYTES = 512 << 20  # ~170 compiled 416 models on a CPU (~3 MB each); GPU blobs are larger
IN_USE_S = 3600.0  # a folder used this recently is kept whatever the size: another process may hold it
MODEL_FOLDER_NAME = re.compile(r"[0-9a-f]{24}")  # what folder_for names a folder: 24 hex digits


def folder_for(root: Path, name: str, model: str) -> Path | None:
    """The cache folder of the compiled model `name` describes (everything that makes it), made or
    found, and marked as used now. None, with a warning that names the `model` file, where it
    cannot be made: the model is then compiled without a cache (OpenVINO itself fails the compile
    where it cannot make its cache folder)."""
    folder = root / hashlib.sha256(name.encode()).hexdigest()[:24]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a cache only saves time: compile without it
        log.warning("compiling %s without the model cache: %s: %s", model, folder, error.strerror)
        return None
    try:
        os.utime(folder)  # the eviction's "last used": a folder imported from is as used as a new one
    except OSError as error:  # a read-only cache (prepared in an image, say) still imports
        log.debug("model cache folder %s not marked as used: %s", folder, error.strerror)
    return folder


def evict(root: Path, keep: Path, max_bytes: int | None = None, now: float | None = None) -> list[Path]:
    """Remove whole model folders under `root`, least recently used first, until the cache holds at
    most `max_bytes` (MAX_CACHE_BYTES); never `keep` (just compiled into) nor a folder used within
    IN_USE_S. What could not be read or removed (another process's, a vanished folder) is left as
    it is. Returns the folders removed."""
    max_bytes = MAX_CACHE_BYTES if max_bytes is None else max_bytes
    now = time.time() if now is None else now
    folders: list[tuple[float, int, Path]] = []  # (last used, bytes, folder)
    try:
        entries = list(os.scandir(root))
    except OSError as error:
        log.debug("model cache %s not listed: %s", root, error.strerror)
        return []
    for entry in entries:
        if not MODEL_FOLDER_NAME.fullmatch(entry.name):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                folders.append((entry.stat().st_mtime, _size_of(Path(entry.path)), Path(entry.path)))
        except OSError:  # removed meanwhile by another process
            continue
    total = sum(size for _, size, _ in folders)
    removed: list[Path] = []
    for used_at, size, folder in sorted(folders):  # the least recently used first
        if total <= max_bytes:
            break
        if folder == keep or now - used_at < IN_USE_S:
            continue
        try:
            shutil.rmtree(folder)
        except OSError as error:
            log.debug("model cache folder %s not removed: %s", folder, error.strerror)
            continue
        total -= size
        removed.append(folder)
    if removed:
        log.info(
            "model cache %s: removed %d compiled model(s) not used for the longest, to stay within %d MB",
            root,
            len(removed),
            max_bytes >> 20,
        )
    return removed


def _size_of(folder: Path) -> int:
    """The bytes of the files in a model folder (OpenVINO writes them flat)."""
    total = 0
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
    return total
