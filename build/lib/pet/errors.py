"""Errors a user can act on: each message names the problem and the fix."""


class PetError(Exception):
    """Base class; the CLI prints these as one line instead of a traceback."""


class ConfigError(PetError):
    """A config value is wrong or missing."""


class DataError(PetError):
    """Input text is missing, malformed or inconsistent."""


class CheckpointError(PetError):
    """A checkpoint is missing, truncated, or from an incompatible model."""


def brief(error: BaseException, limit: int = 300) -> str:
    """An exception's message for a one-line error: its first line, and if that
    is longer than ``limit``, cut at the last sentence or clause end before it
    (never mid-word), with an ellipsis saying so."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if len(text) <= limit:
        return text
    cut = max(text.rfind(mark, 0, limit) for mark in (". ", "; ", ", ", ": "))
    cut = cut + 1 if cut > limit // 3 else text.rfind(" ", 0, limit)
    return text[: cut if cut > 0 else limit].rstrip() + " ..."
