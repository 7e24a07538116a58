"""Errors a user can act on: each message names the problem and the fix."""


class PetError(Exception):
    """Base class; the CLI prints these as one line instead of a traceback."""


class ConfigError(PetError):
    """A config value is wrong or missing."""


class DataError(PetError):
    """Input text is missing, malformed or inconsistent."""


class CheckpointError(PetError):
    """A checkpoint is missing, truncated, or from an incompatible model."""
