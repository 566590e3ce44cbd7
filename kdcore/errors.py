"""Errors that the UI and CLI show to a person as a message, not a traceback."""


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names field, value and what is allowed."""


class DataUnavailable(RuntimeError):
    """A dataset is not on disk and could not be downloaded; the message says how to get it."""


class StoreUnavailable(RuntimeError):
    """The run history folder cannot be used (a file, read-only, full); the message says what to do."""
