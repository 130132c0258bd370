"""User-facing errors: problems a user can fix, each with a message that says what to do."""

from __future__ import annotations


class EdgepipeError(Exception):
    """Base of every error that the CLI reports as one line instead of a traceback."""

    exit_code = 1


class ConfigError(EdgepipeError):
    """A pipeline file or a command-line option is wrong."""

    exit_code = 2


class ModelError(EdgepipeError):
    """A model file is missing, corrupt or not the kind of model expected."""


class SourceError(EdgepipeError):
    """A video source cannot be opened or read."""


class BrokerError(EdgepipeError):
    """The MQTT broker settings are wrong (bad CA file, refused credentials, ...)."""


class DatasetError(ConfigError):
    """A training data set is wrong (missing image, box outside its image, unknown category ...)."""
