"""Serving under load: 64 concurrent clients on loopback for 30 s against `transferkit serve` of the bundled text
model, once with micro-batching (--max-batch 32) and once one request at a time (--max-batch 1): requests/s,
p50/p99 latency, errors (must be 0), and the gain from micro-batching.

    python benchmarks/serve_load.py [--clients 64] [--seconds 30] [--out benchmarks/results/serve_load.json]

Loopback only (127.0.0.1), bounded in time (--seconds per configuration) and in count (--max-requests per
client). The model is a real probe model (all-MiniLM-L6-v2 + logistic regression on 600 VADER tweets); each
request carries one tweet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_model(root: Path) -> tuple[Path, list[str]]:
    from transferkit import datasets
    from transferkit.backbones import load_backbone
    from transferkit.data import stratified_sample
    from transferkit.features import extract_features
    from transferkit.heads.probe import probe_features

    ds = datasets.load("sentiment-tweets")
    ds = ds.subset(stratified_sample(ds.labels, 600, seed=0), name="tweets[600]")
    fs = extract_features(load_backbone("st:all-MiniLM-L6-v2"), ds, out=root / "feats", progress=False)
    probe_features(fs, head="logreg", save=root / "model")
    return root / "model", list(datasets.load("sentiment-tweets").items)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", "serve", str(model), "--host", "127.0.0.1",
                             "--port", str(port), "--max-batch", str(max_batch), "--device", "cpu"],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


async def load(url: str, texts: list[str], clients: int, seconds: float, max_requests: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        for k in range(max_requests):
            if time.perf_counter() >= stop:
                return
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{url}/predict", json={"text": texts[(i * 7919 + k) % len(texts)]})
                ok = r.status_code == 200 and len(r.json()["predictions"]) == 1
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "wall_s": wall, "requests_per_s": len(latencies) / wall,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max-requests", type=int, default=5000, help="per client (a bound on the count)")
    ap.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, texts = make_model(Path(tmp))
        for max_batch in (32, 1):
            proc, url = start(model, max_batch)
            try:
                res = asyncio.run(load(url, texts, args.clients, args.seconds, args.max_requests))
                import httpx

                health = httpx.get(f"{url}/health").json()
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            res.update(max_batch=max_batch, mean_batch=health["items"] / max(health["batches"], 1))
            rows.append(res)
            print(res, flush=True)
    gain = rows[0]["requests_per_s"] / max(rows[1]["requests_per_s"], 1e-9)
    print(f"{'configuration':28s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>6s} {'mean batch':>10s}")
    for r in rows:
        label = f"micro-batching (max {r['max_batch']})" if r["max_batch"] > 1 else "one request at a time"
        print(f"{label:28s} {r['requests_per_s']:8.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['errors']:6d} "
              f"{r['mean_batch']:10.1f}")
    print(f"micro-batching gain: {gain:.2f}× requests/s ({args.clients} clients, {args.seconds:g} s each)")
    env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "clients": args.clients, "seconds": args.seconds}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "serve_load", "env": env, "rows": rows,
                                          "batching_gain": gain}, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
