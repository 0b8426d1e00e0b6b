"""Use a trained run: top-k recommendations and batch rating prediction in raw ids, with cold start.

Known users are scored as trained. A user id the model never saw gets recommendations when side
information and/or a few ratings are given (folded in without retraining); an unknown id with nothing
else is a clear error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ghrs import artefacts
from ghrs.data.side_features import check_policy
from ghrs.errors import ConfigError, UnknownIdError
from ghrs.models.base import Recommender
from ghrs.rundir import run_lock

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
LEGACY_MODEL_FILE = "model.pt"  # pickled models of older versions: never loaded
SAVE_WAIT_S = 120.0  # how long a save=true update waits for another writer of the run dir


def model_file(run: str | Path) -> Path:
    """The model file of a run directory (or ``run`` itself when it names a file)."""
    path = Path(run).expanduser()
    if path.is_dir():
        if not (path / MODEL_FILE).exists() and (path / LEGACY_MODEL_FILE).exists():
            raise artefacts.ArtefactError(
                f"{path / LEGACY_MODEL_FILE} is a pickled model from an older version, which is never loaded "
                "(loading it could run code from the file); retrain the run (python -m ghrs.train)")
        return path / MODEL_FILE
    if not path.exists():
        raise artefacts.ArtefactError(
            f"no run at {path}: pass a training run directory (outputs/...) or its {MODEL_FILE}")
    return path


def load_run(run: str | Path) -> tuple[Recommender, dict]:
    """Load the model of a run directory (or of its model file): ``(model, resolved training config)``.

    Only what :mod:`ghrs.artefacts` can parse is read; nothing in the file is executed."""
    file = model_file(run)
    model, meta = artefacts.load(file)
    if not isinstance(model, Recommender) or not isinstance(meta.get("config"), dict):
        raise artefacts.ArtefactError(f"{file}: holds no trained model; retrain the run (python -m ghrs.train)")
    return model, meta["config"]


def save_run_model(path: str | Path, model: Recommender, config: dict) -> Path:
    """Write ``model`` and its resolved training ``config`` (plain dict) as a pickle-free artefact."""
    meta = {"config": config, "dataset_name": model.dataset.name, "model_class": type(model).__name__}
    trained = getattr(model, "trained_users", None)
    history = getattr(model, "history", None)
    if trained is None and history is not None:  # models that keep no mask: users with training ratings
        trained = np.bincount(history["user"].to_numpy(), minlength=model.dataset.n_users) > 0
    hook = artefacts.Shareable(model.dataset, trained)
    return artefacts.save(path, model, meta, hook=hook)


def update_run(run: str | Path, apply: Callable[[Recommender], Any]) -> Any:
    """Load a run's model, ``apply(model)`` (fold users in, observe interactions) and save it back.

    Holds the run dir's writer lock from load to save, so concurrent updates are serialised and none is
    lost; the write is atomic. Returns what ``apply`` returns."""
    file = model_file(run)
    with run_lock(file.parent, "recommend save", wait=SAVE_WAIT_S):
        model, config = load_run(file)
        result = apply(model)
        save_run_model(file, model, config)
    return result


def interactions_frame(model: Recommender, rows, default_user=None) -> pd.DataFrame:
    """Raw interactions -> an index frame (user, item, rating, timestamp).

    ``rows``: a DataFrame with columns user, item, rating[, timestamp], or a list of ``[item, rating]`` /
    ``[item, rating, timestamp]`` for ``default_user``. Missing timestamps continue after the newest
    one in the model's history, in the given order. Unknown items are an error.
    """
    if isinstance(rows, pd.DataFrame):
        table = rows.copy()
    else:
        rows = [list(r) for r in rows]
        if any(len(r) not in (2, 3) for r in rows):
            raise ConfigError("history entries must be [item, rating] or [item, rating, timestamp]")
        table = pd.DataFrame([r + [None] * (3 - len(r)) for r in rows], columns=["item", "rating", "timestamp"])
        table.insert(0, "user", default_user)
    ds = model.dataset
    lo, hi = ds.rating_scale
    rating = pd.to_numeric(table["rating"], errors="coerce")
    if rating.isna().any() or ((rating < lo) | (rating > hi)).any():
        raise ConfigError(f"history ratings must be numbers in [{lo}, {hi}], got {table['rating'].tolist()[:10]}")
    start = int(model.history["timestamp"].max()) + 1 if len(model.history) else 0
    ts = table["timestamp"] if "timestamp" in table.columns else pd.Series([None] * len(table))
    ts = pd.to_numeric(ts, errors="coerce").to_numpy(dtype=float)
    ts = np.where(np.isnan(ts), start + np.arange(len(table)), ts).astype(np.int64)
    return pd.DataFrame({
        "user": ds.user_index(table["user"].to_numpy()),
        "item": ds.item_index(table["item"].to_numpy()),
        "rating": rating.to_numpy(np.float32),
        "timestamp": ts,
    })


def ensure_users(model: Recommender, raw_users, history: pd.DataFrame | None, side: pd.DataFrame | None,
                 side_unknown: str = "error") -> None:
    """Fold in users unknown to the model that come with side info and/or history; error otherwise.

    ``side_unknown``: ``error`` (side values unseen in training are a UserError) or ``ignore`` (logged)."""
    check_policy(side_unknown)
    ds = model.dataset
    raw = np.asarray(raw_users).astype(ds.user_ids.dtype, copy=False) if len(raw_users) else np.asarray(raw_users)
    unknown = pd.unique(raw[pd.Index(ds.user_ids).get_indexer(raw) < 0])
    if len(unknown) == 0:
        return
    with_info = set()
    if history is not None and len(history):
        with_info |= set(np.asarray(history["user"]).astype(ds.user_ids.dtype).tolist())
    side_rows = None
    if side is not None and len(side):
        side = side.assign(id=np.asarray(side["id"]).astype(ds.user_ids.dtype))
        with_info |= set(side["id"].tolist())
    missing = [u for u in unknown.tolist() if u not in with_info]
    if missing:
        raise UnknownIdError(f"unknown user id(s) {missing[:10]}: the model never saw them; give a few ratings "
                       "(history=[[item, rating], ...]) and/or side information (side={...}) to fold them in")
    if side is not None and len(side):
        side_rows = side.set_index("id").reindex(unknown).reset_index()
    log.info("folding in %d new user(s) without retraining: %s", len(unknown), unknown[:10].tolist())
    model.add_users(unknown, side_rows, side_unknown)


def best_items(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """scores (b, n_items) -> (items (b, kk), their scores (b, kk)), kk = min(k, n_items), best first.

    Ties keep the lower item index; left-out items (-inf) sort last, for the caller to drop.
    """
    kk = min(k, scores.shape[1])
    # the kk best per row (unordered), put in item order, then ordered by score (stable sort)
    top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    top = np.sort(top, axis=1)
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1, kind="stable"), 1)
    return top, np.take_along_axis(scores, top, 1)


def top_k(model: Recommender, users: np.ndarray, k: int, exclude: pd.DataFrame, batch_size: int = 1024) -> pd.DataFrame:
    """The ``k`` best-scored items per user, leaving out the (user, item) pairs of ``exclude``.

    Args:
        users: (n,) user indices.
        exclude: a frame with index columns user, item (e.g. the history the user has seen).
        batch_size: users scored at a time (memory ~ batch_size x n_items).

    Returns a frame ``user, rank, item, title, score`` in raw ids, users in the given order; a user with
    fewer than ``k`` unexcluded items gets fewer rows.
    """
    ds = model.dataset
    users = np.asarray(users, dtype=np.int64)
    ex = exclude[exclude["user"].isin(users)]
    ex_rows = pd.Index(users).get_indexer(ex["user"].to_numpy())  # position of each excluded pair's user
    parts = []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = np.array(model.score(batch), dtype=np.float64)  # (b, n_items), a writable copy
        sel = (ex_rows >= start) & (ex_rows < start + len(batch))
        scores[ex_rows[sel] - start, ex["item"].to_numpy()[sel]] = -np.inf
        top, best = best_items(scores, k)
        row, col = np.nonzero(np.isfinite(best))
        items = top[row, col]
        parts.append(pd.DataFrame({"user": ds.user_ids[batch[row]], "rank": col + 1, "item": ds.item_ids[items],
                                   "title": ds.item_titles(items), "score": best[row, col]}))
    columns = ["user", "rank", "item", "title", "score"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def recommend(
    model: Recommender,
    users,
    k: int = 10,
    history=None,
    side: dict | None = None,
    side_unknown: str = "error",
) -> pd.DataFrame:
    """Top-``k`` unseen items per raw user id.

    Args:
        users: raw user ids.
        history: for a single user, new interactions ``[[item, rating(, timestamp)], ...]``: a known
            user's state is updated with them (``model.observe``: one recurrent step per interaction for
            recurrent sequence models), an unknown user is folded in from them.
        side: for a single unknown user, side information (e.g. ``{"age": 30, "gender": "F"}``).
        side_unknown: ``error`` | ``ignore``: side values the model never saw (see ``ensure_users``).

    Returns a frame ``user, rank, item, title, score`` (raw ids).
    """
    users = list(users)
    check_request(users, k, history, side)
    side_df = pd.DataFrame([{**side, "id": users[0]}]) if side else None
    hist_users = pd.DataFrame({"user": [users[0]] * len(history)}) if history else None
    ensure_users(model, users, hist_users, side_df, side_unknown)
    if history:
        new = interactions_frame(model, history, default_user=users[0])
        model.observe(new)
    idx = model.dataset.user_index(users)
    return top_k(model, idx, k, model.history)


def check_request(users: list, k, history, side) -> None:
    """Validate a recommendation request before any model work; raises :class:`ConfigError`."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}: e.g. k=10")
    if not users:
        raise ConfigError("give at least one user id: users=[1,42]")
    if side is not None and not isinstance(side, dict):
        raise ConfigError(f"side must be a mapping, got {side!r}: quote it, side='{{age:30,gender:F}}' (unquoted "
                          "braces are expanded by the shell into several side= arguments)")
    if history is not None and (not isinstance(history, (list, tuple))
                                or any(not isinstance(r, (list, tuple)) or len(r) not in (2, 3) for r in history)):
        raise ConfigError(f"history must be a list of [item, rating] or [item, rating, timestamp] entries, got "
                          f"{history!r}: e.g. history='[[50,5],[172,4]]'")
    if (history or side) and len(users) != 1:
        raise ConfigError(f"history/side describe one user: give exactly one user id with them, got users={users}")


def top_items(scores: np.ndarray, seen, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items of one user: scores (n_items,), ``seen`` item indices left out (or None).

    Returns (item indices, their scores), best first; ties keep the lower index; fewer than ``k`` when
    fewer items remain.
    """
    s = np.array(scores, dtype=np.float64)
    if seen is not None and len(seen):
        s[np.asarray(seen, dtype=np.int64)] = -np.inf
    top, best = best_items(s[None], k)
    keep = np.isfinite(best[0])
    return top[0][keep], best[0][keep]

def predict_pairs(
    model: Recommender,
    pairs: pd.DataFrame,
    history: pd.DataFrame | None = None,
    side: pd.DataFrame | None = None,
    side_unknown: str = "error",
) -> pd.DataFrame:
    """Ratings for raw ``(user, item)`` pairs, one output row per input row, in input order.

    ``history`` (user, item, rating[, timestamp]) and ``side`` (id + side columns) may describe users the
    model never saw; they are folded in first.
    """
    for col in ("user", "item"):
        if col not in pairs.columns:
            raise ConfigError(f"pairs need columns 'user' and 'item'; got {list(pairs.columns)}")
    ensure_users(model, pairs["user"].to_numpy(), history, side, side_unknown)
    if history is not None and len(history):
        model.set_history(pd.concat([model.history, interactions_frame(model, history)], ignore_index=True))
    ds = model.dataset
    u = ds.user_index(pairs["user"].to_numpy())
    i = ds.item_index(pairs["item"].to_numpy())
    return pd.DataFrame({"user": pairs["user"].to_numpy(), "item": pairs["item"].to_numpy(),
                         "prediction": model.predict(u, i)})
