"""Credentials and namespace for the KFP API.

Auth for a multi-user Kubeflow: a bearer token (``--token``, ``KF_PIPELINES_TOKEN`` or the
projected service-account token file KFP documents for in-cluster clients) and/or a session
cookie (``--cookie`` / ``KF_PIPELINES_COOKIE``, e.g. ``authservice_session=...``). Secrets are
passed to kfp only; nothing here prints them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubetrade.k8s.submit.spec import SubmitError

TOKEN_ENV = "KF_PIPELINES_TOKEN"
COOKIE_ENV = "KF_PIPELINES_COOKIE"
NAMESPACE_ENV = "KF_PIPELINES_NAMESPACE"
# kfp's own names for the projected service-account token (kfp.client.KF_PIPELINES_SA_TOKEN_*)
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
SA_NAMESPACE_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class Auth:
    """Credentials for the KFP API; ``repr`` and ``describe`` never show the values."""

    token: str | None = field(default=None, repr=False)
    cookie: str | None = field(default=None, repr=False)
    token_source: str = "none"
    cookie_source: str = "none"
    token_file: str | None = None  # a projected SA token rotates: kfp rereads it per request

    def describe(self) -> str:
        token = f"bearer token from {self.token_source} (hidden)" if self.token else "no token"
        cookie = f"cookie from {self.cookie_source} (hidden)" if self.cookie else "no cookie"
        return f"{token}, {cookie}"


def resolve_auth(
    token: str | None = None,
    cookie: str | None = None,
    env: Mapping[str, str] | None = None,
    sa_token_path: str | Path | None = None,
) -> Auth:
    """Token: ``--token``, else ``$KF_PIPELINES_TOKEN``, else the in-cluster SA token file
    (``$KF_PIPELINES_SA_TOKEN_PATH`` or KFP's default path) when it exists. Cookie: ``--cookie``
    or ``$KF_PIPELINES_COOKIE``."""
    env = os.environ if env is None else env
    tok, tok_src, tok_file = None, "none", None
    if token:
        tok, tok_src = token.strip(), "--token"
    elif env.get(TOKEN_ENV, "").strip():
        tok, tok_src = env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    else:
        path = Path(sa_token_path or env.get(SA_TOKEN_PATH_ENV) or SA_TOKEN_PATH)
        if path.is_file():
            try:
                text = path.read_text().strip()
            except OSError as exc:
                raise SubmitError(f"cannot read the service-account token {path}: {exc}") from None
            if not text:
                raise SubmitError(f"the service-account token file {path} is empty")
            tok, tok_src, tok_file = text, str(path), str(path)
    ck, ck_src = None, "none"
    if cookie:
        ck, ck_src = cookie.strip(), "--cookie"
    elif env.get(COOKIE_ENV, "").strip():
        ck, ck_src = env[COOKIE_ENV].strip(), f"${COOKIE_ENV}"
    for value, what in ((tok, "token"), (ck, "cookie")):
        if value and any(c in value for c in "\r\n"):
            raise SubmitError(f"the {what} contains a line break; pass it on one line")
    return Auth(tok, ck, tok_src, ck_src, tok_file)


def resolve_namespace(
    namespace: str | None,
    env: Mapping[str, str] | None = None,
    sa_namespace_path: str | None = None,
) -> tuple[str, str]:
    """The profile namespace and where it came from: ``--namespace``, else
    ``$KF_PIPELINES_NAMESPACE``, else the pod's own namespace in a cluster, else ``""``
    (single-user KFP; a multi-user server then gets a one-line error, see ``check_namespace``).
    """
    env = os.environ if env is None else env
    if namespace:
        return namespace, "--namespace"
    if env.get(NAMESPACE_ENV, "").strip():
        return env[NAMESPACE_ENV].strip(), f"${NAMESPACE_ENV}"
    path = Path(sa_namespace_path or SA_NAMESPACE_PATH)
    if path.is_file():
        with contextlib.suppress(OSError):
            text = path.read_text().strip()
            if text:
                return text, str(path)
    return "", "none (single-user KFP)"
