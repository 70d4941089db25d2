"""Typed errors a user can cause. The CLI prints them as one ``error:`` line and exits 2."""

from __future__ import annotations


class MerBenchError(Exception):
    """Base class for every error caused by user input (bad flags, bad files, bad selectors)."""

    exit_code: int = 2


class DataError(MerBenchError):
    """A data file is missing, malformed, hostile or does not match the schema."""


class ProtocolError(MerBenchError):
    """A selector, axis value or cell id is invalid."""


class AdapterError(MerBenchError):
    """An adapter cannot be found, imported or built."""


class ConfigError(MerBenchError):
    """An option value (``--set``, ``--params``, presets) is invalid."""
