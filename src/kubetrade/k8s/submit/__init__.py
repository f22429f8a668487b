"""Submit a compiled pipeline to Kubeflow Pipelines with ``kfp.Client``.

Two ways in: a one-off run from the local package (``submit_pipeline``), or the CI loop
(``SubmitPlan`` + ``execute_plan``): upload the package as a named *pipeline version*
(idempotent: a version of the same name is reused), then start a run of that version or
create/update one *recurring run* per name. ``describe_plan`` prints the same calls without
touching the network (``--dry-run``).

Modules: ``spec`` (the package's inputs, ``--param`` typing, cron), ``auth`` (token, cookie,
namespace), ``client`` (the KFP client, following a run, the one-off run), ``plan`` (the
versioned CI loop). Every public name is re-exported here.

Auth for a multi-user Kubeflow: a bearer token (``--token``, ``KF_PIPELINES_TOKEN`` or the
projected service-account token file KFP documents for in-cluster clients) and/or a session
cookie (``--cookie`` / ``KF_PIPELINES_COOKIE``, e.g. ``authservice_session=...``). Secrets are
passed to kfp only; nothing here prints them.
"""

from __future__ import annotations

from kubetrade.k8s.submit.auth import (
    COOKIE_ENV,
    NAMESPACE_ENV,
    SA_NAMESPACE_PATH,
    SA_TOKEN_PATH,
    SA_TOKEN_PATH_ENV,
    TOKEN_ENV,
    Auth,
    resolve_auth,
    resolve_namespace,
)
from kubetrade.k8s.submit.client import TERMINAL, check_reachable, submit_pipeline
from kubetrade.k8s.submit.plan import SubmitPlan, describe_plan, execute_plan
from kubetrade.k8s.submit.spec import (
    SubmitError,
    normalize_cron,
    parse_params,
    pipeline_name_of,
    read_pipeline_inputs,
)

__all__ = [
    "SubmitError",
    "Auth",
    "SubmitPlan",
    "resolve_auth",
    "resolve_namespace",
    "read_pipeline_inputs",
    "pipeline_name_of",
    "parse_params",
    "normalize_cron",
    "describe_plan",
    "execute_plan",
    "submit_pipeline",
    "check_reachable",
    "TERMINAL",
    "TOKEN_ENV",
    "COOKIE_ENV",
    "NAMESPACE_ENV",
    "SA_TOKEN_PATH_ENV",
    "SA_TOKEN_PATH",
    "SA_NAMESPACE_PATH",
]
