"""The models edgepipe knows (the manifest, shipped inside the package) and how they are fetched.

A fetch copies the files from a folder (`--from DIR`) or downloads the official release, checks
every sha256 against the manifest, and writes the model card beside the model. Files are written
under a temporary name and renamed into place, so a failed fetch leaves nothing half-written.
Where they go: `--dest`, else `paths.models_directory()`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.errors import ConfigError, ModelError
from edgepipe.modelcard import ModelCard, card_path, read_labels, write_card
from edgepipe.paths import MODELS_ENV, models_directory

PACKAGE_DATA = Path(__file__).resolve().parent / "data"  # manifest.json and label files, in the wheel
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One model of the manifest."""

    name: str
    arch: str
    input_size: int
    labels_file: str
    input_kind: str
    channel_order: str
    precision: str
    model_file: str
    files: dict[str, str]  # file name → sha256
    download_url: str | None
    download_sha256: str | None
    download_convert: str | None
    coco_map_official: float | None
    licence: str
    note: str


def load_manifest() -> tuple[str, dict[str, ManifestEntry]]:
    """(default model name, entries by name)."""
    path = PACKAGE_DATA / "manifest.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelError(f"cannot read the model manifest {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ModelError(f"{path}:{error.lineno}: manifest is not valid JSON: {error.msg}") from None
    entries = {}
    for item in data["models"]:
        download = item.get("download") or {}
        entries[item["name"]] = ManifestEntry(
            name=item["name"],
            arch=item["arch"],
            input_size=int(item["input_size"]),
            labels_file=item["labels"],
            input_kind=item["input_kind"],
            channel_order=item.get("channel_order", "bgr"),
            precision=item["precision"],
            model_file=item["model"],
            files={f["name"]: f["sha256"] for f in item["files"]},
            download_url=download.get("url"),
            download_sha256=download.get("sha256"),
            download_convert=download.get("convert"),
            coco_map_official=item.get("coco_map_official"),
            licence=item.get("licence", ""),
            note=item.get("note", ""),
        )
    return str(data["default"]), entries


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def get_entry(name: str) -> ManifestEntry:
    _, entries = load_manifest()
    if name not in entries:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(entries)}")
    return entries[name]


def default_model_path() -> Path:
    """The default model's file in the models folder; a ConfigError that says how to get it."""
    default, entries = load_manifest()
    path = models_directory() / entries[default].model_file
    if not path.is_file():
        raise ConfigError(
            f"no --model given and the default model {path} is not there: run "
            f"`edgepipe models fetch {default}` (folder: --dest, ${MODELS_ENV} or ./models) or pass --model"
        )
    return path


def _card_for(entry: ManifestEntry, labels: tuple[str, ...], source: dict[str, str]) -> ModelCard:
    return ModelCard(
        arch=entry.arch,
        input_size=entry.input_size,
        labels=labels,
        input_kind="uint8_nhwc" if entry.input_kind == "uint8_nhwc" else "float_nchw",
        channel_order="rgb" if entry.channel_order == "rgb" else "bgr",
        precision=entry.precision,
        source=source,
    )


def fetch(entry: ManifestEntry, dest: Path, from_dir: Path | None) -> Path:
    """Place `entry` in `dest` and return the path of its model file."""
    dest.mkdir(parents=True, exist_ok=True)
    labels = read_labels(PACKAGE_DATA / entry.labels_file)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as tmp:
        staging = Path(tmp)
        if from_dir is not None:
            source = _copy_verified(entry, from_dir, staging)
        else:
            source = _download(entry, staging)
        write_card(_card_for(entry, labels, source), card_path(staging / entry.model_file))
        for item in sorted(staging.iterdir()):
            item.replace(dest / item.name)
    return dest / entry.model_file


def _copy_verified(entry: ManifestEntry, from_dir: Path, staging: Path) -> dict[str, str]:
    if not from_dir.is_dir():
        raise ConfigError(f"--from {from_dir}: no such folder")
    for name, expected in entry.files.items():
        origin = from_dir / name
        if not origin.is_file():
            raise ModelError(f"{origin} is missing: {entry.name} needs {', '.join(entry.files)}")
        target = staging / name
        shutil.copyfile(origin, target)
        actual = sha256_of(target)
        if actual != expected:
            raise ModelError(
                f"{origin}: sha256 {actual} does not match the manifest's {expected}: the file is "
                "corrupt or a different version; nothing was written"
            )
    return {"fetched_from": str(from_dir.resolve()), "sha256": entry.files[entry.model_file]}


def _download(entry: ManifestEntry, staging: Path) -> dict[str, str]:
    if entry.download_url is None:
        raise ModelError(f"{entry.name} has no public download; copy its files and use --from DIR")
    target = staging / Path(entry.download_url).name
    try:
        with (
            urllib.request.urlopen(entry.download_url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            target.open("wb") as out,
        ):
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ModelError(
            f"cannot download {entry.download_url}: {reason}; without network, copy the files "
            "and run `edgepipe models fetch NAME --from DIR`"
        ) from None
    actual = sha256_of(target)
    if entry.download_sha256 is not None and actual != entry.download_sha256:
        raise ModelError(f"{entry.download_url}: sha256 {actual} does not match {entry.download_sha256}")
    if entry.download_convert == "onnx-to-fp16-ir":
        _onnx_to_fp16_ir(target, staging / entry.model_file)
        target.unlink()
    return {"url": entry.download_url, "download_sha256": actual}


def _onnx_to_fp16_ir(onnx_path: Path, xml_path: Path) -> None:
    import openvino as ov

    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as error:  # OpenVINO raises plain RuntimeError for any unreadable model
        raise ModelError(f"{onnx_path.name} is not a readable ONNX model: {error}") from None
    ov.save_model(model, str(xml_path), compress_to_fp16=True)
