"""GHRS step 4: a small fully-connected autoencoder whose code layer is the user's (or item's) feature
vector.

Deterministic for a given seed on CPU: weights are initialised and mini-batches shuffled from a
private ``torch.Generator`` (the global RNG is not touched), and training runs single-process. Training
runs on ``device`` (``conf/model/ghrs.yaml`` passes ``trainer.device``); the fitted network is returned
on the CPU, where the GHRS pipeline encodes. On CUDA, where float sums may differ between runs, DDP ranks
take rank 0's weights so every rank sees the same features.
"""

from __future__ import annotations

import itertools
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ghrs import device as devices
from ghrs import distributed
from ghrs.options import FromConfig

log = logging.getLogger(__name__)

@contextmanager
def limited_threads(n: int = 1):
    """Cap torch's and the BLAS/OpenMP pools (threadpoolctl) at ``n`` threads, restoring them after.

    Small matrices gain nothing from threads, and on a busy machine OpenMP workers that spin-wait for
    each other can slow tiny products down by 100x; every small GHRS step runs single-threaded.
    """
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        with threadpool_limits(limits=max(1, int(n))):
            yield
    finally:
        torch.set_num_threads(before)


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU}


class AutoEncoder(nn.Module):
    """``in -> hidden... -> code -> reversed(hidden)... -> in``; linear code and output layers."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...] = (32,), code_dim: int = 8, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"autoencoder activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation]
        dims = [in_dim, *hidden]
        enc: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            enc += [nn.Linear(a, b), act()]
        enc.append(nn.Linear(dims[-1], code_dim))
        dec: list[nn.Module] = [nn.Linear(code_dim, dims[-1])]
        for a, b in itertools.pairwise(dims[::-1]):
            dec += [act(), nn.Linear(a, b)]
        if len(dims) == 1:  # no hidden layer: code -> input directly
            dec = [nn.Linear(code_dim, in_dim)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@dataclass
class AutoEncoderConfig(FromConfig):
    """``model.autoencoder`` in ``conf/model/ghrs.yaml``."""

    OPTION_GROUP: ClassVar[str] = "autoencoder"

    hidden: tuple[int, ...] = (32,)
    code_dim: int = 8
    activation: str = "relu"
    epochs: int = 100
    lr: float = 3e-3
    batch_size: int = 128
    weight_decay: float = 0.0
    device: str = "cpu"  # where to train: auto | cpu | cuda | cuda:N (the fitted net comes back on the CPU)

    def __post_init__(self) -> None:
        devices.check_spec(self.device)
        self.hidden = tuple(int(h) for h in (self.hidden or ()))
        if self.code_dim < 1 or self.epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise ValueError(f"autoencoder: code_dim, epochs, batch_size >= 1 and lr > 0 required; got {self}")


@dataclass
class TrainedAutoEncoder:
    """A fitted autoencoder and its loss curve (mean training loss per epoch)."""

    net: AutoEncoder
    losses: list[float]

    def encode(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), limited_threads(1):
            return self.net.encoder(torch.as_tensor(np.asarray(x, np.float32))).numpy().astype(np.float32)

    def reconstruction_error(self, x: np.ndarray) -> float:
        with torch.no_grad():
            t = torch.as_tensor(np.asarray(x, np.float32))
            return float(((self.net(t) - t) ** 2).mean())


class _Adam:
    """Plain Adam (Kingma & Ba) with L2 weight decay.

    ``torch.optim`` imports ``torch._dynamo`` on first use, which costs 1-20 s of imports in a fresh
    process (disk cache dependent); this loop is all the autoencoder needs.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.wd, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad if self.wd == 0 else p.grad + self.wd * p
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m / c1, (v / c2).sqrt_().add_(self.eps), value=-self.lr)


def train_autoencoder(x: np.ndarray, cfg: AutoEncoderConfig | dict | None = None, seed: int = 0) -> TrainedAutoEncoder:
    """Fit on the rows of ``x`` (n, d) with Adam on the mean squared reconstruction error.

    Returns the network (eval mode) and the mean training loss of every epoch.
    """
    cfg = AutoEncoderConfig.from_any(cfg)
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"autoencoder input must be a non-empty (n, d) matrix, got shape {x.shape}")
    with limited_threads(1):
        return _train(x, cfg, seed)


def _train(x: np.ndarray, cfg: AutoEncoderConfig, seed: int) -> TrainedAutoEncoder:
    dev = devices.resolve(cfg.device)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # nn.Linear's default init draws from the global RNG: keep it private
        net = AutoEncoder(x.shape[1], cfg.hidden, cfg.code_dim, cfg.activation)
    net.to(dev)
    data = torch.from_numpy(x).to(dev)
    adam = _Adam(list(net.parameters()), cfg.lr, cfg.weight_decay)
    losses: list[float] = []
    n = len(data)
    net.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen).to(dev)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            batch = data[perm[start : start + cfg.batch_size]]
            loss = ((net(batch) - batch) ** 2).mean()
            adam.zero_grad()
            loss.backward()
            adam.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / n)
    if dev.type == "cuda":
        distributed.broadcast_(net.parameters())
    net.cpu().eval()
    log.info("autoencoder %d -> %s -> %d: loss %.4f -> %.4f over %d epochs",
             x.shape[1], list(cfg.hidden), cfg.code_dim, losses[0], losses[-1], cfg.epochs)
    return TrainedAutoEncoder(net, losses)
