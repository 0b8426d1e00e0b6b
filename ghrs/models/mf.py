"""Biased matrix factorisation trained with the generic epoch loop (checkpoints, resume, early stop)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import torch
from torch import nn

from ghrs.data.dataset import RatingsDataset
from ghrs.models.base import Recommender
from ghrs.models.bias import fit_biases
from ghrs.training import TrainerConfig, TrainState, Validation, train_loop


class BiasedMF(nn.Module):
    """``r(u, i) = mu + b_u + b_i + <p_u, q_i>``; users (n_users,), items (n_items,) -> (batch,)."""

    def __init__(self, n_users: int, n_items: int, dim: int, mu: float):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.05)
        for emb in (self.user_bias, self.item_bias):
            nn.init.zeros_(emb.weight)
        self.register_buffer("mu", torch.tensor(float(mu)))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.user(users) * self.item(items)).sum(-1)
        return self.mu + self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1) + dot


class MFRecommender(Recommender):
    """Biased MF with L2 on the factors; cold users get a folded-in bias and no factors."""

    def __init__(self, dim: int = 32, reg: float = 0.05, trainer: dict | TrainerConfig | None = None, seed: int = 0):
        if dim < 1 or reg < 0:
            raise ValueError("mf: dim >= 1 and reg >= 0 required")
        self.dim, self.reg, self.seed = dim, reg, seed
        self.trainer = TrainerConfig.from_any(trainer)

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame, valid=None, run_dir: Path | None = None) -> Self:
        self.dataset = dataset
        dev = self.trainer.torch_device()
        torch.manual_seed(self.seed)
        u = torch.tensor(train["user"].to_numpy())
        i = torch.tensor(train["item"].to_numpy())
        r = torch.tensor(train["rating"].to_numpy(np.float32))
        self.net = BiasedMF(dataset.n_users, dataset.n_items, self.dim, float(r.mean()))
        bs = self.trainer.batch_size

        def batches(epoch: int):
            perm = torch.randperm(len(r))
            for s in range(0, len(r), bs):
                idx = perm[s : s + bs]
                yield u[idx], i[idx], r[idx]

        def loss_fn(net: BiasedMF, batch) -> tuple[torch.Tensor, int]:
            bu, bi, br = batch  # (sum over the rows, rows): the loop divides by the global row count
            sse = ((net(bu, bi) - br) ** 2).sum()
            return sse + self.reg * ((net.user(bu) ** 2).sum(-1) + (net.item(bi) ** 2).sum(-1)).sum(), len(br)

        valid_fn = None
        if valid is not None and len(valid):
            vu = torch.tensor(valid["user"].to_numpy(), device=dev)
            vi = torch.tensor(valid["item"].to_numpy(), device=dev)
            vr = torch.tensor(valid["rating"].to_numpy(np.float32), device=dev)
            lo, hi = dataset.rating_scale
            valid_fn = Validation(lambda net: float(((net(vu, vi).clamp(lo, hi) - vr) ** 2).mean().sqrt()), "rmse")
        self.state: TrainState = train_loop(self.net, batches, loss_fn, self.trainer, valid_fn, run_dir,
                                            n_batches=-(-len(r) // bs))
        self.trained_users = np.bincount(train["user"].to_numpy(), minlength=dataset.n_users) > 0
        self.history = train
        return self

    def set_history(self, history: pd.DataFrame) -> None:
        """Fold in users unseen by ``fit``: bias from their history (shrunk), zero factors."""
        self.history = history
        h = history[~self.trained_users[history["user"].to_numpy()]]
        if len(h) == 0:
            return
        net = self.net
        with torch.no_grad():
            users = np.unique(h["user"].to_numpy())
            _, b_u, _ = fit_biases(
                h["user"].to_numpy(), h["item"].to_numpy(),
                h["rating"].to_numpy(np.float64) - net.item_bias.weight.squeeze(-1).cpu().numpy()[h["item"].to_numpy()],
                self.dataset.n_users, self.dataset.n_items, reg_user=5.0, reg_item=1e12, n_epochs=1,
                mu=float(net.mu),
            )
            rows = torch.as_tensor(users, device=net.mu.device)
            net.user_bias.weight[rows, 0] = torch.as_tensor(b_u[users], dtype=torch.float32, device=net.mu.device)
            net.user.weight[rows] = 0.0

    def _grow_users(self, n_old: int, n_new: int) -> None:
        self.trained_users = np.concatenate([self.trained_users, np.zeros(n_new - n_old, bool)])
        for name in ("user", "user_bias"):
            old = getattr(self.net, name)
            grown = nn.Embedding(n_new, old.embedding_dim, device=old.weight.device)
            with torch.no_grad():
                grown.weight.zero_()
                grown.weight[:n_old] = old.weight
            setattr(self.net, name, grown)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        dev = self.net.mu.device  # where the model was trained (or the CPU after loading)
        with torch.no_grad():
            out = self.net(torch.tensor(np.asarray(users), device=dev), torch.tensor(np.asarray(items), device=dev))
        return self.clip(out.cpu().numpy())

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.score_tensor(users).cpu().numpy()

    @torch.no_grad()
    def score_tensor(self, users: np.ndarray) -> torch.Tensor:
        net = self.net
        u = torch.tensor(np.asarray(users), device=net.mu.device)
        return net.mu + net.user_bias(u) + net.item_bias.weight.T + net.user(u) @ net.item.weight.T
