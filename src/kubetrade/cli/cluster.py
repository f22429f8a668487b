"""``kubetrade compile`` (the pipeline as KFP YAML for a target KFP backend) and
``kubetrade submit`` (to Kubeflow Pipelines: a run, a pipeline version + run, a recurring run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kubetrade.cli.common import ConfigOpt, console, out


def compile_(
    output: Annotated[Path, typer.Option("--output", "-o")] = Path(
        "pipelines/compiled/kubetrade_training.yaml"
    ),
    config: ConfigOpt = Path("config/pipeline.yaml"),
    backend: Annotated[
        str,
        typer.Option(
            help="kubeflow: train/tune as PyTorchJob/Katib (GPUs from the cluster profile); "
            "local: train/tune inside the pipeline task's pod"
        ),
    ] = "kubeflow",
    gpu: Annotated[
        bool,
        typer.Option(
            "--gpu", help="backend local only: put train/tune on GPU nodes (1 nvidia.com/gpu)"
        ),
    ] = False,
    kfp_version: Annotated[
        str,
        typer.Option(
            help="target KFP backend: emit only the kubernetes fields it understands "
            "(2.14.0, 2.15.0 or 2.16.1 = kind; older backends cannot resolve the pipeline's "
            "dsl.Collected fan-in); the default, the oldest, runs on all of them"
        ),
    ] = "2.14.0",
    profile: Annotated[
        str | None,
        typer.Option(
            help="run form defaults: demo (config/pipeline.yaml, the `make run` model) or full "
            "(the guide's model, config/run_form.yaml); default full for --backend kubeflow, "
            "demo for local"
        ),
    ] = None,
) -> None:
    """Compile the pipeline to KFP YAML (the run form's defaults from --profile).

    The YAML holds the ParallelFor over RL agents, the evaluation gate and the Kubernetes
    settings (shared data PVC, MLflow env from ConfigMap/Secrets, GPU placement).
    """
    from kubetrade.errors import ConfigError
    from kubetrade.pipeline.steps import load_run_config

    if backend not in ("kubeflow", "local"):
        raise ConfigError(f"--backend {backend!r}: use kubeflow or local")
    if gpu and backend != "local":
        raise ConfigError(
            "--gpu is for --backend local; with kubeflow the PyTorchJob pods get GPUs from the "
            "cluster profile (manifests/overlays/gpu)"
        )
    from kubetrade.k8s.versions import check_kfp_version

    check_kfp_version(kfp_version)
    if output.exists() and not output.is_file():
        # the compiled file replaces the target atomically: a device, FIFO or folder would be
        # swapped for a regular file (as root, /dev/full itself)
        raise ConfigError(
            f"--output {output}: exists and is not a regular file; name a .yaml file path"
        )
    from kubetrade.pipeline.run_form import profile_params

    run = load_run_config(config)
    profile = profile or ("full" if backend == "kubeflow" else "demo")
    form = profile_params(run, profile, backend)
    path = _retargeted_compile(output, form, gpu, kfp_version)
    out.print(
        f"wrote {path} (backend {backend}{', GPU train/tune' if gpu else ''}, profile {profile}, "
        f"KFP backend {kfp_version})"
    )


def _retargeted_compile(output: Path, form: Any, gpu: bool, kfp_version: str) -> Path:
    """Compile into a temporary file, keep the fields ``kfp_version`` knows, then move it."""
    import os
    import tempfile

    import yaml

    from kubetrade.k8s import goyaml
    from kubetrade.pipeline.runner import compile_pipeline
    from kubetrade.pipelines.training import retarget_platform_spec

    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".compile-", suffix=".yaml", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        compile_pipeline(tmp, gpu=gpu, params=form)
        text = tmp.read_text(encoding="utf-8")
        lines = text.splitlines(True)
        top = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
        header = "".join(lines[:top])  # KFP's "# PIPELINE DEFINITION" comment block
        docs = [retarget_platform_spec(d, kfp_version) for d in yaml.safe_load_all(text)]
        header += f"# KFP backend: {kfp_version} (kubetrade compile --kfp-version)\n"
        tmp.write_text(header + goyaml.dump_all(docs), encoding="utf-8")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def submit(
    package: Annotated[Path, typer.Argument(help="compiled pipeline YAML")] = Path(
        "pipelines/compiled/kubetrade_training.yaml"
    ),
    host: Annotated[
        str,
        typer.Option(
            help="Kubeflow Pipelines API, e.g. http://localhost:8080 [$KF_PIPELINES_ENDPOINT]"
        ),
    ] = "",
    namespace: Annotated[
        str,
        typer.Option(
            help="profile namespace (multi-user Kubeflow) [$KF_PIPELINES_NAMESPACE, else the "
            "pod's namespace in a cluster, else none: single-user KFP]"
        ),
    ] = "",
    experiment: Annotated[str, typer.Option(help="KFP experiment name")] = "kubetrade",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="pipeline input KEY=VALUE, typed by the spec (repeatable)"),
    ] = None,
    pipeline_name: Annotated[
        str | None, typer.Option(help="upload the package as a version of this pipeline")
    ] = None,
    version_name: Annotated[
        str | None, typer.Option(help="version name (e.g. the commit); an existing one is reused")
    ] = None,
    run_name: Annotated[
        str | None, typer.Option(help="run / recurring-run name (default: the pipeline's)")
    ] = None,
    recurring: Annotated[
        str | None,
        typer.Option(metavar="CRON", help="create or update the recurring run RUN_NAME instead"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="bearer token [$KF_PIPELINES_TOKEN, else the in-cluster SA token]"),
    ] = None,
    cookie: Annotated[
        str | None,
        typer.Option(help="session cookie, e.g. oauth2_proxy_kubeflow=... [$KF_PIPELINES_COOKIE]"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the API calls it would make; send nothing")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends")] = False,
    poll_interval: Annotated[
        float, typer.Option(min=0.01, help="seconds between get_run calls with --wait")
    ] = 10.0,
) -> None:
    """Submit the compiled pipeline to Kubeflow Pipelines: a run, or a pipeline version + run /
    recurring run (the CI loop: .github/workflows/pipeline.yml)."""
    import os

    from kubetrade.k8s import submit as sm

    host = host or os.environ.get("KF_PIPELINES_ENDPOINT", "")
    inputs = sm.read_pipeline_inputs(package)
    params = sm.parse_params(inputs, param or [])
    from kubetrade.pipeline.run_form import check_submitted_form

    check_submitted_form(inputs, params)  # the run form: checked as the resolve task will
    if (pipeline_name is None) != (version_name is None):
        raise sm.SubmitError("--pipeline-name and --version-name go together")
    if recurring is not None and not pipeline_name:
        raise sm.SubmitError("--recurring needs --pipeline-name/--version-name (it runs a version)")
    if recurring is not None and wait:
        raise sm.SubmitError("--wait follows one run; a recurring run has none to follow")
    cron = sm.normalize_cron(recurring) if recurring is not None else None
    auth = sm.resolve_auth(token, cookie)
    ns, ns_source = sm.resolve_namespace(namespace)
    plan = sm.SubmitPlan(
        package=package, host=host, namespace=ns, namespace_source=ns_source,
        experiment=experiment, pipeline_name=pipeline_name, version_name=version_name,
        run_name=run_name or pipeline_name or sm.pipeline_name_of(package) or "kubetrade",
        params=params, auth=auth, recurring=cron, wait=wait,
    )  # fmt: skip
    if dry_run:
        for line in sm.describe_plan(plan):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
        return
    if not host:
        raise sm.SubmitError(
            "--host is required (or $KF_PIPELINES_ENDPOINT), e.g. http://localhost:8080"
        )
    on_state = lambda s: console.print(f"run state: {s}")  # noqa: E731
    if pipeline_name:
        info = sm.execute_plan(plan, on_state=on_state, poll_s=poll_interval)
        head = f"pipeline {info['pipeline_id']} version {version_name} ({info['version']})"
        if "recurring" in info:
            out.print(
                f"{head}; recurring run {info['recurring_run_id']}: {info['recurring']}",
                soft_wrap=True,
                markup=False,
            )
        else:
            out.print(
                f"{head}; run {info['run_id']}: {info['state']}", soft_wrap=True, markup=False
            )
        return
    info = sm.submit_pipeline(
        package, host, ns, experiment, params, run_name=run_name, wait=wait,
        on_state=on_state, auth=auth, poll_s=poll_interval,
    )  # fmt: skip
    out.print(f"run {info['run_id']}: {info['state']}", soft_wrap=True, markup=False)
