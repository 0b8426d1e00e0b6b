"""Training throughput and peak memory of the sequence encoders (not a test).

Each (layer, length) configuration trains a ``SequenceEncoder`` built from ``conf/encoder/<layer>.yaml``
(d_model and max_len overridden) on random full-length sequences with a next-item, full-softmax
cross-entropy loss over all items through the tied item embedding; a step is forward + backward + Adam.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the timed steps. On CPU, each configuration
runs in a fresh subprocess and reports its peak resident set size (``ru_maxrss``) minus the resident size
just before the first training step, i.e. activations, gradients and optimiser state. Wall time is the
median over the timed steps; CPU time (process time per step, all threads) is also reported because it is
less sensitive to other processes sharing the machine.

    python bench/bench_encoders.py                        # all layers, lengths 50 and 200, batch 256
    python bench/bench_encoders.py --layers mamba sasrec --lengths 200 --steps 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("mamba", "mamba2", "s4d", "sasrec", "gru")


def _rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run_one(args: argparse.Namespace, layer: str, length: int) -> dict:
    """Train ``args.warmup + args.steps`` steps of one configuration; time and measure the last ``steps``."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = OmegaConf.load(ROOT / "conf" / "encoder" / f"{layer}.yaml")
    overrides = {"d_model": args.d_model, "max_len": max(length, cfg.get("max_len", length))}
    if layer == "mamba":
        overrides.update(scan_backend=args.scan_backend, scan_chunk_size=args.scan_chunk_size)
    enc = instantiate(cfg, **overrides)(n_items=args.n_items).to(device).train()
    optimiser = torch.optim.Adam(enc.parameters(), lr=1e-3)
    seqs = torch.randint(1, args.n_items + 1, (args.batch, length + 1), device=device)
    items, targets = seqs[:, :-1], seqs[:, 1:] - 1  # targets index the n_items real rows
    lengths = torch.full((args.batch,), length, device=device)

    def train_step() -> None:
        states, final = enc(items, lengths)
        table = enc.item_embedding.weight[1:]  # tied output layer, padding row excluded
        if args.loss_positions == "all":
            loss = F.cross_entropy((states @ table.T).flatten(0, 1), targets.flatten())
        else:
            loss = F.cross_entropy(final @ table.T, targets[:, -1])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # measured before the warm-up: memory the allocator keeps after a step would otherwise hide in it
    rss_before = _rss_mib()
    for _ in range(args.warmup):
        train_step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    wall, cpu_start = [], time.process_time()
    for _ in range(args.steps):
        start = time.perf_counter()
        train_step()
        sync()
        wall.append(time.perf_counter() - start)
    seconds = statistics.median(wall)  # the median resists slow steps caused by other processes
    cpu_seconds = (time.process_time() - cpu_start) / args.steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20  # MiB allocated by tensors during the timed steps
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before  # ru_maxrss is KiB
    return {
        "layer": layer,
        "length": length,
        "params": sum(p.numel() for p in enc.parameters()),
        "ms_per_step": 1000 * seconds,
        "cpu_ms_per_step": 1000 * cpu_seconds,
        "seq_per_s": args.batch / seconds,
        "peak_mib": peak,
        "scan_backend": args.scan_backend if layer == "mamba" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=LAYERS)
    parser.add_argument("--lengths", nargs="+", type=int, default=[50, 200])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument(
        "--n-items", type=int, default=3706, help="softmax size (MovieLens-1M has 3706 items)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--loss-positions",
        choices=["last", "all"],
        default="last",
        help="next-item loss at the last position only (Mamba4Rec / RecBole) or at every position (SASRec)",
    )
    parser.add_argument("--scan-backend", default="auto", help="selective-scan backend of the mamba layer")
    parser.add_argument("--scan-chunk-size", type=int, default=None, help="selective-scan chunk_size (mamba)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument(
        "--json", default=None, help="also write the results (and the set-up) to this JSON file"
    )
    parser.add_argument("--worker", nargs=2, metavar=("LAYER", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.worker:
        print(json.dumps(run_one(args, args.worker[0], int(args.worker[1]))))
        return

    print(
        f"# device={args.device} threads={torch.get_num_threads()} batch={args.batch} d_model={args.d_model} "
        f"n_items={args.n_items} loss={args.loss_positions} steps={args.steps} warmup={args.warmup}"
    )
    print("| layer | length | params | ms/step (median wall) | seq/s | CPU ms/step | peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    results = []
    for length in args.lengths:
        for layer in args.layers:
            if args.device == "cpu":
                # a fresh process per configuration so that its peak RSS is its own
                cmd = [sys.executable, __file__, *_without_json(sys.argv[1:]), "--worker", layer, str(length)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
            else:
                result = run_one(args, layer, length)
            print(
                f"| {layer} | {length} | {result['params']:,} | {result['ms_per_step']:.0f} "
                f"| {result['seq_per_s']:.0f} | {result['cpu_ms_per_step']:.0f} | {result['peak_mib']:.0f} |",
                flush=True,
            )
            results.append(result)
    if args.json:
        setup = {k: v for k, v in vars(args).items() if k not in ("json", "worker")}
        setup.update(
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            gpu=torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        )
        Path(args.json).write_text(json.dumps({"setup": setup, "results": results}, indent=1))


def _without_json(argv: list[str]) -> list[str]:
    """argv minus ``--json PATH`` (workers print their result instead)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--json":
            skip = True
        elif not a.startswith("--json="):
            out.append(a)
    return out


if __name__ == "__main__":
    main()
