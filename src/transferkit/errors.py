"""Errors a user can cause. Each message names the input and the fix; the CLI prints it in one line."""

from __future__ import annotations


class TransferkitError(Exception):
    """Base class: an error the user can fix (bad path, unknown model, bad data, …)."""


class UnknownBackboneError(TransferkitError):
    """The backbone spec does not name a known source or model."""


class WeightsNotFoundError(TransferkitError):
    """The pretrained weights of a backbone cannot be found (offline, wrong path, missing package)."""


class DataError(TransferkitError):
    """The data handed in cannot be read or does not fit the task (missing column, one class, …)."""


class FeatureStoreError(TransferkitError):
    """A feature folder is missing, incomplete, or does not match what is asked of it."""


class HeadError(TransferkitError):
    """A head cannot be fitted or used as asked (unknown head, wrong target type, …)."""


class AdaptError(TransferkitError):
    """Source and target data cannot be compared or adapted as given (class sets differ, too few items, …)."""


class FinetuneError(TransferkitError):
    """A fine-tuning run cannot start or continue as asked (bad option, mismatched resume, bad run folder)."""


class Interrupted(FinetuneError):
    """Training stopped on a signal after saving its state; rerun with --resume to continue."""
