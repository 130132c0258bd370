"""User-facing errors: problems a user can fix, each with a message that says what to do."""

from __future__ import annotations

import re


class EdgepipeError(Exception):
    """Base of every error that the CLI reports as one line instead of a traceback."""

    exit_code = 1


class ConfigError(EdgepipeError):
    """A pipeline file or a command-line option is wrong."""

    exit_code = 2


class FieldError(ConfigError):
    """A setting that only a stage can judge (a class name the model lacks, a device not on this
    machine, an unset password variable), raised with its field path inside the stage's section;
    `build` prefixes the section and the pipeline file's line (PipelineConfig.error_at)."""

    def __init__(self, field: tuple[str | int, ...], message: str) -> None:
        super().__init__(f"{'.'.join(map(str, field))}: {message}")
        self.field = field
        self.message = message


class ModelError(EdgepipeError):
    """A model file is missing, corrupt or not the kind of model expected."""


class SourceError(EdgepipeError):
    """A video source cannot be opened or read."""


class BrokerError(EdgepipeError):
    """The MQTT broker settings are wrong (bad CA file, refused credentials, ...)."""


class OutputError(EdgepipeError):
    """An output cannot be written: the events file, the MQTT outbox, an image or video to write."""


_URL_PASSWORD = re.compile(r"(//[^:/@\s]+):[^@/\s]*@")


def mask_secrets(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***, for logs and messages."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


class DatasetError(ConfigError):
    """A training data set is wrong (missing image, box outside its image, unknown category ...)."""
