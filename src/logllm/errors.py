"""Errors a user can fix. The CLI prints them as one clear message, never as a traceback."""

from __future__ import annotations


class LogLLMError(Exception):
    """Base class for user-facing errors: the message names the file, line or option and the bad value."""


class DataError(LogLLMError):
    """Input data is missing, malformed or inconsistent (names the file and line)."""


class ConfigError(LogLLMError):
    """An option or configuration value is invalid (names the option and the value)."""
