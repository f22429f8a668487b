"""The CI loop: upload the package as a named *pipeline version* (idempotent: a version of the
same name is reused), then start a run of that version or create/update one *recurring run*
per name (:func:`execute_plan`). :func:`describe_plan` lists the same calls without touching
the network (``--dry-run``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetrade.errors import KubetradeError
from kubetrade.k8s.submit.auth import Auth
from kubetrade.k8s.submit.client import (
    api_message,
    check_namespace,
    follow_run,
    kfp_prints_to_stderr,
    make_client,
    require_id,
)
from kubetrade.k8s.submit.spec import SubmitError


@dataclass
class SubmitPlan:
    """What ``kubetrade submit --pipeline-name ...`` does, before any request is sent."""

    package: Path
    host: str
    namespace: str
    namespace_source: str
    experiment: str
    pipeline_name: str | None
    version_name: str | None
    run_name: str
    params: dict[str, Any]
    auth: Auth
    recurring: str | None = None  # normalized 6-field cron
    wait: bool = False


def _eq_filter(name: str) -> str:
    # filter.proto: operation EQUALS is 1; kfp.Client sends the same
    return json.dumps(
        {"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]}
    )


def describe_plan(plan: SubmitPlan) -> list[str]:
    """The calls ``execute_plan`` makes, in order (``--dry-run``); no secret is shown."""
    api = f"{plan.host or '<--host>'}/apis/v2beta1"
    ns = plan.namespace or "(none: single-user)"
    nsq = f"&namespace={plan.namespace}" if plan.namespace else ""
    lines = [
        "dry run: nothing is sent",
        f"host {plan.host or '(not set)'}; namespace {ns} [{plan.namespace_source}]; "
        f"{plan.auth.describe()}",
        f"parameters: {json.dumps(plan.params, sort_keys=True) if plan.params else '(defaults)'}",
    ]
    steps: list[str] = []
    if plan.pipeline_name:
        steps += [
            f"GET  {api}/pipelines?filter=display_name=={plan.pipeline_name!r}{nsq}: "
            f"find pipeline {plan.pipeline_name!r}",
            f"POST {api}/pipelines: create it if missing",
            f"GET  {api}/pipelines/{{pipeline_id}}/versions?filter=display_name=="
            f"{plan.version_name!r}: reuse version {plan.version_name!r} if it exists",
            f"POST {api}/pipelines/upload_version?name={plan.version_name}&pipelineid="
            f"{{pipeline_id}} (multipart {plan.package}): otherwise upload it",
        ]
    else:
        steps.append(f"(package {plan.package} sent inline with the run)")
    steps += [
        f"GET  {api}/experiments?filter=display_name=={plan.experiment!r}{nsq}: "
        f"find experiment {plan.experiment!r}",
        f"POST {api}/experiments: create it if missing",
    ]
    if plan.recurring:
        steps += [
            f"GET  {api}/recurringruns?experiment_id={{experiment_id}}&filter=display_name=="
            f"{plan.run_name!r}: find recurring run {plan.run_name!r}; keep it if cron, version "
            "and parameters are the same",
            f"DELETE {api}/recurringruns/{{id}}: otherwise drop it (KFP has no update)",
            f"POST {api}/recurringruns: cron {plan.recurring!r}, max_concurrency 1, no_catchup",
        ]
    else:
        steps.append(f"POST {api}/runs: run {plan.run_name!r}")
        if plan.wait:
            steps.append(
                f"GET  {api}/runs/{{run_id}}: until it ends (retried on a dropped connection)"
            )
    return lines + [f"{i}. {step}" for i, step in enumerate(steps, 1)]


def _ensure_pipeline(client: Any, plan: SubmitPlan) -> str:
    ns = plan.namespace or None
    found = client.list_pipelines(filter=_eq_filter(plan.pipeline_name or ""), namespace=ns)
    pipelines = list(getattr(found, "pipelines", None) or [])
    if len(pipelines) > 1:
        raise SubmitError(
            f"{len(pipelines)} pipelines are named {plan.pipeline_name!r}; rename one"
        )
    if pipelines:
        return require_id(pipelines[0], "pipeline_id", "list pipelines", plan.host)
    import kfp_server_api

    body = kfp_server_api.V2beta1Pipeline(
        display_name=plan.pipeline_name,
        description="kubetrade training pipeline (uploaded by kubetrade submit)",
        namespace=ns,
    )
    created = client._pipelines_api.pipeline_service_create_pipeline(pipeline=body)
    return require_id(created, "pipeline_id", "create pipeline", plan.host)


def _ensure_version(client: Any, plan: SubmitPlan, pipeline_id: str) -> tuple[str, bool]:
    found = client.list_pipeline_versions(
        pipeline_id=pipeline_id, filter=_eq_filter(plan.version_name or "")
    )
    versions = list(getattr(found, "pipeline_versions", None) or [])
    if versions:
        return require_id(versions[0], "pipeline_version_id", "list versions", plan.host), False
    version = client.upload_pipeline_version(
        str(plan.package), plan.version_name, pipeline_id=pipeline_id,
        description=f"{plan.pipeline_name} at {plan.version_name}",
    )  # fmt: skip
    return require_id(version, "pipeline_version_id", "upload_version", plan.host), True


def _ensure_experiment(client: Any, plan: SubmitPlan) -> str:
    exp = client.create_experiment(plan.experiment, namespace=plan.namespace or None)
    return require_id(exp, "experiment_id", "experiment", plan.host)


def _same_schedule(rr: Any, plan: SubmitPlan, pipeline_id: str, version_id: str) -> bool:
    ref = getattr(rr, "pipeline_version_reference", None)
    cron = getattr(getattr(getattr(rr, "trigger", None), "cron_schedule", None), "cron", None)
    params = getattr(getattr(rr, "runtime_config", None), "parameters", None) or {}
    return (
        cron == plan.recurring
        and getattr(ref, "pipeline_id", None) == pipeline_id
        and getattr(ref, "pipeline_version_id", None) == version_id
        and params == plan.params
    )


def execute_plan(
    plan: SubmitPlan,
    client_factory: Callable[..., Any] | None = None,
    on_state: Callable[[str], None] | None = None,
    timeout_s: int = 6 * 3600,
    poll_s: float = 10.0,
    retries: int = 5,
) -> dict[str, Any]:
    """Upload the version (if new), then start a run or create/update the recurring run."""
    if not plan.pipeline_name or not plan.version_name:
        raise SubmitError("--pipeline-name and --version-name go together")
    client = make_client(plan.host, plan.namespace, plan.auth, client_factory)
    info: dict[str, Any] = {}
    step = "connect"
    try:
        with kfp_prints_to_stderr():
            check_namespace(client, plan.host, plan.namespace)
            step = "pipeline"
            pipeline_id = _ensure_pipeline(client, plan)
            step = "upload_version"
            version_id, uploaded = _ensure_version(client, plan, pipeline_id)
            info.update(pipeline_id=pipeline_id, version_id=version_id,
                        version="uploaded" if uploaded else "exists")  # fmt: skip
            step = "experiment"
            experiment_id = _ensure_experiment(client, plan)
            if plan.recurring:
                step = "recurring run"
                info.update(_upsert_recurring(client, plan, experiment_id, pipeline_id, version_id))
                return info
            step = "run"
            run = client.run_pipeline(
                experiment_id=experiment_id, job_name=plan.run_name, params=plan.params,
                pipeline_id=pipeline_id, version_id=version_id,
            )  # fmt: skip
    except KubetradeError:
        raise
    except Exception as exc:
        raise SubmitError(
            f"Kubeflow Pipelines at {plan.host} refused the {step} step: {api_message(exc)}"
        ) from None
    info.update(run_id=require_id(run, "run_id", "create run", plan.host), state="SUBMITTED")
    if plan.wait:
        info["state"] = follow_run(
            client, run.run_id, plan.host, timeout_s, poll_s, retries, on_state
        )
    return info


def _upsert_recurring(
    client: Any, plan: SubmitPlan, experiment_id: str, pipeline_id: str, version_id: str
) -> dict[str, Any]:
    found = client.list_recurring_runs(
        experiment_id=experiment_id, filter=_eq_filter(plan.run_name), page_size=100
    )
    existing = list(getattr(found, "recurring_runs", None) or [])
    if len(existing) == 1 and _same_schedule(existing[0], plan, pipeline_id, version_id):
        return {"recurring_run_id": existing[0].recurring_run_id, "recurring": "unchanged"}
    for rr in existing:  # KFP v2beta1 has no update: replace (one per name)
        client.delete_recurring_run(rr.recurring_run_id)
    created = client.create_recurring_run(
        experiment_id=experiment_id, job_name=plan.run_name, cron_expression=plan.recurring,
        params=plan.params, pipeline_id=pipeline_id, version_id=version_id,
        max_concurrency=1, no_catchup=True,
        description=f"{plan.pipeline_name} {plan.version_name} on '{plan.recurring}'",
    )  # fmt: skip
    return {
        "recurring_run_id": require_id(
            created, "recurring_run_id", "create recurring run", plan.host
        ),
        "recurring": "updated" if existing else "created",
    }
