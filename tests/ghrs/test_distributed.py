"""A 2-process gloo DDP run (torchrun) equals a 1-process run with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from ghrs.distributed import shard


def test_shard_splits_a_global_batch():
    batch = (torch.arange(10), torch.arange(10) * 2)
    parts = [shard(batch, k, 3) for k in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), batch[0])
    assert [len(p[1]) for p in parts] == [4, 3, 3]


def _run(tmp_path, nproc):
    out = tmp_path / f"run{nproc}"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port", str(29500 + nproc),
           "-m", "ghrs.train", "dataset=synthetic", "split=random", "split.valid_ratio=0.1", "model=mf",
           "trainer.strategy=ddp", "trainer.max_epochs=3", "trainer.batch_size=512", "trainer.progress=false",
           f"hydra.run.dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_two_process_gloo_equals_one_process(tmp_path):
    one, two = _run(tmp_path, 1), _run(tmp_path, 2)
    assert two["world_size"] == 2 and one["world_size"] == 1
    for key in ("rmse", "mae", "hr@10", "ndcg@10"):
        assert two["test"][key] == pytest.approx(one["test"][key], rel=1e-4, abs=1e-6), key
