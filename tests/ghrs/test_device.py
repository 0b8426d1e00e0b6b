"""trainer.device: resolution, clean errors without CUDA, and every tensor following the resolved device.

On a CPU-only machine the resolved device is the CPU, so "everything is on the CPU" alone proves nothing.
The placement tests instead run every forward and inference call under ``torch.device("meta")`` as the
default device: a tensor the code creates without passing the model's device lands on ``meta`` and the
first operation mixing it with the model's tensors raises. They fail when a ``device=`` is missing. The
CUDA tests at the end run wherever CUDA exists.
"""

from functools import partial, wraps

import numpy as np
import pandas as pd
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from ghrs import device as devices
from ghrs import training
from ghrs.autoencoder import train_autoencoder
from ghrs.data.splits import RandomSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.evaluation import evaluate
from ghrs.models.hybrid import HybridRecommender
from ghrs.models.lightgcn import LightGCNRecommender
from ghrs.models.mf import MFRecommender
from ghrs.training import TrainerConfig
from ssm.encoders import SequenceEncoder

GHRS = {"alpha": 0.02, "n_clusters": 3, "autoencoder": {"epochs": 3}, "item_autoencoder": {"epochs": 3}}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_users=60, n_items=40, ratings_per_user=12, seed=5)
    return ds, RandomSplit(0.15, seed=0, valid_ratio=0.1)(ds)


def _hybrid(layer="gru", device="cpu", epochs=1, **kw):
    options = {"d_state": 4, "expand": 1} if layer == "mamba" else {}
    enc = partial(SequenceEncoder, layer=layer, d_model=8, n_layers=1, dropout=0.0, **options)
    trainer = TrainerConfig(max_epochs=epochs, lr=0.01, batch_size=16, progress=False, device=device)
    return HybridRecommender(encoder=enc, ghrs=GHRS, dim=8, base_folds=1, trainer=trainer, **kw)


def _mf(device="cpu"):
    return MFRecommender(dim=4, trainer=TrainerConfig(max_epochs=1, batch_size=64, progress=False, device=device))


def _lightgcn(device="cpu"):
    trainer = TrainerConfig(max_epochs=1, batch_size=64, progress=False, device=device)
    return LightGCNRecommender(dim=4, n_layers=1, trainer=trainer)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


# -- resolution ------------------------------------------------------------------------------------


def test_resolve_without_cuda(no_cuda):
    assert devices.resolve("auto") == torch.device("cpu")
    assert devices.resolve("cpu") == torch.device("cpu")
    for spec in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(UserError, match=f"trainer.device={spec} but this machine has no CUDA"):
            devices.resolve(spec)
    with pytest.raises(UserError, match="bf16 needs CUDA"):
        devices.resolve("auto", "bf16")


def test_bad_values_are_user_errors():
    for spec in ("tpu", "cuda:x", "gpu", ""):
        with pytest.raises(UserError, match="trainer.device must be"):
            TrainerConfig(device=spec)
    with pytest.raises(UserError, match="trainer.precision must be one of fp32|bf16"):
        TrainerConfig(precision="fp16")


def test_gpu_index_and_ddp_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert devices.resolve("auto") == torch.device("cuda")
    assert devices.resolve("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UserError, match="only 2 CUDA device"):
        devices.resolve("cuda:2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert devices.resolve("cuda") == torch.device("cuda:1")  # each rank takes its LOCAL_RANK's GPU
    assert devices.resolve("auto") == torch.device("cuda:1")
    with pytest.raises(UserError, match="under DDP"):
        devices.resolve("cuda:0")


@pytest.mark.parametrize("make", [_mf, _lightgcn, _hybrid], ids=["mf", "lightgcn", "hybrid"])
def test_cuda_request_without_cuda_stops_before_training(no_cuda, data, make):
    ds, s = data
    with pytest.raises(UserError, match="no CUDA device") as err:
        make(device="cuda").fit(ds, s.train, s.valid)
    assert "\n" not in str(err.value)


def test_autoencoder_cuda_request_without_cuda(no_cuda):
    with pytest.raises(UserError, match="no CUDA device"):
        train_autoencoder(np.zeros((4, 3)), {"epochs": 1, "device": "cuda"})


def test_pipeline_cuda_request_without_cuda(no_cuda, tmp_path):
    from hydra import compose, initialize_config_dir

    from ghrs.pipeline import run_training
    from ghrs.train import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["dataset=synthetic", "split=random", "model=mf", "trainer.device=cuda"])
    with pytest.raises(UserError, match="trainer.device=cuda"):
        run_training(cfg, tmp_path)


@pytest.mark.slow  # a fresh interpreter importing torch, hydra and PyG
def test_entry_point_exits_2_with_one_line_without_cuda(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU: torch.cuda.is_available() is False
    proc = subprocess.run([sys.executable, "-m", "ghrs.train", "dataset=synthetic", "split=random", "model=mf",
                           "trainer.device=cuda", f"hydra.run.dir={tmp_path}"],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: trainer.device=cuda but this machine has no CUDA") and "Traceback" not in proc.stderr


# -- placement -------------------------------------------------------------------------------------


class _OneDevice(TorchFunctionMode):
    """Raises when a torch call receives (non-scalar) tensors on more than one device: some ops (e.g.
    an embedding lookup) would otherwise accept a stray ``meta`` index next to CPU weights."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        found = {t.device for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.dim()}
        if len(found) > 1:
            raise AssertionError(f"{getattr(func, '__name__', func)} mixes devices {sorted(map(str, found))}")
        return func(*args, **kwargs)


def _on_meta_default(fn):
    """``fn`` with factory calls that name no device creating ``meta`` tensors, and every torch call
    checked to receive tensors on one device (see the module doc)."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.device("meta"), _OneDevice():
            return fn(*args, **kwargs)
    return wrapper


@pytest.fixture
def strict_placement(monkeypatch):
    """Every training forward and every inference entry point runs with ``meta`` as default device; the
    resolved device is recorded."""
    resolved = []
    real_resolve = devices.resolve

    def spy(device="auto", precision="fp32"):
        resolved.append(real_resolve(device, precision))
        return resolved[-1]

    monkeypatch.setattr(devices, "resolve", spy)
    monkeypatch.setattr(training._LossModule, "forward", _on_meta_default(training._LossModule.forward))
    for cls in (MFRecommender, LightGCNRecommender, HybridRecommender):
        for name in ("predict", "score_tensor", "_stream_states"):
            if name in cls.__dict__:
                monkeypatch.setattr(cls, name, _on_meta_default(cls.__dict__[name]))
    return resolved


@pytest.mark.parametrize("make", [_mf, _lightgcn, partial(_hybrid, "gru"), partial(_hybrid, "mamba"),
                                  partial(_hybrid, "sasrec")], ids=["mf", "lightgcn", "gru", "mamba", "sasrec"])
def test_tensors_follow_the_resolved_device(strict_placement, data, make):
    ds, s = data
    model = make().fit(ds, s.train, s.valid)
    metrics = evaluate(model, ds, s, progress=False, rating_metrics=model.predicts_ratings)
    assert np.isfinite(metrics["ndcg@10"])
    assert strict_placement and all(d == strict_placement[0] for d in strict_placement)
    dev = strict_placement[0]
    net = model.net
    assert all(t.device == dev for t in [*net.parameters(), *net.buffers()])
    if isinstance(model, HybridRecommender):
        seqs = model.seqs
        states = [t for t in tree_leaves(model.stream_state) if isinstance(t, torch.Tensor)]
        for t in (seqs.items, seqs.features, model.final_states, model.user_vectors, model.item_vectors, *states):
            assert t.device == dev
        u = int(s.train["user"].iloc[0])
        observe = _on_meta_default(model.observe) if model._streams() else model.observe  # else: re-encodes
        observe(pd.DataFrame({"user": [u], "item": [0], "rating": [4.0],
                              "timestamp": [int(model.history["timestamp"].max()) + 1]}))
        assert model.user_vectors.device == dev
    if model.predicts_ratings:
        assert np.isfinite(model.predict(s.test["user"].to_numpy(), s.test["item"].to_numpy())).all()


def test_placement_check_can_fail(strict_placement):
    """The meta-default trick catches a tensor created without the model's device."""
    a = torch.arange(3)

    @_on_meta_default
    def careless():
        return a < torch.arange(3)

    with pytest.raises(AssertionError, match="mixes devices"):
        careless()
    weights = torch.nn.Embedding(5, 2)

    @_on_meta_default
    def careless_lookup():
        return weights(torch.as_tensor(np.arange(3)))  # runs without complaint outside the check

    with pytest.raises(AssertionError, match="mixes devices"):
        careless_lookup()


# -- CUDA (run wherever CUDA exists) ---------------------------------------------------------------


@cuda
def test_hybrid_mamba_trains_and_serves_on_cuda_through_triton(data, monkeypatch):
    import kernels.selective_scan_triton as triton_scan

    calls = []
    real = triton_scan.selective_scan_triton

    def spy(u, *args, **kwargs):
        calls.append(u.device.type)
        return real(u, *args, **kwargs)

    monkeypatch.setattr(triton_scan, "selective_scan_triton", spy)  # scan_backend=auto picks it on CUDA
    ds, s = data
    model = _hybrid("mamba", device="cuda", epochs=2).fit(ds, s.train, s.valid)
    assert all(p.device.type == "cuda" for p in model.net.parameters())
    assert model.final_states.device.type == "cuda" and model.user_vectors.device.type == "cuda"
    assert calls and set(calls) == {"cuda"}  # training and re-encoding went through the Triton scan
    scores = model.score_tensor(np.arange(5))
    assert scores.device.type == "cuda" and torch.isfinite(scores).all()
    m = evaluate(model, ds, s, progress=False)
    assert np.isfinite(m["ndcg@10"])


@cuda
def test_model_trained_on_cuda_serves_on_cpu(data, tmp_path):
    from ghrs.serving import MODEL_FILE, load_run, save_run_model

    ds, s = data
    model = _hybrid("gru", device="cuda").fit(ds, s.train, s.valid)
    save_run_model(tmp_path / MODEL_FILE, model, {})
    loaded, _ = load_run(tmp_path)
    assert loaded._device().type == "cpu"
    users = np.arange(4)
    np.testing.assert_allclose(loaded.score(users), model.score(users), rtol=1e-4, atol=1e-4)
    u = int(s.train["user"].iloc[0])
    loaded.observe(pd.DataFrame({"user": [u], "item": [0], "rating": [4.0],
                                 "timestamp": [int(loaded.history["timestamp"].max()) + 1]}))
    assert np.isfinite(loaded.score([u])).all()


@cuda
def test_bf16_autocast_trains_on_cuda(data):
    ds, s = data
    model = _hybrid("mamba", epochs=2)
    model.trainer = TrainerConfig(max_epochs=2, lr=0.01, batch_size=16, progress=False, device="cuda",
                                  precision="bf16")
    model.fit(ds, s.train, s.valid)
    assert all(np.isfinite(h["train_loss"]) for h in model.state.history)
