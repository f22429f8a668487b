"""The scheduled retraining run: a KFP v2beta1 ``RecurringRun`` body for the compiled pipeline.

``python -m kubetrade.monitoring.recurring`` (``make compile``) writes
``pipelines/compiled/kubetrade_retrain_recurring.json``: the body of
``POST /apis/v2beta1/recurringruns`` with the compiled pipeline inline (``pipeline_spec``, plus
``platform_spec`` when the package has one, as ``kfp.Client`` sends it), a cron trigger in the
scheduler's 6-field form, ``max_concurrency`` 1 and ``no_catchup``. The parent experiment is
chosen where it is created, so the body carries no ``experiment_id``: add it, then post it::

    jq '.experiment_id = "<id>"' pipelines/compiled/kubetrade_retrain_recurring.json |
      curl -X POST -H 'Content-Type: application/json' -d @- $KFP/apis/v2beta1/recurringruns

``kubetrade submit --pipeline-name ... --version-name ... --recurring CRON`` creates the same
schedule over an uploaded pipeline version (``pipeline_version_reference`` instead of the inline
spec). Each scheduled run ends in the register step, so a new model still has to pass the
champion gate; ``kubetrade monitor --retrain`` starts one outside the schedule.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kubetrade.k8s.submit import (
    normalize_cron,
    parse_params,
    pipeline_name_of,
    read_pipeline_inputs,
)

__all__ = ["DEFAULT_CRON", "DEFAULT_OUTPUT", "recurring_run_body", "write_recurring_run", "main"]

DEFAULT_PACKAGE = Path("pipelines/compiled/kubetrade_training.yaml")
DEFAULT_OUTPUT = Path("pipelines/compiled/kubetrade_retrain_recurring.json")
DEFAULT_CRON = "0 6 * * 1-5"  # weekdays 06:00 (the scheduler's zone), before the US open


def recurring_run_body(
    package: str | Path = DEFAULT_PACKAGE,
    cron: str = DEFAULT_CRON,
    params: Sequence[str] = (),
    display_name: str = "kubetrade-retrain",
    max_concurrency: int = 1,
) -> dict[str, Any]:
    """The ``v2beta1RecurringRun`` request body for ``package`` on ``cron`` (5 or 6 fields);
    ``params`` are ``KEY=VALUE`` pipeline inputs typed by the package's declarations."""
    name = pipeline_name_of(package)  # SubmitError unless a compiled KFP pipeline
    parameters = parse_params(read_pipeline_inputs(package), list(params))
    docs = [d for d in yaml.safe_load_all(Path(package).read_text(encoding="utf-8")) if d]
    spec: dict[str, Any] = docs[0]
    if len(docs) > 1:  # kfp.Client's form for a package with a platform spec
        spec = {"pipeline_spec": docs[0], "platform_spec": docs[1]}
    cron6 = normalize_cron(cron)
    described = ", ".join(f"{k}={v}" for k, v in sorted(parameters.items())) or "defaults"
    return {
        "display_name": display_name,
        "description": f"scheduled retraining: {name} on '{cron6}' ({described}); the register "
        "step's champion gate decides what is promoted",
        "pipeline_spec": spec,
        "runtime_config": {"parameters": parameters},
        "trigger": {"cron_schedule": {"cron": cron6}},
        "max_concurrency": str(max_concurrency),  # int64: a JSON string in protojson
        "no_catchup": True,
        "mode": "ENABLE",
    }


def write_recurring_run(output: str | Path = DEFAULT_OUTPUT, **kwargs: Any) -> Path:
    """Write :func:`recurring_run_body` as JSON (stable key order, so diffs stay readable)."""
    body = recurring_run_body(**kwargs)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from kubetrade.errors import KubetradeError

    parser = argparse.ArgumentParser(
        prog="python -m kubetrade.monitoring.recurring",
        description="Write the KFP v2beta1 RecurringRun body that retrains on a schedule.",
    )
    parser.add_argument("--package", type=Path, default=DEFAULT_PACKAGE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--cron", default=DEFAULT_CRON, help="5 fields, or KFP's 6")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", default="kubetrade-retrain", help="display name")
    args = parser.parse_args(argv)
    try:
        out = write_recurring_run(args.output, package=args.package, cron=args.cron,
                                  params=args.param, display_name=args.name)  # fmt: skip
    except KubetradeError as exc:
        print(f"kubetrade: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
