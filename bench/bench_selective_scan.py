"""Benchmark of the selective scan backends (not a test).

Times the forward and forward+backward of each backend over a grid of (batch, dim, length) with a fixed
d_state, and prints tokens/s (batch * length / time) and the speed-up over the ``reference`` backend.
Inputs follow the Mamba block (delta_bias + softplus, D, z gate, one B/C group).

On CUDA the run reports the Triton forward's effective bandwidth over its minimal traffic (read u, delta,
B, C, z and write y) and, for comparison, the bandwidth of a device-to-device copy moving the same number
of bytes (half read, half written). ``--json PATH`` also writes every row as JSON.

Examples::

    python bench/bench_selective_scan.py                                   # CPU: reference vs chunked
    python bench/bench_selective_scan.py --batch 2 --dim 64 --length 256 1024 4096 --ref-max-length 1024
    python bench/bench_selective_scan.py --device cuda --batch 8 --dim 1536 --length 512 2048 4096
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssm import selective_scan


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device: str, repeats: int, warmup: int = 1) -> float:
    """Median seconds per call of fn()."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def make_inputs(batch: int, dim: int, length: int, d_state: int, device: str, dtype: torch.dtype, grad: bool):
    g = torch.Generator().manual_seed(0)

    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g)).to(device, dtype).requires_grad_(grad)

    A = (-torch.arange(1, d_state + 1, dtype=torch.float32).repeat(dim, 1)).to(device).requires_grad_(grad)
    return {
        "u": r(batch, dim, length),
        "delta": r(batch, dim, length, scale=0.5),
        "A": A,
        "B": r(batch, d_state, length),
        "C": r(batch, d_state, length),
        "D": r(dim).float().detach().requires_grad_(grad),
        "z": r(batch, dim, length),
        "delta_bias": (r(dim).float() - 4.0).detach().requires_grad_(grad),
    }


def run_scan(x: dict, backend: str):
    return selective_scan(**x, delta_softplus=True, backend=backend)  # keys are the argument names


def copy_bandwidth(device: str, nbytes: int) -> float:
    """GB/s of a device-to-device copy that reads nbytes / 2 and writes nbytes / 2."""
    x = torch.empty(max(1, nbytes // 8), dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    t = timeit(lambda: y.copy_(x), device, repeats=20, warmup=3)
    return 2 * x.numel() * 4 / t / 1e9


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--backends", nargs="+", default=None, help="default: reference chunked (+ triton on CUDA)"
    )
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--dim", type=int, nargs="+", default=[64])
    p.add_argument("--length", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ref-repeats", type=int, default=1, help="repeats for the (slow) reference")
    p.add_argument("--ref-max-length", type=int, default=4096, help="skip the reference above this length")
    p.add_argument("--no-backward", action="store_true", help="time the forward only")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--json", default=None, help="also write the rows (and the set-up) to this JSON file")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = args.device, getattr(torch, args.dtype)
    backends = args.backends or (["reference", "chunked"] + (["triton"] if device == "cuda" else []))
    print(
        f"# selective scan benchmark: device={device} "
        f"({torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}, dtype={args.dtype}, "
        f"d_state={args.d_state}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}"
    )
    bw = device == "cuda"  # GB/s columns (triton rows) against a copy of the same bytes
    rows = []

    header = (
        f"{'batch':>5} {'dim':>5} {'length':>6} {'backend':>9} | {'fwd ms':>9} {'tok/s':>10} {'x ref':>6}"
    )
    if not args.no_backward:
        header += f" | {'fwd+bwd ms':>10} {'tok/s':>10} {'x ref':>6}"
    if bw:
        header += f" | {'GB/s':>6} {'copy GB/s':>9} {'% copy':>6}"
    print(header)
    print("-" * len(header))
    for batch, dim, length in itertools.product(args.batch, args.dim, args.length):
        tokens = batch * length
        ref_f = ref_b = None
        for backend in backends:
            if backend == "reference" and length > args.ref_max_length:
                print(f"{batch:>5} {dim:>5} {length:>6} {backend:>9} | skipped (--ref-max-length)")
                continue
            reps = args.ref_repeats if backend == "reference" else args.repeats
            x = make_inputs(batch, dim, length, args.d_state, device, dtype, grad=False)
            with torch.no_grad():
                t_f = timeit(lambda x=x, backend=backend: run_scan(x, backend), device, reps)
            row = {"batch": batch, "dim": dim, "length": length, "backend": backend, "fwd_ms": t_f * 1e3}
            line = f"{batch:>5} {dim:>5} {length:>6} {backend:>9} | {t_f * 1e3:>9.2f} {tokens / t_f:>10.3g}"
            line += f" {ref_f / t_f:>6.2f}" if ref_f else f" {'-':>6}"
            if not args.no_backward:
                xg = make_inputs(batch, dim, length, args.d_state, device, dtype, grad=True)

                def fwd_bwd(xg=xg, backend=backend):
                    run_scan(xg, backend).sum().backward()

                t_b = timeit(fwd_bwd, device, reps)
                row["fwd_bwd_ms"] = t_b * 1e3
                line += f" | {t_b * 1e3:>10.2f} {tokens / t_b:>10.3g}"
                line += f" {ref_b / t_b:>6.2f}" if ref_b else f" {'-':>6}"
            if bw and backend == "triton":
                # minimal traffic: read u, delta, z (batch, dim, L), B, C (batch, N, L); write y
                elem = torch.finfo(dtype).bits // 8
                nbytes = elem * (4 * batch * dim * length + 2 * batch * args.d_state * length)
                gbs = nbytes / t_f / 1e9
                copy = copy_bandwidth(device, nbytes)
                row.update(fwd_bytes=nbytes, fwd_gb_s=gbs, copy_gb_s=copy)
                line += f" | {gbs:>6.0f} {copy:>9.0f} {100 * gbs / copy:>5.1f}%"
            if ref_f and backend != "reference":
                row["fwd_speedup"] = ref_f / t_f
                if not args.no_backward and ref_b:
                    row["fwd_bwd_speedup"] = ref_b / row["fwd_bwd_ms"] * 1e3
            rows.append(row)
            print(line, flush=True)
            if backend == "reference":
                ref_f, ref_b = t_f, (t_b if not args.no_backward else None)
    if args.json:
        setup = {k: v for k, v in vars(args).items() if k != "json"}
        setup.update(
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            gpu=torch.cuda.get_device_name() if device == "cuda" else None,
        )
        Path(args.json).write_text(json.dumps({"setup": setup, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
