"""The hybrid recommender (``model=hybrid``): GHRS features + a sequence encoder + a graph embedding.

User representation at history position t (a (batch, dim) vector):
    MLP([GHRS static vector (graph features, side one-hots, autoencoder code) | cluster embedding |
         graph embedding (LightGCN-style propagation over the training bipartite graph) |
         sequence-encoder state after the user's first t interactions | optional user-id embedding])
Item representation: item-id embedding + a projection of the GHRS item vector (genres, year, item graph
features, popularity, item autoencoder code) + the item's graph embedding, so items without ratings still
get a meaningful vector.

Two heads, weighted by ``heads.rating`` / ``heads.ranking`` (0 disables one):
- rating: ``mu + b_u + b_i + <W_r u_t, v_i>`` for the item the user rates next (the biases are the
  closed-form bias baseline, folded in for new users; the network learns the residual);
- ranking: next-item full softmax cross-entropy over all items (``n_negatives`` > 0: sampled softmax).
At prediction time the state after the whole history is used. Everything is fitted on the training split
only; cold users are folded in through ``set_history`` (GHRS features from their revealed ratings, bias,
sequence state, graph edges) without retraining.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ghrs import artefacts, distributed
from ghrs.data.dataset import RatingsDataset
from ghrs.errors import UserError
from ghrs.evaluation import heldout_hit_rate
from ghrs.features.item_features import encode_item_side
from ghrs.graph.bipartite import homogeneous_edge_index
from ghrs.io import save_figure
from ghrs.models.autorec import AutoRecRecommender
from ghrs.models.base import Recommender
from ghrs.models.blender import LinearBlender, out_of_fold
from ghrs.models.ghrs import GHRSRecommender
from ghrs.models.ghrs_features import GHRSFeatures
from ghrs.models.hybrid_net import HybridNet
from ghrs.models.sequences import N_STEP_FEATURES, Sequences
from ghrs.models.stream_state import grown, is_batched, map_states, select_rows, write_rows
from ghrs.training import TrainerConfig, TrainState, Validation, train_loop

log = logging.getLogger(__name__)

GHRS_CACHE = "ghrs_fit.safetensors"  # the fitted GHRS model and base predictions, reused on resume

# ``model.use``: ablation switches, one per component (all on by default; see HybridRecommender).
USE_DEFAULTS = {"graph_features": True, "codes": True, "clusters": True, "side": True, "graph_embedding": True,
                "neighbourhood": True}
# Switches that change how GHRS itself is fitted (so a pre-fitted GHRS model cannot honour them).
USE_GHRS = ("graph_features", "clusters", "side", "neighbourhood")
BLENDERS = {"linear": {"support": False}, "support": {"support": True}}  # model.blender -> LinearBlender kwargs


def resolve_use(use: dict | None) -> dict[str, bool]:
    """``model.use`` with defaults filled in; an unknown switch is a user error."""
    use = dict(use or {})
    unknown = set(use) - set(USE_DEFAULTS)
    if unknown:
        raise UserError(f"hybrid: unknown model.use switch(es) {sorted(unknown)}; known: {sorted(USE_DEFAULTS)}")
    return {k: bool(use.get(k, v)) for k, v in USE_DEFAULTS.items()}


def ghrs_ablation_kwargs(use: dict[str, bool]) -> dict:
    """GHRSRecommender keyword arguments that switch off the GHRS components ``use`` disables."""
    out: dict = {}
    if not use["graph_features"]:
        out["graph_features"] = []  # the user vector = side information only
    if not use["side"]:
        out["use_side"] = False
    if not use["clusters"]:
        out["n_clusters"] = 1  # one cluster: no cluster-item residual, a constant cluster embedding
        if not use["codes"]:
            out["user_autoencoder"] = False  # neither codes nor clusters: no user autoencoder to fit
    if not use["neighbourhood"]:
        out["neighbours"] = {"weight_user": 0.0, "weight_item": 0.0}
    return out

TRAIN_REGIMES = ("last_window", "all_prefixes")
EARLY_STOPPING = ("rating", "ranking")  # the validation metric that picks the epoch when both heads are on


def _standardise(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x[rows].mean(0)
    std = x[rows].std(0)
    std[std == 0] = 1.0
    return ((x - mean) / std).astype(np.float32), mean, std


class HybridRecommender(Recommender):
    """See the module docstring; every knob is in ``conf/model/hybrid.yaml``.

    Args:
        encoder: a ``SequenceEncoder`` factory (``conf/encoder/*.yaml`` is instantiated as a partial
            taking ``n_items`` and ``n_features``).
        ghrs: keyword arguments of :class:`GHRSRecommender` (alpha, n_clusters, autoencoder, predictor,
            ...), or such a model already fitted on the same training split: its features feed the network and its rating prediction is the base the rating head
            refines.
        dim: width of user/item representations.
        graph_layers: LightGCN propagation steps (0: no graph embedding).
        use_user_id: add a user-id embedding (off for cold-start evaluation: unseen users have none).
        heads: ``{"rating": w, "ranking": w}`` loss weights.
        n_negatives: 0 for full softmax over all items, else sampled softmax with that many negatives.
        graph_fanout: None: every training batch propagates the whole graph (O(edges) per batch); N:
            over a neighbour-sampled subgraph of the batch's users, targets and negatives, N neighbours
            per node and hop (unbiased, O(batch x N^layers) per batch: for large graphs). Needs sampled
            negatives when the ranking head is on. Evaluation always propagates the whole graph.
        max_len: history length fed to the encoder (the most recent interactions).
        streaming: keep per-user recurrent states so ``observe`` updates a user with one step.
        residual_shrinkage: c in the weight n / (n + c) of the rating head's learned residual for a user
            with n known interactions (the same weight at training positions and at prediction), so a
            cold user with few ratings leans on the GHRS base prediction.
        base_folds: K > 1: the rating head learns to correct out-of-fold GHRS predictions of the training
            ratings (K extra GHRS fits); 1: in-sample predictions.
        use: ablation switches (each true by default), ``{"graph_features", "codes", "clusters", "side",
            "graph_embedding", "neighbourhood"}``: GHRS graph features (false: the GHRS user vector is the
            side information alone, so codes and clusters carry no graph signal either), the autoencoder
            code in the user vector, the k-means clusters (false: one cluster, i.e. no cluster-item
            residual in the base and a constant cluster embedding), user side information (GHRS's
            ``use_side``), the LightGCN embedding (false: ``graph_layers`` = 0), the agreement-
            neighbourhood residual of the base predictor. The sequence encoder is switched off with
            ``encoder=none``.
        autorec: None (off), or keyword arguments of :class:`~ghrs.models.autorec.AutoRecRecommender`: an
            item-based AutoRec joins the base prediction (shorthand for ``bases={"autorec": ...}``).
        bases: ``{name: factory}``: further rating predictors in the base, each ``factory()`` an unfitted
            :class:`Recommender` (Hydra: a node with ``_target_`` and ``_partial_: true``, e.g.
            ``conf/model/knn_baseline.yaml``'s class). GHRS's and their out-of-fold predictions of the
            training ratings are stacked by ``blender`` (needs ``base_folds`` > 1).
        blender: ``linear`` (least squares on [1, predictions]) or ``support`` (weights that also depend on
            log user / item rating counts: :class:`~ghrs.models.blender.LinearBlender`).
        early_stopping: with both heads, the validation metric that picks the epoch: ``rating`` (RMSE) or
            ``ranking`` (HR@10 of the validation items); with ``ranking`` the learned rating residual is
            then scaled by ``residual_scale_`` in [0, 1], fitted on the validation ratings. With one head,
            that head's metric.
            Without the rating head no GHRS
            predictor is fitted at all (only the GHRS features; the model then predicts no ratings).
        use_ghrs_features: False: no GHRS fit, no static user/item features or clusters (needs the
            rating head off). With ``use.graph_embedding=False`` and ``encoder=sasrec`` the hybrid is
            a plain sequential model (``model=sasrec``).
        train_regime: ``last_window`` (each user's last ``max_len`` items) or ``all_prefixes`` (every
            next-item target of the whole history once per epoch, sliding windows; see
            :meth:`Sequences.training`). ``trainer.batch_size`` counts sequences (windows).
        window_stride: ``all_prefixes`` window step (null: ``max_len - 1``).
        item_dropout: DropoutNet-style share of items per batch whose vector is replaced by the content
            tower's (genres, year): trains the content path to score items alone; items without
            training interactions always use it. 0: no content tower.
    """

    def __init__(
        self,
        encoder: Callable[..., nn.Module] | None = None,
        ghrs: dict | GHRSRecommender | None = None,
        dim: int = 64,
        graph_layers: int = 2,
        use_user_id: bool = False,
        heads: dict | None = None,
        n_negatives: int = 0,
        graph_fanout: int | None = None,
        max_len: int = 50,
        dropout: float = 0.1,
        streaming: bool = True,
        residual_shrinkage: float = 40.0,
        base_folds: int = 5,
        use_ghrs_features: bool = True,
        train_regime: str = "last_window",
        window_stride: int | None = None,
        item_dropout: float = 0.0,
        trainer: dict | TrainerConfig | None = None,
        seed: int = 0,
        use: dict | None = None,
        autorec: dict | None = None,
        bases: dict[str, Callable[[], Recommender]] | None = None,
        blender: str = "linear",
        early_stopping: str = "rating",
    ):
        heads = {"rating": 1.0, "ranking": 1.0, **(heads or {})}
        if min(heads.values()) < 0 or max(heads.values()) == 0:
            raise ValueError(f"hybrid heads weights must be >= 0 with at least one > 0, got {heads}")
        if dim < 4 or graph_layers < 0 or max_len < 1 or n_negatives < 0:
            raise ValueError("hybrid: dim >= 4, graph_layers >= 0, max_len >= 1, n_negatives >= 0 required")
        self.encoder_factory = encoder
        # A GHRSRecommender already fitted on the same training split is reused as it is (saves its
        # fit when sweeping encoders from Python); a dict holds the keyword arguments of a new one.
        self.ghrs_fitted = ghrs if isinstance(ghrs, GHRSRecommender) else None
        if self.ghrs_fitted is not None and base_folds != 1 and heads["rating"]:
            raise ValueError("hybrid: a pre-fitted GHRS model needs base_folds=1 (no GHRS refits)")
        self.use = resolve_use(use)
        off = [k for k in USE_GHRS if not self.use[k]]
        if self.ghrs_fitted is not None and off:
            raise UserError(f"hybrid: model.use switches {off} change how GHRS is fitted: pass GHRS settings, "
                            "not a pre-fitted GHRS model")
        ghrs_kwargs = {"seed": seed, **(ghrs if isinstance(ghrs, dict) else {})}
        ablate = ghrs_ablation_kwargs(self.use)
        if "neighbours" in ablate:
            ablate["neighbours"] = {**dict(ghrs_kwargs.get("neighbours") or {}), **ablate["neighbours"]}
        self.ghrs_kwargs = {**ghrs_kwargs, **ablate}
        graph_layers = graph_layers if self.use["graph_embedding"] else 0
        self.dim, self.graph_layers, self.use_user_id = dim, graph_layers, use_user_id
        self.heads, self.n_negatives, self.max_len, self.dropout = heads, n_negatives, max_len, dropout
        if graph_fanout is not None and (graph_fanout < 1 or (heads["ranking"] and not n_negatives)):
            raise ValueError(f"hybrid graph_fanout must be null or >= 1, and needs n_negatives > 0 with the "
                             f"ranking head (full softmax scores every item), got graph_fanout={graph_fanout}, "
                             f"n_negatives={n_negatives}")
        self.graph_fanout = graph_fanout
        self.streaming, self.seed = streaming, seed
        if residual_shrinkage < 0:
            raise ValueError(f"hybrid residual_shrinkage must be >= 0, got {residual_shrinkage}")
        self.residual_shrinkage = float(residual_shrinkage)
        if base_folds < 1:
            raise ValueError(f"hybrid base_folds must be >= 1, got {base_folds}")
        self.base_folds = int(base_folds)
        self.autorec_kwargs = None if autorec is None else {"seed": seed, **dict(autorec)}
        self.bases = dict(bases or {})
        if self.autorec_kwargs is not None:
            self.bases = {"autorec": functools.partial(AutoRecRecommender, **self.autorec_kwargs), **self.bases}
        if self.bases and self.base_folds <= 1:
            raise UserError(f"hybrid: model.autorec / model.bases ({sorted(self.bases)}) need base_folds > 1 (the "
                            "blend weights are fitted on out-of-fold predictions)")
        if blender not in BLENDERS:
            raise UserError(f"hybrid blender must be one of {sorted(BLENDERS)}, got {blender!r}")
        self.blender = blender
        if heads["rating"] and not use_ghrs_features:
            raise UserError("hybrid: the rating head refines GHRS's prediction; use_ghrs_features=false needs "
                            "heads.rating=0")
        if train_regime not in TRAIN_REGIMES:
            raise UserError(f"hybrid train_regime must be one of {TRAIN_REGIMES}, got {train_regime!r}")
        if window_stride is not None and not 1 <= window_stride <= max_len - 1:
            raise UserError(f"hybrid window_stride must be null or in [1, max_len - 1 = {max_len - 1}], "
                            f"got {window_stride}")
        if train_regime == "all_prefixes" and max_len < 2:
            raise UserError("hybrid train_regime=all_prefixes needs max_len >= 2")
        if not 0.0 <= item_dropout < 1.0:
            raise UserError(f"hybrid item_dropout must be in [0, 1), got {item_dropout}")
        if early_stopping not in EARLY_STOPPING:
            raise UserError(f"hybrid early_stopping must be one of {EARLY_STOPPING}, got {early_stopping!r}")
        self.early_stopping = early_stopping
        self.use_ghrs_features = bool(use_ghrs_features)
        self.train_regime, self.window_stride, self.item_dropout = train_regime, window_stride, float(item_dropout)
        self.predicts_ratings = bool(heads["rating"])  # ranking-only without the rating head (no GHRS predictor)
        self.trainer = TrainerConfig.from_any(trainer)
        for key in ("autoencoder", "item_autoencoder"):  # the GHRS autoencoders train where the network does
            if isinstance(self.ghrs_kwargs.get(key, {}), dict):
                self.ghrs_kwargs[key] = {"device": self.trainer.device, **(self.ghrs_kwargs.get(key) or {})}

    # -- fit ---------------------------------------------------------------------------------------

    def _make_encoder(self, n_items: int) -> nn.Module:
        if self.encoder_factory is None:
            from ssm.encoders import SequenceEncoder

            return SequenceEncoder(n_items, N_STEP_FEATURES, layer="none")
        return self.encoder_factory(n_items=n_items, n_features=N_STEP_FEATURES)

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame, valid: pd.DataFrame | None = None,
            run_dir: Path | None = None) -> Self:
        self.dataset = dataset
        dev = self.trainer.torch_device()
        torch.manual_seed(self.seed)
        n_users, n_items = dataset.n_users, dataset.n_items
        self.trained_users = np.bincount(train["user"].to_numpy(), minlength=n_users) > 0
        # A resumed run reads GHRS (and AutoRec) with the out-of-fold base predictions from the run dir (no refit).
        cache = run_dir is not None and self.ghrs_fitted is None and self.heads["rating"] and Path(run_dir) / GHRS_CACHE
        cache_key = artefacts.fingerprint(train, self.ghrs_kwargs, {k: repr(v) for k, v in self.bases.items()},
                                          self.blender, self.base_folds, self.max_len,
                                          self.train_regime, self.window_stride, self.seed, dataset.n_users,
                                          dataset.n_items) if cache else ""
        cached = artefacts.load_cache(cache, cache_key) if cache and self.trainer.resume else None
        self.bases_ = {}  # fitted extra bases (name -> Recommender) beside GHRS
        self.blender_ = None  # None: the base is GHRS's prediction alone
        self._base_counts(train)
        if cached is not None:
            log.info("hybrid: GHRS fit and base predictions read from %s (resume)", cache)
            self.ghrs = cached["ghrs"]
            self.ghrs.dataset = dataset
            self.features = self.ghrs.features
            self.bases_, self.blender_ = cached["bases"], cached["blender"]
            for model in self.bases_.values():
                model.dataset = dataset
        else:
            self._fit_ghrs(dataset, train, valid)
            if self.heads["rating"]:
                self.bases_ = {name: make().fit(dataset, train) for name, make in self.bases.items()}
        self.mu = float(train["rating"].mean())  # centres the per-step rating feature
        user_static, clusters, n_clusters, item_static = self._static_inputs()
        self.user_static, self._u_mean, self._u_std = _standardise(user_static, self.trained_users)
        item_static, _, _ = _standardise(item_static, np.arange(n_items))
        self.train_edges = train
        # Items without training interactions: scored from content alone when the content tower exists.
        self.cold_items = torch.as_tensor(np.bincount(train["item"].to_numpy(), minlength=n_items) == 0)
        content = encode_item_side(dataset.items)[0] if self.item_dropout else None
        if content is not None and content.shape[1] == 0:
            raise UserError("hybrid item_dropout > 0 needs item side features (genres, year, ...) for the content "
                            "tower; the dataset's item table has none: set model.item_dropout=0")
        self.net = HybridNet(
            self.user_static, clusters, n_clusters, item_static, self._make_encoder(n_items),
            homogeneous_edge_index(dataset, train), self.dim, self.graph_layers,
            self.use_user_id, self.dropout, content,
        )
        seqs = Sequences.training(train, n_users, self.max_len, self.mu, self.train_regime, self.window_stride)
        if self.heads["rating"]:  # the rating head refines GHRS's prediction: its base for every position
            real = seqs.items > 0
            ru, rt = real.nonzero(as_tuple=True)
            base = torch.zeros(seqs.items.shape)
            if cached is not None:
                base_values = cached["base"]
            else:
                base_values = self._base_for_training(train, seqs.users[ru].numpy(), (seqs.items[ru, rt] - 1).numpy())
                if cache and distributed.is_main():  # one writer under DDP
                    artefacts.save_cache(cache, cache_key, {"ghrs": self.ghrs, "base": base_values,
                                                            "bases": self.bases_, "blender": self.blender_},
                                         hook=artefacts.Shareable(self.ghrs.dataset, self.ghrs.trained_users))
            base[ru, rt] = torch.as_tensor(base_values)
            base = base.to(dev)
        seqs = seqs.to(dev)  # the loop moves the net and the batches of windows there
        bs = max(1, self.trainer.batch_size)  # sequences (windows) per optimiser step
        log.info("hybrid: %s regime, %d training sequences, %d next-item targets, %d steps per epoch",
                 self.train_regime, len(seqs.users),
                 int(self._target_mask(seqs, torch.arange(len(seqs.users), device=dev))[0].sum()),
                 -(-len(seqs.users) // bs))

        def batches(epoch: int):
            perm = torch.randperm(len(seqs.users))
            for s in range(0, len(perm), bs):
                yield perm[s : s + bs]

        def loss_fn(net: HybridNet, rows: torch.Tensor) -> torch.Tensor:
            mask, L = self._target_mask(seqs, rows)
            users = seqs.users[rows]
            items, feats, lengths = seqs.items[rows, :L], seqs.features[rows, :L], seqs.lengths[rows]
            states, _ = net.encoder(items, lengths, feats)
            target = (items[:, 1:] - 1)[mask]  # (N,)
            neg = torch.randint(0, n_items, (self.n_negatives,), device=dev) if self.n_negatives else None
            if self.graph_fanout and len(net.graph_layers):
                # item rows needed by the batch only: its targets and negatives
                needed, where = torch.unique(target if neg is None else torch.cat([target, neg]), return_inverse=True)
                uniq, u_where = torch.unique(users, return_inverse=True)  # a user may own several windows
                graph_u, graph_i = net.sampled_graph_embeddings(uniq, needed, self.graph_fanout)
                graph_u = graph_u[u_where]
                target, neg = where[: len(target)], (None if neg is None else where[len(target) :])
            else:
                needed = None
                graph_u, graph_i = net.graph_embeddings()
                graph_u = graph_u[users] if graph_u is not None else None
            graph_i = self._drop_items(net, graph_i, needed)
            u = net.user_repr(users, states[:, :-1], graph_u)[mask]  # state after t items predicts item t+1
            tr = seqs.ratings[rows, 1:L][mask]  # u (N, dim), target (N,) rows of graph_i, tr (N,)
            loss = u.new_zeros(())
            if self.heads["rating"]:
                # items behind each state, counted over the whole history (as at prediction), not the window
                n_seen = (torch.arange(1, L, device=dev).expand(len(rows), -1) + seqs.offset[rows, None])[mask].float()
                weight = self._residual_weight(n_seen)
                pred = base[rows, 1:L][mask] + weight * (net.rating_proj(u) * graph_i[target]).sum(-1)
                loss = loss + self.heads["rating"] * F.mse_loss(pred, tr, reduction="sum")
            if self.heads["ranking"]:
                loss = loss + self.heads["ranking"] * self._ranking_loss(u, target, graph_i, neg)
            return loss, len(target)  # sums over the N positions: the loop divides by the global N

        self.state: TrainState = train_loop(self.net, batches, loss_fn, self.trainer,
                                            self._valid_fn(train, valid), run_dir,
                                            n_batches=-(-len(seqs.users) // bs))
        self.residual_scale_ = 1.0
        if all(self.heads.values()) and self.early_stopping == "ranking" and valid is not None and len(valid):
            self.residual_scale_ = self._fit_residual_scale(train, valid)
        self.set_history(train)
        return self

    def _fit_residual_scale(self, train: pd.DataFrame, valid: pd.DataFrame) -> float:
        """The factor s in [0, 1] of the learned rating residual that minimises validation squared error
        (closed form): the epoch was picked for ranking, so its residual may hurt ratings; s = 0 falls
        back to the base prediction."""
        self._encode_history(train, streaming=False)
        users, items = np.array(valid["user"]), np.array(valid["item"])
        base = self._base_predict(users, items)
        self.residual_scale_ = 1.0
        residual = self._predict_unclipped(users, items) - base
        denom = float(residual @ residual)
        scale = float(np.clip((valid["rating"].to_numpy(np.float64) - base) @ residual / denom, 0.0, 1.0)) if denom else 0.0
        log.info("hybrid: rating residual scale %.3f (fitted on the validation ratings; early stopping on ranking)", scale)
        return scale

    def _residual_weight(self, n_seen: torch.Tensor) -> torch.Tensor:
        """n_seen (N,) interactions known before the rated item -> (N,) weight n / (n + c) of the learned
        residual; the same function of the full-history count at training and at prediction."""
        return n_seen / (n_seen + self.residual_shrinkage)

    def _base_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(n,) base rating the head refines: GHRS's prediction, or the blend of it with the other bases'."""
        ghrs = self.ghrs.predict(users, items)
        if self.blender_ is None:
            return ghrs
        preds = np.column_stack([ghrs, *[m.predict(users, items) for m in self.bases_.values()]])
        n_user, n_item = self.support_counts_
        return self.clip(self.blender_.predict(preds, n_user[users], n_item[items]))

    def _base_counts(self, history: pd.DataFrame) -> None:
        """Rating counts per user and item in the history the bases predict from (the blender's support)."""
        self.support_counts_ = (np.bincount(history["user"].to_numpy(), minlength=self.dataset.n_users),
                        np.bincount(history["item"].to_numpy(), minlength=self.dataset.n_items))

    @staticmethod
    def _target_mask(seqs: Sequences, rows: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(len(rows), L - 1) bool: window positions 1..L-1 whose item is a training target, and L."""
        L = max(2, int(seqs.lengths[rows].max()))
        pos = torch.arange(1, L, device=seqs.lengths.device)
        return (pos < seqs.lengths[rows, None]) & (pos >= seqs.loss_from[rows, None]), L

    def _fit_ghrs(self, dataset: RatingsDataset, train: pd.DataFrame, valid: pd.DataFrame | None) -> None:
        """Fit exactly the GHRS parts used: the whole model (features + rating predictor) with the rating
        head, its features alone without it, nothing when ``use_ghrs_features`` is off."""
        self.ghrs, self.features = None, None
        if self.heads["rating"]:
            self.ghrs = self.ghrs_fitted or GHRSRecommender(**self.ghrs_kwargs).fit(dataset, train, valid)
            self.features = self.ghrs.features
        elif self.use_ghrs_features:
            if self.ghrs_fitted is not None:
                self.features = self.ghrs_fitted.features
            else:
                spec = GHRSRecommender(**self.ghrs_kwargs)  # its feature settings; no fit
                self.features = GHRSFeatures(**spec.feature_kwargs, stages=spec.stages).fit(dataset, train)
                log.info("hybrid: GHRS features only (no rating head: no rating predictor), stage seconds %s",
                         {k: round(v, 2) for k, v in spec.seconds.items()})

    def _static_inputs(self) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
        """(user_static (n_users, d_u), clusters (n_users,), n_clusters, item_static (n_items, d_i)); empty
        feature widths and one cluster without GHRS features."""
        n_users, n_items = self.dataset.n_users, self.dataset.n_items
        f = self.features
        if f is None:
            return np.zeros((n_users, 0), np.float32), np.zeros(n_users, np.int64), 1, np.zeros((n_items, 0), np.float32)
        user_static = np.concatenate([f.user_features, f.user_codes], 1) if self.use["codes"] else f.user_features
        item_parts = [f.item_features, f.item_codes] if getattr(f, "item_side", False) else [np.zeros((n_items, 0))]
        return user_static, f.user_clusters, f.n_clusters_, np.concatenate(item_parts, 1)

    def _drop_items(self, net: HybridNet, graph_i: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """DropoutNet-style item tower training: the rows of ``graph_i`` ((n, dim): all items, or the items
        ``ids``) of a random ``item_dropout`` share of items, and of items without training interactions,
        become the content-only vector, so the content path learns to score items alone (cold items)."""
        if net.item_content is None:
            return graph_i
        ids = torch.arange(len(graph_i), device=graph_i.device) if ids is None else ids
        drop = self.cold_items.to(ids.device)[ids] | (torch.rand(len(ids), device=ids.device) < self.item_dropout)
        return torch.where(drop.unsqueeze(1), net.content_vectors(ids), graph_i)

    def _base_for_training(self, train: pd.DataFrame, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """GHRS base prediction of each training rating (user, item) the rating head learns to correct.

        In-sample GHRS predictions fit the training ratings far better than they predict new ones, so a
        residual learned on them learns the wrong thing. With ``base_folds`` = K > 1 every training rating
        gets its base from a GHRS model fitted on the other K-1 folds (stacking), as at test time.
        """
        if self.base_folds <= 1:
            return self._base_predict(users, items)
        key = pd.MultiIndex.from_arrays([train["user"].to_numpy(), train["item"].to_numpy()])
        y = train["rating"].to_numpy(np.float64)
        ghrs = functools.partial(GHRSRecommender, **{**self.ghrs_kwargs, "alpha_sweep": None})
        oof, n_user, n_item = out_of_fold({"ghrs": ghrs, **self.bases}, self.dataset, train, self.base_folds, self.seed)
        if self.bases:
            log.info("hybrid: out-of-fold RMSE per base %s", {name: round(float(np.sqrt(np.mean((p - y) ** 2))), 4)
                                                              for name, p in zip(["ghrs", *self.bases], oof.T)})
            # stacking: the blender learns from the bases' out-of-fold predictions
            self.blender_ = LinearBlender(**BLENDERS[self.blender]).fit(oof, n_user, n_item, y)
            log.info("hybrid: %s blender over [ghrs, %s], coefficients %s", self.blender, ", ".join(self.bases),
                     np.round(self.blender_.coef_, 4))
            oof = self.clip(self.blender_.predict(oof, n_user, n_item))
        else:
            oof = oof[:, 0]
        pos = key.get_indexer(pd.MultiIndex.from_arrays([users, items]))
        if (pos < 0).any():
            raise RuntimeError("internal: a training position without a training rating")
        log.info("hybrid: out-of-fold base (%d folds): RMSE %.4f vs in-sample %.4f", self.base_folds,
                 np.sqrt(np.mean((oof - train["rating"].to_numpy()) ** 2)),
                 np.sqrt(np.mean((self._base_predict(train["user"].to_numpy(), train["item"].to_numpy())
                                  - train["rating"].to_numpy()) ** 2)))
        return oof[pos].astype(np.float32)

    def _ranking_loss(self, u: torch.Tensor, target: torch.Tensor, items: torch.Tensor,
                      neg: torch.Tensor | None) -> torch.Tensor:
        """u (N, dim), target (N,) rows of items (n, dim), neg (K,) rows or None -> summed cross-entropy.

        ``neg`` None: full softmax over all rows of ``items``. Else sampled softmax with one set of K
        uniformly drawn negatives shared across the batch: logits (N, 1 + K) come from one matrix
        product, with no (N, K, dim) gather (whose backward dominated the epoch). A negative that is a
        row's own target is masked out of that row.
        """
        if neg is None:
            return F.cross_entropy(u @ items.T, target, reduction="sum")
        logits = torch.cat([(u * items[target]).sum(-1, keepdim=True), u @ items[neg].T], 1)
        logits[:, 1:] = logits[:, 1:].masked_fill(neg.unsqueeze(0) == target.unsqueeze(1), float("-inf"))
        return F.cross_entropy(logits, torch.zeros(len(u), dtype=torch.long, device=u.device), reduction="sum")

    def _valid_fn(self, train: pd.DataFrame, valid: pd.DataFrame | None) -> Validation | None:
        """Early-stopping metric on the validation ratings: RMSE with a rating head (unless
        ``early_stopping="ranking"``), else HR@10 of the validation items."""
        if valid is None or len(valid) == 0:
            return None
        vu, vi = np.array(valid["user"]), np.array(valid["item"])  # copies: pandas arrays are read-only
        vr = valid["rating"].to_numpy(np.float64)

        on_rating = self.heads["rating"] and (self.early_stopping == "rating" or not self.heads["ranking"])

        def metric(net: HybridNet) -> float:
            self._encode_history(train, streaming=False)
            if on_rating:
                return float(np.sqrt(np.mean((self.predict(vu, vi) - vr) ** 2)))
            return heldout_hit_rate(self.score, train, valid)

        if on_rating:
            return Validation(metric, "rmse")
        return Validation(metric, "hr@10", higher_is_better=True)

    # -- inference ---------------------------------------------------------------------------------

    @torch.no_grad()
    def _encode_history(self, history: pd.DataFrame, streaming: bool | None = None) -> None:
        """Final user representations (n_users, dim) and item vectors from ``history``.

        Only the users whose encoder input changed since the last encoding with the same weights are
        run through the encoder (folding in a new user encodes that user, not everyone)."""
        net = self.net
        net.eval()
        dev = self._device()
        n_users = self.dataset.n_users
        counts = np.bincount(history["user"].to_numpy(), minlength=n_users)
        # A streaming recurrent encoder's state summarises the whole history (observe adds one step per
        # event), so re-encoding reads the whole history too; other encoders read the last max_len.
        window = max(1, int(counts.max(initial=1))) if self._streams() else self.max_len
        seqs = Sequences.last(history, n_users, window, self.mu).to(dev)
        changed = self._changed_users(seqs)
        n_before = len(self.seqs.lengths) if changed is not None else 0
        self.seqs = seqs
        self.n_history = torch.as_tensor(counts, device=dev)
        users = torch.arange(n_users, device=dev) if changed is None else changed
        finals = torch.zeros(len(users), net.encoder.out_dim, device=dev)
        order = torch.argsort(seqs.lengths[users], descending=True)  # similar lengths share a batch
        for s in range(0, len(users), 1024):
            rows = order[s : s + 1024]
            batch = users[rows]
            L = max(1, int(seqs.lengths[batch].max()))
            _, final = net.encoder(seqs.items[batch, :L], seqs.lengths[batch], seqs.features[batch, :L])
            finals[rows] = final
        if changed is None:
            self.final_states = finals
        elif len(changed):
            self.final_states = grown(self.final_states, n_users).index_copy(0, changed, finals)
        self._encoded_token = self._weights_token()
        # Cold users' revealed ratings become graph edges too (propagation only, no training).
        cold = history[~self.trained_users[history["user"].to_numpy()]]
        edges = homogeneous_edge_index(self.dataset, pd.concat([self.train_edges, cold])) if len(cold) else None
        self.graph_users, self.item_vectors = net.graph_embeddings(None if edges is None else edges.to(dev))
        if net.item_content is not None and self.cold_items.any():  # items without training interactions
            cold = torch.nonzero(self.cold_items).squeeze(1).to(dev)
            self.item_vectors = self.item_vectors.index_put((cold,), net.content_vectors(cold))
        self._refresh_user_vectors()
        streaming = self.streaming if streaming is None else streaming
        if not (streaming and self._recurrent()):
            self.stream_state = None
        elif changed is None or getattr(self, "stream_state", None) is None:
            self.stream_state = self._stream_states()
        elif len(changed):
            # rows for users new since the last encoding, then the changed users' states put in place
            extended = map_states(lambda a, b: torch.cat([a, b]) if is_batched(a) else a, self.stream_state,
                                  net.encoder.init_state(n_users - n_before))
            self.stream_state = map_states(lambda full, sub: full.index_copy(0, changed, sub.to(full.dtype))
                                           if is_batched(full) else full, extended, self._stream_states(changed))

    def __setstate__(self, state: dict) -> None:
        # Unpickled parameters restart their version counters: the stored encodings belong to the stored
        # weights, so they stay valid for incremental encoding.
        self.__dict__.update(state)
        if "bases_" not in state:  # written before model.bases: at most an AutoRec with a plain linear blend
            autorec, blend = self.__dict__.pop("autorec", None), self.__dict__.pop("blend_", None)
            self.bases, self.blender = {}, "linear"
            self.bases_ = {} if autorec is None else {"autorec": autorec}
            self.blender_ = None
            if autorec is not None:
                self.blender_ = LinearBlender()
                self.blender_.coef_ = np.asarray(blend, np.float64)
            self._base_counts(self.history)
        if getattr(self, "_encoded_token", None) is not None:
            self._encoded_token = self._weights_token()

    def _weights_token(self) -> tuple:
        """Changes whenever a parameter is updated in place (optimiser steps, loading best weights)."""
        return tuple(p._version for p in self.net.parameters())

    def _changed_users(self, seqs: Sequences) -> torch.Tensor | None:
        """Users (sorted indices) whose encoder input differs from the last encoding, users new since then
        included; None when everyone must be encoded (no earlier encoding, or the weights changed)."""
        old = getattr(self, "seqs", None)
        if old is None or getattr(self, "final_states", None) is None \
                or getattr(self, "_encoded_token", None) != self._weights_token():
            return None
        n_old, L = len(old.lengths), max(old.items.shape[1], seqs.items.shape[1])
        pad = lambda x: F.pad(x, (0, 0) * (x.dim() - 2) + (0, L - x.shape[1]))[:n_old]
        same = (old.lengths == seqs.lengths[:n_old]) & (pad(old.items) == pad(seqs.items)).all(1) \
            & (pad(old.features) == pad(seqs.features)).flatten(1).all(1)
        return torch.cat([torch.nonzero(~same).squeeze(1), torch.arange(n_old, len(seqs.lengths), device=same.device)])

    def _device(self) -> torch.device:
        """Where the network lives: the training device, or the CPU after loading a saved run."""
        return self.net.item_id.weight.device

    def _refresh_user_vectors(self, users: torch.Tensor | None = None) -> None:
        """Recompute the final user representations: all of them, or only the rows of ``users`` (k,)."""
        if users is None:
            users = torch.arange(self.dataset.n_users, device=self._device())
            self.user_vectors = self.net.user_repr(users, self.final_states.unsqueeze(1), self.graph_users)[:, 0]
            return
        users = users.to(self._device())
        graph = None if self.graph_users is None else self.graph_users[users]
        rows = self.net.user_repr(users, self.final_states[users].unsqueeze(1), graph)[:, 0]
        self.user_vectors = self.user_vectors.index_copy(0, users, rows)  # a new tensor: readers keep the old

    def _recurrent(self) -> bool:
        return getattr(self.net.encoder, "layer", "none") in ("mamba", "mamba2", "s4d", "gru")

    def _streams(self) -> bool:
        """Whether user states are streamed (and so cover the whole history, not the last max_len)."""
        return self.streaming and self._recurrent()

    @torch.no_grad()
    def _stream_states(self, users: torch.Tensor | None = None):
        """Recurrent state of every user (or of ``users``, in that order) after its history. Users are
        stepped longest history first, so the users still inside their history at step t are a prefix of
        that order: only they step, and the cost is the total number of interactions."""
        enc, seqs = self.net.encoder, self.seqs
        users = torch.arange(self.dataset.n_users, device=seqs.lengths.device) if users is None else users
        perm = torch.argsort(seqs.lengths[users], descending=True)
        order = users[perm]
        lengths = seqs.lengths[order].cpu()
        items, feats = seqs.items[order], seqs.features[order]
        state = enc.init_state(len(users))
        for t in range(int(lengths[0]) if len(lengths) else 0):
            n = int((lengths > t).sum())
            head, _ = enc.step(select_rows(state, slice(0, n)), items[:n, t], feats[:n, t])
            write_rows(state, head, slice(0, n))
        return map_states(lambda x: x[torch.argsort(perm)] if is_batched(x) else x, state)

    def set_history(self, history: pd.DataFrame) -> None:
        self.history = history
        if self.ghrs is not None:
            self.ghrs.set_history(history)  # folds in users without training ratings (features, cluster, bias)
        elif self.features is not None:
            self.features.transform_users(history, self.dataset.users)
        for model in self.bases_.values():
            model.set_history(history)  # e.g. revealed ratings enter AutoRec's item input vectors
        self._base_counts(history)
        if (~self.trained_users[history["user"].to_numpy()]).any() or len(self.user_static) < self.dataset.n_users:
            self._refresh_static()
        self._encode_history(history)

    def _refresh_static(self) -> None:
        """Copy the (folded-in) GHRS user vectors and clusters into the network's buffers."""
        x, clusters, _, _ = self._static_inputs()
        self.user_static = ((x - self._u_mean) / self._u_std).astype(np.float32)
        self.net.user_static = torch.as_tensor(self.user_static, device=self._device())
        self.net.user_cluster = torch.as_tensor(clusters, dtype=torch.long, device=self._device())

    def side_encoder(self):
        if self.ghrs is not None:
            return self.ghrs.side_encoder()
        if self.features is None:
            return None
        ux = self.features.user_extractor
        return ux.side if ux.use_side else None

    def _grow_users(self, n_old: int, n_new: int) -> None:
        grow = n_new - n_old
        if self.ghrs is not None:
            self.ghrs.dataset = self.dataset
            self.ghrs._grow_users(n_old, n_new)
        elif self.features is not None:
            self.features.transform_users(self.history, self.dataset.users)
        for model in self.bases_.values():
            model.dataset = self.dataset
            model._grow_users(n_old, n_new)
        self._base_counts(self.history)
        self.trained_users = np.concatenate([self.trained_users, np.zeros(grow, bool)])
        net = self.net
        net.n_users = n_new
        if net.user_id is not None:
            old = net.user_id
            net.user_id = nn.Embedding(n_new, old.embedding_dim, device=old.weight.device)
            with torch.no_grad():
                net.user_id.weight.zero_()
                net.user_id.weight[:n_old] = old.weight
        # The edge index numbers items after users: shift item node ids by the number of new users.
        ei = net.edge_index.clone()
        ei[ei >= n_old] += grow
        net.edge_index = ei
        # New users have no history yet: their static vectors come from the folded-in GHRS features
        # (side info, cluster); encoding sizes every per-user tensor for them (only they are encoded).
        self._refresh_static()
        self._encode_history(self.history)

    @torch.no_grad()
    def observe(self, interactions: pd.DataFrame) -> None:
        """New interactions of known users: with a recurrent encoder and streaming on, each updates the
        stored user state with one encoder step; otherwise the history is re-encoded."""
        known = self.trained_users[interactions["user"].to_numpy()]
        if not (self.streaming and self._recurrent() and self.stream_state is not None and known.all()):
            return super().observe(interactions)
        enc, dev = self.net.encoder, self._device()
        # each user's latest timestamp so far (the time-gap feature of its next step)
        h = self.history
        last = h[h["user"].isin(interactions["user"].unique())].groupby("user")["timestamp"].max().to_dict()
        self.history = pd.concat([self.history, interactions], ignore_index=True)
        order = np.argsort(interactions["timestamp"].to_numpy(), kind="stable")
        cols = [interactions[c].to_numpy()[order] for c in ("user", "item", "rating", "timestamp")]
        for u, item, rating, ts in zip(*cols):
            u = int(u)
            state_u = select_rows(self.stream_state, slice(u, u + 1)) if self.seqs.lengths[u] > 0 else enc.init_state(1)
            gap = (ts - last[u]) / 86_400.0 if u in last else 0.0
            last[u] = ts
            feat = torch.tensor([[rating - self.mu, np.log1p(max(gap, 0.0))]], dtype=torch.float32, device=dev)
            new_state, y = enc.step(state_u, torch.tensor([int(item) + 1], device=dev), feat)
            write_rows(self.stream_state, new_state, slice(u, u + 1))  # in place: O(1) per event, whatever the users
            self.final_states[u] = y[0]
            self.seqs.lengths[u] += 1
            self.n_history[u] += 1
        self._refresh_user_vectors(torch.as_tensor(np.unique(cols[0]), dtype=torch.long, device=dev))

    def _user_vectors(self, users: np.ndarray) -> torch.Tensor:
        return self.user_vectors[torch.as_tensor(np.array(users, dtype=np.int64), device=self._device())]  # a copy: see predict

    @torch.no_grad()
    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self.ghrs is None:
            raise NotImplementedError("this hybrid was trained without the rating head (model.heads.rating=0): it "
                                      "ranks items but predicts no ratings")
        return self.clip(self._predict_unclipped(users, items))

    @torch.no_grad()
    def _predict_unclipped(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(n,) base + residual_scale_ * weight * learned residual, before clipping to the rating scale."""
        # np.array copies: pandas hands out read-only views, which torch.as_tensor cannot wrap safely
        users, items = np.array(users, dtype=np.int64), np.array(items, dtype=np.int64)
        dev = self._device()
        u = torch.as_tensor(users, device=dev)
        i = torch.as_tensor(items, device=dev)
        base = torch.as_tensor(self._base_predict(users, items), dtype=torch.float32, device=dev)
        if self.heads["rating"]:
            weight = getattr(self, "residual_scale_", 1.0) * self._residual_weight(self.n_history[u].float())
            base = base + weight * (self.net.rating_proj(self._user_vectors(users)) * self.item_vectors[i]).sum(-1)
        return base.cpu().numpy()

    @torch.no_grad()
    def score(self, users: np.ndarray) -> np.ndarray:
        if self.heads["ranking"]:
            return self.score_tensor(users).cpu().numpy()
        return super().score(users)

    @torch.no_grad()
    def score_tensor(self, users: np.ndarray) -> torch.Tensor:
        if self.heads["ranking"]:
            return self._user_vectors(np.asarray(users, dtype=np.int64)) @ self.item_vectors.T
        return super().score_tensor(users)

    def save_artifacts(self, run_dir: Path) -> None:
        """Training curves (loss and validation metric per epoch) as PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        hist = self.state.history
        if not hist:
            return
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([h["epoch"] for h in hist], [h["train_loss"] for h in hist], label="train loss")
        valid_key = next((k for k in hist[0] if k.startswith("valid")), None)
        if valid_key is not None:
            ax2 = ax.twinx()
            ax2.plot([h["epoch"] for h in hist], [h[valid_key] for h in hist], color="C1", label=valid_key)
            ax2.set_ylabel(valid_key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title("hybrid training")
        save_figure(fig, Path(run_dir) / "training_curves.png")
