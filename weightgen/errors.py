"""The exceptions weightgen raises: one root, a few precise kinds.

The library never prints or exits; the CLI maps these to one-line messages and exit codes
in one place (``cli.main``). Messages say what was wrong and how to fix it.
"""

from __future__ import annotations


class WeightgenError(Exception):
    """Root of every error weightgen raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(WeightgenError):
    """The request itself is invalid (a flag, a shape, a name, a spec entry). Exit code 2."""

    exit_code = 2


class OutputExistsError(WeightgenError):
    """The destination exists and ``force`` was not given; nothing was touched."""


class InsufficientSpaceError(WeightgenError):
    """The output cannot fit on the destination's filesystem; refused before generating."""


class FileFormatError(WeightgenError):
    """A file could not be read: unknown format, malformed header, truncated data."""


class GenerationError(WeightgenError):
    """JAX refused to generate a tensor (wraps the backend's message with the tensor's context)."""
