"""Bounded load test of the HTTP service (``python -m ghrs.serve``) on 127.0.0.1 only.

For each run directory: starts the service in a subprocess on a free loopback port, waits for
``/healthz``, then sends a fixed number of requests from concurrent clients (keep-alive connections,
one thread each) under a time limit, and stops the service. Phases:

- ``recommend``: ``GET /recommend?user=<known>&k=10`` (users drawn at random);
- ``event+recommend``: ``POST /events`` (a random item and rating) followed by ``GET /recommend`` for
  the same user, timed as one operation; each client streams into its own users;

each at ``--clients`` concurrent clients and with 1 client. Reports p50/p99 latency (ms) and throughput
(requests or operations per second), the service's own time per request over all phases (``/stats``:
request in -> response head out, so without the client's share of the cores), the 1-minute load
average after each run, and the one-process-per-request CLI (``python -m ghrs.recommend
run=<run> users=[1] k=10``) timed ``--cli-calls`` times. Assumes MovieLens-style ids (users 1..n, items
1..m; the first request to an unknown id fails loudly). The load generator shares the machine's cores
with the service: figures are for both on the same host.

    python bench/serve_load.py --run outputs/<gru run> --run outputs/<mamba run> [--requests 2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # never anything else: this script only loads a service it started itself
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP/1.1 connection to the service."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30)

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body)
        headers = {} if body is None else {"Content-Type": "application/json"}
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path} -> {resp.status}: {payload[:300]!r}")
        return json.loads(payload)

    def close(self) -> None:
        self.conn.close()


def start_service(run: str, port: int, log: Path, threads: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "ghrs.serve", f"run={run}", f"host={HOST}", f"port={port}",
           "access_log=false", "log_level=warning", f"torch_threads={threads}"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen, port: int, limit: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with code {proc.returncode} before answering")
        try:
            c = Client(port)
            c.call("GET", "/healthz")
            c.close()
            return time.perf_counter() - t0
        except (ConnectionError, OSError, http.client.HTTPException):
            time.sleep(0.2)
    raise TimeoutError(f"the service did not answer /healthz within {limit:.0f} s")


def run_phase(port: int, clients: int, n_ops: int, deadline_s: float, op) -> dict:
    """``n_ops`` operations ``op(client, worker, rng)`` shared by ``clients`` threads; stops at the deadline."""
    lock = threading.Lock()
    remaining = [n_ops]
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.perf_counter() + deadline_s

    def worker(w: int):
        c, rng = Client(port), random.Random(w)
        own: list[float] = []
        try:
            while time.perf_counter() < stop_at:
                with lock:
                    if remaining[0] == 0:
                        break
                    remaining[0] -= 1
                t = time.perf_counter()
                op(c, w, rng)
                own.append(time.perf_counter() - t)
        except Exception as err:  # noqa: BLE001 - reported, and the phase is marked failed
            errors.append(repr(err))
        finally:
            c.close()
            with lock:
                latencies.extend(own)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "done": len(ms), "asked": n_ops, "wall_s": round(wall, 2),
            "timed_out": len(ms) < n_ops and not errors, "errors": errors[:3],
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "mean_ms": round(float(ms.mean()), 2) if len(ms) else None,
            "per_s": round(len(ms) / wall, 1) if wall else None}


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def time_cli(run: str, calls: int, limit: float) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ghrs.recommend", f"run={run}", "users=[1]", "k=10"], cwd=ROOT,
                       env=env, check=True, capture_output=True, timeout=limit)
        out.append(round(time.perf_counter() - t, 2))
    return out


def bench_run(run: str, args, log_dir: Path) -> dict:
    port = free_port()
    proc = start_service(run, port, log_dir / f"serve-{Path(run).name}.log", args.torch_threads)
    try:
        ready_s = wait_ready(proc, port, args.start_limit)
        c = Client(port)
        stats = c.call("GET", "/stats")
        c.close()
        n_users, n_items = min(stats["users"], args.max_user_id), stats["items"]

        def recommend(client, w, rng):
            client.call("GET", f"/recommend?user={rng.randint(1, n_users)}&k=10")

        def event_then_recommend(client, w, rng):
            user = 1 + (w + args.clients * rng.randrange(n_users // args.clients)) % n_users  # own users
            client.call("POST", "/events", {"user": user, "item": rng.randint(1, n_items), "rating": rng.randint(1, 5)})
            client.call("GET", f"/recommend?user={user}&k=10")

        run_phase(port, 2, args.warmup, args.time_limit, recommend)  # warm-up, not reported
        phases = {}
        for name, op, n in (("recommend", recommend, args.requests),
                            ("event+recommend", event_then_recommend, args.requests // 2)):
            phases[f"{name} x{args.clients}"] = run_phase(port, args.clients, n, args.time_limit, op)
            phases[f"{name} x1"] = run_phase(port, 1, n // 4, args.time_limit, op)
        c = Client(port)
        stats = c.call("GET", "/stats")
        c.close()
        result = {"run": run, "model": stats["model"], "encoder": stats["encoder"], "ready_s": round(ready_s, 1),
                  "service_rss_mb": rss_mb(proc.pid), "phases": phases,
                  "service_time": {k: v for k, v in stats["service_time"].items()
                                   if k in ("GET /recommend", "POST /events")},
                  "loadavg_after": os.getloadavg()}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if args.cli_calls:
        result["cli_s"] = time_cli(run, args.cli_calls, args.time_limit)
    return result


def table(results: list[dict]) -> str:
    rows = ["| run (encoder) | phase | clients | done | p50 ms | p99 ms | per s |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        for name, p in r["phases"].items():
            rows.append(f"| {r['encoder']} | {name.rsplit(' ', 1)[0]} | {p['clients']} | {p['done']}/{p['asked']} | "
                        f"{p['p50_ms']} | {p['p99_ms']} | {p['per_s']} |")
        for route, t in r["service_time"].items():
            rows.append(f"| {r['encoder']} | {route}: time inside the service, all phases | | {t['n']} | "
                        f"{t['p50_ms']} | {t['p99_ms']} | |")
        if "cli_s" in r:
            rows.append(f"| {r['encoder']} | CLI `ghrs.recommend users=[1] k=10`, s per call | 1 | "
                        f"{len(r['cli_s'])} | {np.median(r['cli_s']) * 1000:.0f} | {max(r['cli_s']) * 1000:.0f} | |")
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help="a training run directory (repeatable)")
    ap.add_argument("--requests", type=int, default=2000, help="requests per /recommend phase (ops: half)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per phase (and per CLI call)")
    ap.add_argument("--start-limit", type=float, default=300.0, help="seconds for the service to load")
    ap.add_argument("--cli-calls", type=int, default=3)
    ap.add_argument("--max-user-id", type=int, default=943, help="users 1..this are loaded (ML-100K: 943)")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_load")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = [bench_run(run, args, args.out) for run in args.run]
    (args.out / "serve_load.json").write_text(json.dumps(results, indent=1) + "\n")
    text = table(results)
    (args.out / "serve_load.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
