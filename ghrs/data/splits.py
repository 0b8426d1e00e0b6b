"""Evaluation splits. Every split is reproducible from its seed and leak-free: no test interaction is
in ``train``, ``valid`` or ``revealed``.

Each split class is a callable configured by Hydra (``conf/split/*.yaml``): ``split(dataset) -> Split``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ghrs.data.dataset import RatingsDataset
from ghrs.errors import ConfigError

log = logging.getLogger(__name__)


def _empty(like: pd.DataFrame) -> pd.DataFrame:
    return like.iloc[:0]


@dataclass
class Split:
    """One train/valid/test partition of ``dataset.ratings`` (each a DataFrame slice of it).

    Attributes:
        train: what ``fit`` sees.
        valid: for early stopping (may be empty).
        test: what is evaluated.
        revealed: cold users' first ratings, given to the model at prediction time (never fitted on).
        relevant_min_rating: for ranking metrics, a test item is relevant when its rating is at least
            this; ``None`` makes every test item relevant (leave-one-out).
        cold_users, cold_items: indices of held-out users / items (empty for warm splits).
    """

    name: str
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    revealed: pd.DataFrame
    relevant_min_rating: float | None = 4.0
    cold_users: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    cold_items: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def describe(self) -> str:
        return (
            f"split {self.name}: train {len(self.train):,}, valid {len(self.valid):,}, "
            f"test {len(self.test):,}, revealed {len(self.revealed):,}"
            + (f", cold users {len(self.cold_users):,}" if len(self.cold_users) else "")
            + (f", cold items {len(self.cold_items):,}" if len(self.cold_items) else "")
        )


def _carve_valid(train: pd.DataFrame, ratio: float, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"split.valid_ratio must be in [0, 1), got {ratio}")
    if ratio == 0.0:
        return train, _empty(train)
    is_valid = rng.random(len(train)) < ratio
    return train[~is_valid], train[is_valid]


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"split.{name} must be in (0, 1), got {value}")


class OfficialSplit:
    """A predefined fold shipped with the data (ML-100K ``u1``..``u5``, ``ua``, ``ub``; CSV ``given``)."""

    def __init__(self, fold: str = "u1", valid_ratio: float = 0.0, relevant_min_rating: float | None = 4.0, seed: int = 0):
        self.fold, self.valid_ratio, self.relevant_min_rating, self.seed = str(fold), valid_ratio, relevant_min_rating, seed

    def __call__(self, dataset: RatingsDataset) -> Split:
        folds = dataset.folds
        fold = self.fold
        if fold not in folds:
            if len(folds) == 1:
                (only,) = folds
                log.info("dataset %s has one predefined fold, '%s': using it", dataset.name, only)
                fold = only
            else:
                raise ConfigError(
                    f"dataset {dataset.name} has no predefined fold '{self.fold}' (available: "
                    f"{sorted(folds) or 'none'}); use split=random or split=temporal_loo"
                )
        is_test = np.zeros(len(dataset.ratings), bool)
        is_test[folds[fold]] = True
        train, valid = _carve_valid(dataset.ratings[~is_test], self.valid_ratio, np.random.default_rng(self.seed))
        r = dataset.ratings
        return Split(f"official:{fold}", train, valid, r[is_test], _empty(r), self.relevant_min_rating)


class RandomSplit:
    """Random hold-out of ratings: a ``test_ratio`` share, or fold ``fold`` of ``n_folds`` (k-fold)."""

    def __init__(
        self,
        test_ratio: float = 0.1,
        n_folds: int | None = None,
        fold: int = 0,
        valid_ratio: float = 0.0,
        relevant_min_rating: float | None = 4.0,
        seed: int = 0,
    ):
        if n_folds is None:
            _check_ratio("test_ratio", test_ratio)
        elif n_folds < 2 or not 0 <= int(fold) < n_folds:
            raise ConfigError(f"split.n_folds must be >= 2 and split.fold in [0, n_folds), got {n_folds}, {fold}")
        self.test_ratio, self.n_folds, self.fold = test_ratio, n_folds, fold
        self.valid_ratio, self.relevant_min_rating, self.seed = valid_ratio, relevant_min_rating, seed

    def __call__(self, dataset: RatingsDataset) -> Split:
        r = dataset.ratings
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(len(r))
        is_test = np.zeros(len(r), bool)
        if self.n_folds is None:
            is_test[perm[: round(self.test_ratio * len(r))]] = True
            name = f"random:{self.test_ratio}"
        else:
            is_test[np.array_split(perm, self.n_folds)[int(self.fold)]] = True
            name = f"random:fold{self.fold}/{self.n_folds}"
        train, valid = _carve_valid(r[~is_test], self.valid_ratio, rng)
        return Split(name, train, valid, r[is_test], _empty(r), self.relevant_min_rating)


TIE_BREAKS = ("hash", "item", "file")  # split.tie_break of the temporal leave-one-out


def tie_key(dataset: RatingsDataset, tie_break: str) -> np.ndarray:
    """(n_ratings,) order of ``dataset.ratings``' rows among one user's ratings with equal timestamps.

    - ``hash``: a fixed pseudo-random key per (raw user id, raw item id) pair: neutral, and independent of
      the file's row order and of the ids' order.
    - ``item``: the item index (raw id order); independent of row order, but on MovieLens the later raw
      ids are the rarer films, so the last item of a tie is rarer than chance.
    - ``file``: the ratings' order in their file (e.g. RecBole's stable sort); reordering the file's rows
      changes it, by design.
    """
    r = dataset.ratings
    if tie_break == "file":
        if dataset.source_line is None:
            raise ConfigError("split.tie_break=file needs the ratings' file order, which this dataset does not "
                              "record; use split.tie_break=hash or item")
        return dataset.source_line
    if tie_break == "item":
        return r["item"].to_numpy()
    pairs = pd.DataFrame({"u": dataset.user_ids[r["user"].to_numpy()].astype(str),
                          "i": dataset.item_ids[r["item"].to_numpy()].astype(str)})
    return pd.util.hash_pandas_object(pairs, index=False).to_numpy()


class TemporalLOOSplit:
    """Per user, in time order: last interaction = test, second last = validation, the rest = train.

    Users with fewer than ``min_history`` ratings stay entirely in train. ``tie_break`` (see
    :func:`tie_key`) orders ratings with equal timestamps, so it decides the held-out items of users whose
    last ratings share a second (44% of ML-100K's users).
    """

    def __init__(self, min_history: int = 3, relevant_min_rating: float | None = None, seed: int = 0,
                 tie_break: str = "hash"):
        if min_history < 3:
            raise ConfigError("split.min_history must be >= 3 (one train, one valid, one test)")
        if tie_break not in TIE_BREAKS:
            raise ConfigError(f"split.tie_break must be one of {list(TIE_BREAKS)}, got {tie_break!r}")
        self.min_history, self.relevant_min_rating, self.seed = min_history, relevant_min_rating, seed
        self.tie_break = tie_break

    def __call__(self, dataset: RatingsDataset) -> Split:
        r = dataset.ratings
        # Rank from the end within each user in (timestamp, tie key) order.
        order = np.lexsort((tie_key(dataset, self.tie_break), r["timestamp"].to_numpy(), r["user"].to_numpy()))
        pos_from_end = np.empty(len(r), np.int64)
        pos_from_end[order] = r.iloc[order].groupby("user").cumcount(ascending=False).to_numpy()
        n_user = r.groupby("user")["item"].transform("size").to_numpy()
        eligible = n_user >= self.min_history
        test = eligible & (pos_from_end == 0)
        valid = eligible & (pos_from_end == 1)
        return Split("temporal_loo", r[~(test | valid)], r[valid], r[test], _empty(r), self.relevant_min_rating)


class ColdUserSplit:
    """Hold out a ``holdout_ratio`` share of users; reveal only each one's first ``reveal`` ratings in
    time (given to the model at prediction time, never trained on) and test on the rest."""

    def __init__(
        self,
        holdout_ratio: float = 0.1,
        reveal: int = 0,
        valid_ratio: float = 0.0,
        relevant_min_rating: float | None = 4.0,
        seed: int = 0,
    ):
        _check_ratio("holdout_ratio", holdout_ratio)
        if reveal < 0:
            raise ConfigError(f"split.reveal must be >= 0, got {reveal}")
        self.holdout_ratio, self.reveal, self.valid_ratio = holdout_ratio, int(reveal), valid_ratio
        self.relevant_min_rating, self.seed = relevant_min_rating, seed

    def __call__(self, dataset: RatingsDataset) -> Split:
        r = dataset.ratings
        rng = np.random.default_rng(self.seed)
        users = np.unique(r["user"].to_numpy())
        cold = np.sort(rng.choice(users, round(self.holdout_ratio * len(users)), replace=False))
        is_cold = np.isin(r["user"].to_numpy(), cold)
        order = r.groupby("user").cumcount().to_numpy()  # position in the user's time-ordered history
        revealed = is_cold & (order < self.reveal)
        test = is_cold & ~revealed
        short = np.setdiff1d(cold, r["user"].to_numpy()[test])
        if len(short):
            log.warning("%d cold users have <= %d ratings and contribute no test ratings", len(short), self.reveal)
        train, valid = _carve_valid(r[~is_cold], self.valid_ratio, rng)
        return Split(
            f"cold_user:{self.holdout_ratio}:k{self.reveal}", train, valid, r[test], r[revealed],
            self.relevant_min_rating, cold_users=cold,
        )


class ColdItemSplit:
    """Hold out a ``holdout_ratio`` share of items entirely: all their ratings are test ratings."""

    def __init__(self, holdout_ratio: float = 0.1, valid_ratio: float = 0.0, relevant_min_rating: float | None = 4.0, seed: int = 0):
        _check_ratio("holdout_ratio", holdout_ratio)
        self.holdout_ratio, self.valid_ratio, self.relevant_min_rating, self.seed = holdout_ratio, valid_ratio, relevant_min_rating, seed

    def __call__(self, dataset: RatingsDataset) -> Split:
        r = dataset.ratings
        rng = np.random.default_rng(self.seed)
        items = np.unique(r["item"].to_numpy())
        cold = np.sort(rng.choice(items, round(self.holdout_ratio * len(items)), replace=False))
        is_cold = np.isin(r["item"].to_numpy(), cold)
        train, valid = _carve_valid(r[~is_cold], self.valid_ratio, rng)
        return Split(
            f"cold_item:{self.holdout_ratio}", train, valid, r[is_cold], _empty(r), self.relevant_min_rating,
            cold_items=cold,
        )


class TemporalGlobalSplit:
    """One global timestamp cut: train before it, test after it (no "global timeline" leak).

    The cut is the ``test_quantile`` of all timestamps (or ``cut_timestamp``, seconds, when given). Only
    users with at least ``min_history`` interactions before the cut are evaluated; their history is
    exactly what happened before the cut. ``variant``:

    - ``next_item``: each such user's first interaction at or after the cut is the test target (later
      ones are dropped); every target is relevant.
    - ``rating``: all of their ratings at or after the cut are test ratings (relevant: rating >= 4).

    Validation (``valid_quantile`` < ``test_quantile``, null: none): the interactions between the
    validation cut and the test cut (train ends at the validation cut). Interactions at or after the
    cut by users without history are dropped (this split evaluates warm users only).
    """

    VARIANTS = ("next_item", "rating")

    def __init__(self, test_quantile: float = 0.9, valid_quantile: float | None = 0.85, cut_timestamp: int | None = None,
                 variant: str = "next_item", min_history: int = 1, relevant_min_rating: float | str | None = "auto",
                 seed: int = 0):
        from ghrs.errors import UserError

        _check_ratio("test_quantile", test_quantile)
        if valid_quantile is not None and not 0.0 < valid_quantile < test_quantile:
            raise UserError(f"split.valid_quantile must be in (0, split.test_quantile={test_quantile}) or null, "
                            f"got {valid_quantile}")
        if variant not in self.VARIANTS:
            raise UserError(f"split.variant must be one of {self.VARIANTS}, got {variant!r}")
        if min_history < 1:
            raise UserError(f"split.min_history must be >= 1, got {min_history}")
        if relevant_min_rating == "auto":
            relevant_min_rating = None if variant == "next_item" else 4.0
        self.test_quantile, self.valid_quantile, self.cut_timestamp = test_quantile, valid_quantile, cut_timestamp
        self.variant, self.min_history, self.relevant_min_rating, self.seed = variant, int(min_history), relevant_min_rating, seed

    def __call__(self, dataset: RatingsDataset) -> Split:
        from ghrs.errors import UserError

        r = dataset.ratings  # sorted by (user, timestamp): "first after the cut" follows that order
        t = r["timestamp"].to_numpy()
        cut = int(self.cut_timestamp) if self.cut_timestamp is not None else int(np.quantile(t, self.test_quantile))
        before, after = t < cut, t >= cut
        n_before = np.bincount(r["user"].to_numpy()[before], minlength=dataset.n_users)
        warm = n_before[r["user"].to_numpy()] >= self.min_history
        test = after & warm
        if self.variant == "next_item":
            test &= r.assign(_t=test).groupby("user")["_t"].cumsum().to_numpy() == 1  # first test row per user
        if not test.any():
            raise UserError(f"split temporal_global: no user has >= {self.min_history} interactions before the cut "
                            f"{cut} and one after it; lower split.test_quantile or split.min_history")
        valid = np.zeros(len(r), bool)
        if self.valid_quantile is not None:
            vcut = int(np.quantile(t, self.valid_quantile))
            valid = (t >= vcut) & before
            before = before & ~valid
        log.info("temporal_global: cut at timestamp %d (%s), %d evaluated users", cut, self.variant, int(test.sum())
                 if self.variant == "next_item" else len(np.unique(r["user"].to_numpy()[test])))
        return Split(f"temporal_global:{self.test_quantile}:{self.variant}", r[before], r[valid], r[test], _empty(r),
                     self.relevant_min_rating)
