"""Exception types. Every message says what is wrong, where (file, field or config key) and what
was expected; the CLI turns them into one line on stderr and a non-zero exit."""


class NlaprobeError(Exception):
    """Base class for every error that the CLI reports as a clean, user-facing message."""


class ConfigError(NlaprobeError):
    """A config value is missing, unknown or of the wrong type (names the key)."""


class SidecarError(NlaprobeError):
    """A checkpoint or dataset sidecar is missing a field or disagrees with the live model."""


class CheckpointError(NlaprobeError):
    """A checkpoint directory is incomplete or inconsistent (missing value head, layer range...)."""


class DataError(NlaprobeError):
    """An input data file is unreadable or has the wrong columns, widths or values."""
