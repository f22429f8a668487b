"""The namespace this process runs in (one small home: the profile, the builders and the
launchers all need it, and none of them should import the others for it)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["current_namespace"]

_SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def current_namespace(default: str = "kubetrade") -> str:
    """The namespace this process runs in: ``$KUBETRADE_NAMESPACE``, the pod's service-account
    namespace file, else ``default``."""
    env = os.environ.get("KUBETRADE_NAMESPACE")
    if env:
        return env
    try:
        text = Path(_SA_NAMESPACE_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return default
    return text or default
