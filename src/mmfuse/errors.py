"""Exceptions raised by mmfuse.

Every error a user can cause derives from :class:`MMFuseError`, so callers can catch one type.
Messages follow one pattern: *where* (config key, sample index, modality or file), *what was
expected*, *what was found*, and *how to fix it*.
"""

from __future__ import annotations


class MMFuseError(Exception):
    """Base class of every error mmfuse raises on purpose."""


class ConfigError(MMFuseError, ValueError):
    """A configuration value or a constructor argument is invalid."""


class UnknownNameError(ConfigError):
    """A registry lookup failed; the message lists the closest known names."""


class DataError(MMFuseError, ValueError):
    """A sample, a batch or a data file is invalid."""


class ShapeError(DataError):
    """A tensor has the wrong rank, size or dtype."""


class MissingModalityError(DataError):
    """A modality is absent where it is required (or unknown to the model)."""


class CheckpointError(MMFuseError):
    """A checkpoint cannot be read or written."""


class NoModalityWarning(UserWarning):
    """Rows with no modality present were predicted from the model's prior alone (their inputs are all zeros).

    The rows are kept, so predictions stay aligned with the table; the warning names their ids."""


class UnknownWordsWarning(UserWarning):
    """Text cells (or categories read by the text loader) whose every word is outside the fitted vocabulary: the
    model sees only the unknown token for them. The warning names the rows and the column."""
