"""Serving benchmark: ``kubetrade serve`` (KServe ModelServer) beside ``mlflow models serve`` of
the same registered model, on 127.0.0.1, with a bounded load from two clients: aiohttp (async
Python) and, when it is on PATH, wrk (C; bench/wrk_post.lua), which costs the shared cores far
less per request.

* closed loop at 1, 8 and 32 concurrent clients for ``--seconds`` each: p50/p99 latency,
  throughput, failures; the same windows sent to both servers (ours: v1 ``{"window": ...}``,
  MLflow: ``/invocations`` ``{"inputs": ...}``); ours also by symbol (Feast online store);
  once with each client;
* 1 client, ours vs the peer in ``--rounds`` alternating rounds of ``--round-seconds`` per
  side (order flipped each round), per client: the ratio with the VM's drift evened out;
* open loop at ``--rate`` requests/s (default 100) for ``--seconds``: p99 at that rate;
* champion swap under load: alias ``champion`` moved to another version while 8 clients send
  requests; failures and the versions seen;
* the floor: the same KServe server setup with a model that returns one constant answer (no
  parsing, no inference), at the same client counts: what the HTTP stack alone costs here.

Everything is bounded in time and count and talks only to 127.0.0.1. The model is the tiny
demo deployment (kubetrade.serving.demo), so the numbers measure the serving stack, not a
large network. Writes bench/results/serving.json with ``uptime`` load next to the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
JSON = {"Content-Type": "application/json"}


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


def _session(clients: int) -> Any:
    """An aiohttp session with ``clients`` keep-alive connections (a lighter client than
    httpx: the client shares the 2 cores with both servers, so its cost caps every number)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


def _encoded(bodies: list[Any]) -> list[bytes]:
    return [json.dumps(b).encode() for b in bodies]  # encoded once, not per request


async def _post(session: Any, url: str, body: bytes) -> tuple[bool, Any]:
    import aiohttp

    try:
        async with session.post(url, data=body, headers=JSON) as r:
            payload = await r.read()
            return r.status == 200, payload
    except (aiohttp.ClientError, TimeoutError):
        return False, None


def _version(payload: bytes) -> str | None:
    preds = json.loads(payload).get("predictions")
    if isinstance(preds, list) and preds and isinstance(preds[0], dict):
        return str(preds[0].get("model_version"))
    return None


async def _closed_loop(url: str, bodies: list[Any], clients: int, seconds: float,
                       count_versions: bool = False) -> dict[str, Any]:  # fmt: skip
    encoded = _encoded(bodies)
    latencies: list[float] = []
    failures = 0
    versions: dict[str, int] = {}
    stop = time.perf_counter() + seconds

    async def worker(i: int, session: Any) -> None:
        nonlocal failures
        n = i
        while time.perf_counter() < stop:
            body = encoded[n % len(encoded)]
            n += clients
            t0 = time.perf_counter()
            ok, payload = await _post(session, url, body)
            latencies.append(time.perf_counter() - t0)
            if not ok:
                failures += 1
            elif count_versions:
                v = _version(payload)
                versions[str(v)] = versions.get(str(v), 0) + 1

    async with _session(clients) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(i, session) for i in range(clients)))
        elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000
    out: dict[str, Any] = {"clients": clients, "requests": len(lat), "failures": failures,
           "throughput_rps": round(len(lat) / elapsed, 1),
           "p50_ms": round(float(np.percentile(lat, 50)), 2),
           "p99_ms": round(float(np.percentile(lat, 99)), 2)}  # fmt: skip
    if count_versions:
        out["versions"] = versions
    return out


async def _open_loop(url: str, bodies: list[Any], rate: float, seconds: float) -> dict[str, Any]:
    encoded = _encoded(bodies)
    latencies: list[float] = []
    failures = 0
    n = int(rate * seconds)

    async def one(i: int, session: Any) -> None:
        nonlocal failures
        t0 = time.perf_counter()
        ok, _ = await _post(session, url, encoded[i % len(encoded)])
        failures += not ok
        latencies.append(time.perf_counter() - t0)

    async with _session(64) as session:
        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, session)))
        await asyncio.gather(*tasks)
    lat = np.asarray(latencies) * 1000
    return {"rate_rps": rate, "requests": n, "failures": failures,
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2)}  # fmt: skip


def _cpuidle() -> dict[str, str]:
    """The box's idle settings, recorded beside the numbers: a guest whose vCPUs halt at once
    (``haltpoll`` with ``guest_halt_poll_ns`` 0) pays a wake-up per 1-client round trip
    (docs/benchmarks.md, Serving)."""
    out = {}
    for key, path in (("driver", "/sys/devices/system/cpu/cpuidle/current_driver"),
                      ("governor", "/sys/devices/system/cpu/cpuidle/current_governor_ro"),
                      ("guest_halt_poll_ns", "/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
                      ("cpu", "/proc/cpuinfo")):  # fmt: skip
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            continue
        if key == "cpu":
            text = next((ln.split(":", 1)[1] for ln in text.splitlines()
                         if ln.startswith("model name")), "")  # fmt: skip
        out[key] = text.strip()
    return out


def _wrk(url: str, bodies: list[Any], clients: int, seconds: float) -> dict[str, Any]:
    """The same closed loop driven by wrk (C, one thread, ``clients`` keep-alive connections,
    bench/wrk_post.lua rotating the same bodies): a client that costs the shared 2 cores
    ~10x less per request than aiohttp, so the numbers are closer to the servers' own."""
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as f:
        f.write(b"\n".join(_encoded(bodies)) + b"\n")
    try:
        proc = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s",
                               "--timeout", "30s", "-s", str(HERE / "wrk_post.lua"), url,
                               "--", f.name], capture_output=True, text=True, timeout=seconds + 60)  # fmt: skip
    finally:
        os.unlink(f.name)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    r = json.loads(line.removeprefix("WRK_RESULT "))
    failures = sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {"clients": clients, "requests": r["requests"], "failures": failures,
            "throughput_rps": round(r["requests"] / (r["duration_us"] / 1e6), 1),
            "p50_ms": round(r["p50_us"] / 1000, 2), "p99_ms": round(r["p99_us"] / 1000, 2)}  # fmt: skip


def _one_client_rounds(ours: tuple[str, list[Any]], peer: tuple[str, list[Any]], rounds: int,
                       seconds: float, clients: list[str]) -> dict[str, Any]:  # fmt: skip
    """1-client throughput of ours and the peer in alternating short rounds (the order flips
    every round), so that the VM's drift -- its speed moved ~40 % within an hour on the dev
    box -- hits both sides alike: per-round ratios and their median, for each client."""
    out: dict[str, Any] = {}
    for client in clients:
        per_round = []
        for r in range(rounds):
            pair = [("ours", ours), ("peer", peer)]
            got: dict[str, float] = {}
            for side, (url, bodies) in pair if r % 2 == 0 else pair[::-1]:
                m = (_wrk(url, bodies, 1, seconds) if client == "wrk"
                     else asyncio.run(_closed_loop(url, bodies, 1, seconds)))  # fmt: skip
                got[side] = m["throughput_rps"]
            per_round.append({**got, "ratio": round(got["ours"] / got["peer"], 2)})
        ratios = sorted(x["ratio"] for x in per_round)
        out[client] = {"rounds": per_round, "median_ratio": float(np.median(ratios)),
                       "min_ratio": ratios[0], "max_ratio": ratios[-1]}  # fmt: skip
        print(f"1 client, {client}: ratios {ratios}, median {out[client]['median_ratio']}",
              flush=True)  # fmt: skip
    return out


def _constant_server(port: int) -> None:
    """The floor: the same KServe server setup (kubetrade.serving.server.serve) with a model
    that answers every request with one constant prediction, no parsing, no inference."""
    import kserve

    from kubetrade.serving.config import ServingConfig
    from kubetrade.serving.server import serve

    answer = {"predictions": [{"probabilities": {"buy": 0.3, "hold": 0.4, "sell": 0.3},
                               "predicted_return": 0.0, "signal": 0.0, "model_version": "0",
                               "alias": "constant"}]}  # fmt: skip

    class Constant(kserve.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__("kubetrade")
            self.ready = True

        async def predict(self, payload: Any, headers: Any = None,
                          response_headers: Any = None) -> Any:  # fmt: skip
            return answer

    serve(ServingConfig(port=port), model=Constant())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (<= 60)")
    parser.add_argument("--rate", type=float, default=100.0, help="open-loop requests/s")
    parser.add_argument("--no-peer", action="store_true", help="skip mlflow models serve")
    parser.add_argument(
        "--rounds",
        type=int,
        default=7,
        help="alternating 1-client rounds, ours vs the peer (0: skip)",
    )
    parser.add_argument("--round-seconds", type=float, default=2.0, help="per side per round")
    parser.add_argument(
        "--no-wrk",
        action="store_true",
        help="skip the second closed-loop pass with wrk (run when wrk is on PATH)",
    )
    parser.add_argument("--constant-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.constant_server:
        _constant_server(args.constant_server)
        return 0
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
    port, peer_port, floor_port = _port(), _port(), _port()
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
    floor = subprocess.Popen([sys.executable, __file__, "--constant-server", str(floor_port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    procs = [ours, floor]
    results: dict[str, Any] = {"load_before": os.getloadavg(), "seconds": seconds,
                               "uptime": subprocess.run(["uptime"], capture_output=True,
                                                        text=True).stdout.strip(),
                               "cpuidle": _cpuidle(), "cpus": os.cpu_count()}  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/v2/health/ready", ours)
        url = f"{base}/v1/models/kubetrade:predict"
        _wait(f"http://127.0.0.1:{floor_port}/v2/health/ready", floor)
        floor_url = f"http://127.0.0.1:{floor_port}/v1/models/kubetrade:predict"
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
                                        "mlflow_window": [], "kserve_constant_floor": []}  # fmt: skip
        # warm-up, not measured: first requests pay lazy imports, ORT arena growth, caches
        for warm_url, warm_bodies in ((url, ours_windows), (url, ours_symbols),
                                      (peer_url, peer_windows), (floor_url, ours_windows)):  # fmt: skip
            if warm_url:
                asyncio.run(_closed_loop(warm_url, warm_bodies, 8, 1.0))
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
            closed["kserve_constant_floor"].append(
                asyncio.run(_closed_loop(floor_url, ours_windows, clients, seconds))
            )
            print(json.dumps({k: v[-1] for k, v in closed.items() if v}), flush=True)
        results["closed_loop"] = closed
        if not args.no_wrk and shutil.which("wrk"):
            by_wrk: dict[str, list[Any]] = {k: [] for k in closed}
            targets = {"kubetrade_window": (url, ours_windows),
                       "kubetrade_symbol": (url, ours_symbols),
                       "mlflow_window": (peer_url, peer_windows),
                       "kserve_constant_floor": (floor_url, ours_windows)}  # fmt: skip
            for clients in (1, 8, 32):
                for key, (target, bodies) in targets.items():
                    if target:
                        by_wrk[key].append(_wrk(target, bodies, clients, seconds))
                print("wrk", json.dumps({k: v[-1] for k, v in by_wrk.items() if v}), flush=True)
            results["closed_loop_wrk"] = by_wrk
        else:
            print("wrk not on PATH (apt-get install wrk): the wrk pass is skipped", flush=True)
        if peer_url and args.rounds > 0:
            results["one_client_rounds"] = _one_client_rounds(
                (url, ours_windows),
                (peer_url, peer_windows),
                args.rounds,
                min(args.round_seconds, 60.0),
                ["aiohttp", "wrk"] if not args.no_wrk and shutil.which("wrk") else ["aiohttp"],
            )
        results["open_loop"] = asyncio.run(_open_loop(url, ours_windows, args.rate, seconds))
        print(json.dumps(results["open_loop"]), flush=True)

        async def swap() -> dict[str, Any]:
            task = asyncio.create_task(_closed_loop(url, ours_symbols, 8, seconds * 2, True))
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
