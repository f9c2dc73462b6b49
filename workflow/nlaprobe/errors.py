"""Exception types. Every message says what is wrong, where (file, field or config key) and what
was expected; the CLI turns them into one line on stderr and a non-zero exit. Values quoted in
messages go through `show`, which bounds them."""

import reprlib
from typing import Any


class NlaprobeError(Exception):
    """Base class for every error that the CLI reports as a clean, user-facing message."""


class ConfigError(NlaprobeError):
    """A config value is missing, unknown or of the wrong type (names the key)."""


class DeviceError(ConfigError, ValueError):
    """An unknown device name, or a CUDA device without a GPU (nlaprobe.models.device); also a
    ValueError, as the pure numeric modules (nlaprobe.ridge) raise for a bad argument."""


class SidecarError(NlaprobeError):
    """A checkpoint or dataset sidecar is missing a field or disagrees with the live model."""


class CheckpointError(NlaprobeError):
    """A checkpoint directory is incomplete or inconsistent (missing value head, layer range...)."""


class DataError(NlaprobeError):
    """An input data file is unreadable or has the wrong columns, widths or values."""


class CorruptFileError(DataError):
    """A file this package wrote no longer matches its recorded SHA-256 or page checksums (bit
    rot, a damaged copy, a truncated transfer), or carries no digest to check. `path` is the
    file; the CLI moves it aside so that the workflow rebuilds it (see nlaprobe.quarantine)."""

    def __init__(self, path, message: str):
        super().__init__(message)
        self.path = path


class _Bounded(reprlib.Repr):
    """`repr` that does a bounded amount of work: a few items per container, a few levels deep,
    long strings and numbers cut (a YAML alias bomb or a huge integer stays cheap to show)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = 4
        self.maxstring = self.maxother = self.maxlong = 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 200:  # str(int) of thousands of digits is slow, or refused (3.11+)
            return f"<integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_BOUNDED = _Bounded()


def show(value: Any, limit: int = 60) -> str:
    """A value as quoted in an error message: its repr, cut to `limit` characters, computed in
    bounded time and memory whatever the value (lone surrogates come out escaped)."""
    text = _BOUNDED.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
