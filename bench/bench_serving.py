"""Serving benchmark: ``kubetrade serve`` (KServe ModelServer) beside ``mlflow models serve`` of
the same registered model, on 127.0.0.1, with a bounded async load (httpx).

* closed loop at 1, 8 and 32 concurrent clients for ``--seconds`` each: p50/p99 latency,
  throughput, failures; the same windows sent to both servers (ours: v1 ``{"window": ...}``,
  MLflow: ``/invocations`` ``{"inputs": ...}``); ours also by symbol (Feast online store);
* open loop at ``--rate`` requests/s (default 100) for ``--seconds``: p99 at that rate;
* champion swap under load: alias ``champion`` moved to another version while 8 clients send
  requests; failures and the versions seen.

Everything is bounded in time and count and talks only to 127.0.0.1. The model is the tiny
demo deployment (kubetrade.serving.demo), so the numbers measure the serving stack, not a
large network. Writes bench/results/serving.json with ``uptime`` load next to the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout} s")


async def _closed_loop(url: str, bodies: list[Any], clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    failures = 0
    versions: dict[str, int] = {}
    stop = time.perf_counter() + seconds

    async def worker(i: int, client: httpx.AsyncClient) -> None:
        nonlocal failures
        n = i
        while time.perf_counter() < stop:
            body = bodies[n % len(bodies)]
            n += clients
            t0 = time.perf_counter()
            try:
                r = await client.post(url, json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            if not ok:
                failures += 1
                continue
            preds = r.json().get("predictions")
            if isinstance(preds, list) and preds and isinstance(preds[0], dict):
                v = str(preds[0].get("model_version"))
                versions[v] = versions.get(v, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(i, client) for i in range(clients)))
        elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": len(lat), "failures": failures,
            "throughput_rps": round(len(lat) / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2), "versions": versions}  # fmt: skip


async def _open_loop(url: str, bodies: list[Any], rate: float, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    failures = 0
    n = int(rate * seconds)

    async def one(i: int, client: httpx.AsyncClient) -> None:
        nonlocal failures
        t0 = time.perf_counter()
        try:
            r = await client.post(url, json=bodies[i % len(bodies)])
            failures += r.status_code != 200
        except httpx.HTTPError:
            failures += 1
        latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, client)))
        await asyncio.gather(*tasks)
    lat = np.asarray(latencies) * 1000
    return {"rate_rps": rate, "requests": n, "failures": failures,
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (<= 60)")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--no-peer", action="store_true", help="skip mlflow models serve")
    args = parser.parse_args()
    seconds = min(args.seconds, 60.0)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from mlflow import MlflowClient

    from kubetrade.serving.demo import build_demo, register_demo_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    demo = build_demo(tmp)
    register_demo_model(demo, seed=1, value=1.0)
    register_demo_model(demo, seed=2, value=0.5)
    spec = demo.bundle
    raw = spec.test.X * np.asarray(spec.scaler.scale) + np.asarray(spec.scaler.center)
    ours_windows = [{"instances": [{"window": w.tolist()}]} for w in raw[:64]]
    ours_symbols = [{"instances": [{"symbol": s}]} for s in ("SYN000", "SYN001")]
    peer_windows = [{"inputs": w[None].tolist()} for w in spec.test.X[:64]]
    port, peer_port = _port(), _port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": demo.tracking_uri,  # mlflow execs `uvicorn`
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    ours = subprocess.Popen([sys.executable, "-m", "kubetrade", "serve",
                             "--set", f"tracking_uri={demo.tracking_uri}",
                             "--set", f"feast_repo={demo.feast_repo}", "--set", f"port={port}",
                             "--set", "refresh_seconds=0.5", "--set", "max_feature_age_days=null"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    procs = [ours]
    results: dict[str, Any] = {"load_before": os.getloadavg(), "seconds": seconds,
                               "uptime": subprocess.run(["uptime"], capture_output=True,
                                                        text=True).stdout.strip()}  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/v2/health/ready", ours)
        url = f"{base}/v1/models/kubetrade:predict"
        peer_url = None
        if not args.no_peer:
            peer = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                                     f"models:/{demo.model_name}@champion", "--env-manager",
                                     "local", "--host", "127.0.0.1", "-p", str(peer_port),
                                     "-w", "1"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=env)  # fmt: skip
            procs.append(peer)
            _wait(f"http://127.0.0.1:{peer_port}/ping", peer)
            peer_url = f"http://127.0.0.1:{peer_port}/invocations"
        closed: dict[str, list[Any]] = {"kubetrade_window": [], "kubetrade_symbol": [],
                                        "mlflow_window": []}  # fmt: skip
        for clients in (1, 8, 32):
            closed["kubetrade_window"].append(
                asyncio.run(_closed_loop(url, ours_windows, clients, seconds))
            )
            closed["kubetrade_symbol"].append(
                asyncio.run(_closed_loop(url, ours_symbols, clients, seconds))
            )
            if peer_url:
                closed["mlflow_window"].append(
                    asyncio.run(_closed_loop(peer_url, peer_windows, clients, seconds))
                )
            print(json.dumps({k: v[-1] for k, v in closed.items() if v}), flush=True)
        results["closed_loop"] = closed
        results["open_loop"] = asyncio.run(_open_loop(url, ours_windows, args.rate, seconds))
        print(json.dumps(results["open_loop"]), flush=True)

        async def swap() -> dict[str, Any]:
            task = asyncio.create_task(_closed_loop(url, ours_symbols, 8, seconds * 2))
            await asyncio.sleep(seconds / 2)
            MlflowClient(demo.tracking_uri).set_registered_model_alias(
                demo.model_name, "champion", "2"
            )
            return await task

        results["swap_under_load"] = asyncio.run(swap())
        print(json.dumps(results["swap_under_load"]), flush=True)
        results["load_after"] = os.getloadavg()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    out = HERE / "results" / "serving.json"
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
