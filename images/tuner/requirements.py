"""Requirements and constraints for the tuner image (run at image build time).

The Katib SDK (kubeflow-katib 0.19) needs protobuf<5 and kubeflow-training==1.9.0, while
kfp 2.17 needs protobuf>=6 and kubetrade pins kubeflow-training==1.9.4. So the tuner image
gets kubetrade's runtime dependencies WITHOUT kfp, kfp-kubernetes and kubeflow-training,
plus the pinned Katib SDK, and constraints.txt minus the pins that must move with protobuf.

    python requirements.py pyproject.toml constraints.txt OUT_DIR KATIB_REQUIREMENT

writes OUT_DIR/requirements.txt and OUT_DIR/constraints.txt. Stdlib only.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

#: kubetrade dependencies left out of the tuner image (the Katib SDK brings its own
#: kubeflow-training; nothing that `kubetrade tune` imports needs kfp).
EXCLUDED = {"kfp", "kfp-kubernetes", "kubeflow-training"}
#: constraints.txt pins dropped: kfp's family and everything tied to protobuf>=5/6.
UNPINNED = EXCLUDED | {
    "kfp-pipeline-spec",
    "kfp-server-api",
    "protobuf",
    "googleapis-common-protos",
    "grpcio-status",
    "opentelemetry-proto",
    "opentelemetry-exporter-otlp-proto-common",
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-exporter-otlp-proto-http",
    "proto-plus",
    "onnx",
}


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise SystemExit(f"cannot parse requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def main(pyproject: str, constraints: str, out_dir: str, katib: str) -> None:
    deps = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    missing = EXCLUDED - {_name(d) for d in deps}
    if missing:
        raise SystemExit(f"pyproject.toml no longer lists {sorted(missing)}: update EXCLUDED")
    kept = [d for d in deps if _name(d) not in EXCLUDED]
    pins = [
        line
        for line in Path(constraints).read_text().splitlines()
        if line.strip() and not line.startswith("#") and _name(line) not in UNPINNED
    ]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "requirements.txt").write_text("\n".join([*kept, katib]) + "\n")
    (out / "constraints.txt").write_text("\n".join(pins) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
