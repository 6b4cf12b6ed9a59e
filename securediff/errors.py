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
