"""LightGCN (He et al. 2020) through torch-geometric, as a top-k baseline (``model=lightgcn``).

Ranking only (BPR loss on training edges, uniform negatives); seen items are masked by the evaluation,
which PyG's ``LightGCN.recommend`` does not do. With a validation part, training stops early on its HR@10
and keeps the best epoch's weights (``trainer.patience``). A user unseen in training is folded in as the mean of
the final embeddings of the items in its history (zero vector with no history: popularity decides).
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch_geometric.nn.models import LightGCN

from ghrs.data.dataset import RatingsDataset
from ghrs.evaluation import heldout_hit_rate
from ghrs.graph.bipartite import homogeneous_edge_index, normalised_adjacency
from ghrs.models.base import Recommender
from ghrs.training import TrainerConfig, Validation, train_loop


class LightGCNRecommender(Recommender):
    predicts_ratings = False

    def __init__(self, dim: int = 64, n_layers: int = 3, reg: float = 1e-4, positive_min_rating: float | None = None,
                 trainer: dict | TrainerConfig | None = None, seed: int = 0):
        if dim < 1 or n_layers < 1:
            raise ValueError("lightgcn: dim and n_layers must be >= 1")
        self.dim, self.n_layers, self.reg, self.seed = dim, n_layers, reg, seed
        self.positive_min_rating = positive_min_rating
        self.trainer = TrainerConfig.from_any(trainer)

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame, valid=None, run_dir: Path | None = None) -> Self:
        self.dataset = dataset
        dev = self.trainer.torch_device()
        torch.manual_seed(self.seed)
        pos = train if self.positive_min_rating is None else train[train["rating"] >= self.positive_min_rating]
        n_u, n_i = dataset.n_users, dataset.n_items
        self.edge_index = homogeneous_edge_index(dataset, pos).to(dev)
        self.net = LightGCN(n_u + n_i, self.dim, self.n_layers, normalize=False)
        # D^-1/2 A D^-1/2 built once (LGConv's own normalisation would redo it on every batch)
        adj = normalised_adjacency(self.edge_index, n_u + n_i)
        users = torch.tensor(pos["user"].to_numpy())  # copies (pandas arrays are read-only)
        items = torch.tensor(pos["item"].to_numpy())
        bs = self.trainer.batch_size

        def batches(epoch: int):
            perm = torch.randperm(len(users))
            for s in range(0, len(users), bs):
                idx = perm[s : s + bs]
                yield users[idx], items[idx], torch.randint(0, n_i, (len(idx),))

        def loss_fn(net: LightGCN, batch) -> tuple[torch.Tensor, int]:
            """BPR + L2 of the triple's layer-0 embeddings, summed over triples (the loop divides by the
            global count, so DDP shards add up to the whole batch's loss)."""
            u, i, j = batch
            emb = net.get_embedding(adj)
            eu, ei, ej = emb[u], emb[n_u + i], emb[n_u + j]
            bpr = -F.logsigmoid((eu * ei).sum(-1) - (eu * ej).sum(-1)).sum()
            w = net.embedding.weight
            return bpr + self.reg * sum(w[nodes].pow(2).sum() for nodes in (u, n_u + i, n_u + j)), len(u)

        self.trained_users = np.bincount(pos["user"].to_numpy(), minlength=n_u) > 0
        self.popularity = torch.as_tensor(np.bincount(pos["item"].to_numpy(), minlength=n_i), dtype=torch.float32,
                                          device=dev)

        def valid_hr(net: LightGCN) -> float:
            self._embed(net, adj)
            return heldout_hit_rate(self.score_tensor, train, valid)

        has_valid = valid is not None and len(valid) > 0
        self.state = train_loop(self.net, batches, loss_fn, self.trainer,
                                Validation(valid_hr, "hr@10", higher_is_better=True) if has_valid else None,
                                run_dir, n_batches=-(-len(users) // bs))
        self._embed(self.net, adj)  # the best epoch's weights (train_loop restores them)
        self.history = train
        return self

    @torch.no_grad()
    def _embed(self, net: LightGCN, adj: torch.Tensor) -> None:
        """Final user (n_users, dim) and item (n_items, dim) embeddings of ``net`` over the training graph."""
        emb = net.get_embedding(adj)  # no dropout or norm layers: train / eval mode does not matter
        n_u = self.dataset.n_users
        self.user_emb, self.item_emb = emb[:n_u].clone(), emb[n_u:].clone()

    def set_history(self, history: pd.DataFrame) -> None:
        self.history = history
        h = history[~self.trained_users[history["user"].to_numpy()]]
        if len(h):
            dev = self.user_emb.device
            u = torch.tensor(h["user"].to_numpy(), device=dev)
            items = torch.tensor(h["item"].to_numpy(), device=dev)
            sums = torch.zeros_like(self.user_emb).index_add_(0, u, self.item_emb[items])
            counts = torch.bincount(u, minlength=len(self.user_emb)).clamp(min=1).unsqueeze(-1)
            cold = torch.as_tensor(~self.trained_users, device=dev)
            self.user_emb[cold] = (sums / counts)[cold]

    def _grow_users(self, n_old: int, n_new: int) -> None:
        self.user_emb = torch.cat([self.user_emb, self.user_emb.new_zeros(n_new - n_old, self.user_emb.shape[1])])
        self.trained_users = np.concatenate([self.trained_users, np.zeros(n_new - n_old, bool)])

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.score_tensor(users).cpu().numpy()

    def score_tensor(self, users: np.ndarray) -> torch.Tensor:
        s = self.user_emb[torch.tensor(np.asarray(users), device=self.user_emb.device)] @ self.item_emb.T
        return s + 1e-6 * torch.log1p(self.popularity)  # popularity breaks ties (cold users)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise NotImplementedError("lightgcn is a ranking model: it predicts no ratings (use score / top-k metrics)")
