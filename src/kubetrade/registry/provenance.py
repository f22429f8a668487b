"""Provenance of a registered version: the SHA-256 of each exported file (checked again before
registering: an artifact changed after export is never promoted) and the git commit."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from pathlib import Path

from kubetrade.errors import RegistryError

__all__ = ["git_commit", "sha256_file", "verify_sha256"]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(files: Mapping[str, str | Path], expected: Mapping[str, str]) -> None:
    """Raise RegistryError if a file's SHA-256 differs from what export recorded."""
    for key, path in files.items():
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise RegistryError(
                f"{path}: cannot read it ({type(exc).__name__}); the export is incomplete, "
                "not promoting"
            ) from exc
        if expected.get(key) != actual:
            raise RegistryError(
                f"{path}: SHA-256 {actual[:12]}... does not match the exported "
                f"{str(expected.get(key))[:12]}...; the artifact changed after export, not promoting"
            )


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"
