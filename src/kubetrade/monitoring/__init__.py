"""Drift and performance monitoring of the served model, and the retraining trigger."""

from kubetrade.monitoring.config import MonitoringConfig
from kubetrade.monitoring.monitor import MonitoringAlert, MonitorResult, run_monitor
from kubetrade.monitoring.retraining import retrain, retrain_command

__all__ = [
    "MonitorResult",
    "MonitoringAlert",
    "MonitoringConfig",
    "retrain",
    "retrain_command",
    "run_monitor",
]
