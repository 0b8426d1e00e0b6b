"""Time-ordered windows of users' histories, the hybrid's encoder inputs (:class:`Sequences`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

__all__ = ["N_STEP_FEATURES", "Sequences"]

N_STEP_FEATURES = 2  # per interaction: centred rating, log(1 + days since the previous interaction)


def _flat_history(history: pd.DataFrame, mu: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """History sorted by (user, time) as flat per-interaction arrays: returns the sorted users (N,) and
    ``{"items": 1-based ids (N,), "ratings": (N,), "features": (N, 2)}`` (centred rating, log(1 + days
    since the user's previous interaction))."""
    h = history.sort_values(["user", "timestamp"], kind="stable")
    users = h["user"].to_numpy()
    ratings = h["rating"].to_numpy(np.float32)
    ts = h["timestamp"].to_numpy().astype(np.float64)
    gaps = np.diff(ts, prepend=ts[:1])
    feats = np.stack([ratings - mu, np.log1p(np.maximum(gaps, 0) / 86_400.0)], 1).astype(np.float32)
    return users, {"items": h["item"].to_numpy() + 1, "ratings": ratings, "features": feats}


class Sequences:
    """Right-padded, time-ordered windows of the users' histories.

    Built by :meth:`last` (one row per user: its last ``max_len`` interactions; what the model encodes
    at prediction time) or :meth:`training` (the training regime's windows). Attributes (tensors, one
    row per window): ``items`` (W, L) long, 1-based ids (0 = padding); ``ratings`` (W, L) float;
    ``features`` (W, L, 2) (the time gap of a window's first step is 0); ``lengths`` (W,) long;
    ``users`` (W,) long; ``offset`` (W,) long, position of the window's first item in the user's history;
    ``loss_from`` (W,) long, the first window position whose item is a training target (>= 1).
    """

    def __init__(self, history: pd.DataFrame, n_users: int, user: np.ndarray, start: np.ndarray,
                 length: np.ndarray, loss_from: np.ndarray, mu: float):
        sorted_users, flat = _flat_history(history, mu)
        first = np.searchsorted(sorted_users, np.arange(n_users))  # row of each user's first interaction
        L = max(1, int(length.max(initial=0)))
        pos = np.arange(L)
        real = pos[None, :] < length[:, None]
        idx = np.where(real, first[user][:, None] + start[:, None] + pos[None, :], 0)
        real_t = torch.as_tensor(real)
        self.items = torch.as_tensor(flat["items"][idx] if len(flat["items"]) else np.zeros(idx.shape, np.int64))
        self.items = torch.where(real_t, self.items, 0).long()
        self.ratings = torch.zeros(real.shape)
        self.features = torch.zeros(*real.shape, N_STEP_FEATURES)
        if len(flat["items"]):
            self.ratings = torch.where(real_t, torch.as_tensor(flat["ratings"][idx]), 0.0)
            self.features = torch.as_tensor(flat["features"][idx]) * real_t.unsqueeze(-1)
            self.features[:, 0, 1] = 0.0  # no gap before a window's first step
        self.lengths = torch.as_tensor(length, dtype=torch.long)
        self.users = torch.as_tensor(user, dtype=torch.long)
        self.offset = torch.as_tensor(start, dtype=torch.long)
        self.loss_from = torch.as_tensor(loss_from, dtype=torch.long)

    @classmethod
    def last(cls, history: pd.DataFrame, n_users: int, max_len: int, mu: float) -> Sequences:
        """One row per user (n_users rows): the last ``max_len`` interactions of its history."""
        counts = np.bincount(history["user"].to_numpy(), minlength=n_users)
        length = np.minimum(counts, max_len)
        return cls(history, n_users, np.arange(n_users), counts - length, length, np.ones(n_users, np.int64), mu)

    @classmethod
    def training(cls, history: pd.DataFrame, n_users: int, max_len: int, mu: float, regime: str,
                 stride: int | None = None) -> Sequences:
        """The training windows of the users with at least 2 interactions.

        ``last_window``: each user's last ``max_len`` interactions; every next item inside is a target.
        ``all_prefixes``: every next-item target t = 1..n-1 of the whole history exactly once per epoch:
        windows of up to ``max_len`` items ending at n, n - stride, n - 2 stride, ...; the window ending at
        e trains the targets max(1, e - stride)..e-1, each predicted from the items before it in its
        window (at least max_len - stride of them when the history has them). ``stride`` (1..max_len-1,
        default max_len - 1: every item is in about one window) trades compute for context length.
        """
        counts = np.bincount(history["user"].to_numpy(), minlength=n_users)
        users = np.flatnonzero(counts >= 2)
        n = counts[users]
        if regime == "last_window":
            length = np.minimum(n, max_len)
            return cls(history, n_users, users, n - length, length, np.ones(len(users), np.int64), mu)
        stride = max_len - 1 if stride is None else stride
        n_windows = -(-(n - 1) // stride)  # ceil((n - 1) / stride) windows cover targets 1..n-1
        user = np.repeat(users, n_windows)
        k = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)  # 0 = latest
        end = np.repeat(n, n_windows) - k * stride
        start = np.maximum(0, end - max_len)
        lo = np.maximum(1, end - stride)
        return cls(history, n_users, user, start, end - start, lo - start, mu)

    def to(self, device: torch.device) -> Sequences:
        for name in ("items", "ratings", "features", "lengths", "users", "offset", "loss_from"):
            setattr(self, name, getattr(self, name).to(device))
        return self
