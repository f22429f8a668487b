"""Project exceptions.

Every error a user can cause is a :class:`KubetradeError`. The CLI prints its
message on one line and exits non-zero; it never shows a traceback for these.
Messages name the problem, the offending value and what would be valid.
"""

from __future__ import annotations

__all__ = [
    "KubetradeError",
    "ConfigError",
    "DataError",
    "DataSourceError",
    "QualityGateError",
    "FeatureStoreError",
    "SplitError",
    "TrainingError",
    "ExportError",
    "RegistryError",
]


class KubetradeError(Exception):
    """Base class of all errors a user can cause (bad input, failed gate)."""

    exit_code: int = 2


class ConfigError(KubetradeError):
    """A configuration file or value is invalid."""


class DataError(KubetradeError):
    """Input data is unusable (missing columns, wrong types, empty, ...)."""


class DataSourceError(DataError):
    """A data source cannot provide what was asked (unknown symbol, date range, file)."""


class QualityGateError(DataError):
    """The data-quality gate failed; the message lists the failed expectations."""

    exit_code = 3


class FeatureStoreError(KubetradeError):
    """The Feast feature store could not be built or queried."""


class SplitError(KubetradeError):
    """Time splits or windows cannot be built from the data as configured."""


class TrainingError(KubetradeError):
    """Training cannot start or failed in a way the user can act on."""


class ExportError(KubetradeError):
    """Model export failed (e.g. TorchScript/ONNX parity check)."""


class RegistryError(KubetradeError):
    """The model registry refused or could not be reached."""
