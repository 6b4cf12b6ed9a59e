"""One small exception tree. Library code raises these; only the CLI turns them
into messages and exit codes (2: bad usage/config, 3: could not proceed)."""

from __future__ import annotations


class SecureDiffError(Exception):
    """Base of every error securediff raises on purpose."""


class ConfigError(SecureDiffError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(SecureDiffError, ValueError):
    """A dataset file is missing, truncated or not in the expected format."""


class PrivacyError(SecureDiffError, RuntimeError):
    """A privacy invariant would be broken (re-noising, mixing relations unsoundly)."""


class BudgetExceededError(PrivacyError):
    """The next mechanism would push a client past its privacy budget."""


class CheckpointError(SecureDiffError, ValueError):
    """A checkpoint or run-directory file is missing, corrupt or inconsistent."""


class RunDirectoryError(SecureDiffError, OSError):
    """The run directory cannot be created, resumed or completed."""


class RunInterrupted(RunDirectoryError):
    """A run stopped after its first checkpoint (Ctrl-C, a full disk, a read-only
    file system): its directory is intact and the message says how to resume."""

    def __init__(self, message: str, *, by_user: bool = False) -> None:
        super().__init__(message)
        self.by_user = by_user


def describe_os_error(exc: OSError) -> str:
    """One line for an OS refusal: what failed, on which path."""
    reason = exc.strerror or str(exc) or exc.__class__.__name__
    # os.replace names the destination second: that is the path the user gave.
    path = exc.filename2 if getattr(exc, "filename2", None) is not None else exc.filename
    return f"{reason}: {path}" if path is not None else reason
