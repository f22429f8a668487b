"""Moved to :mod:`kubetrade.k8s.train_step`; this re-export keeps old imports working."""

from kubetrade.k8s.train_step import (
    PROFILE_ENV,
    katib_options,
    resolve_profile,
    stage_inputs,
    train_on_cluster,
)

__all__ = ["PROFILE_ENV", "katib_options", "resolve_profile", "stage_inputs", "train_on_cluster"]
