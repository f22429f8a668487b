"""MLflow registry: versions with provenance tags, champion/challenger aliases."""

from kubetrade.registry.champion import (
    Promotion,
    git_commit,
    register_challenger,
    sha256_file,
    verify_sha256,
)

__all__ = ["Promotion", "git_commit", "register_challenger", "sha256_file", "verify_sha256"]
