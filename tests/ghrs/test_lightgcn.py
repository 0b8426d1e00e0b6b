"""LightGCN baseline: the adjacency normalised once propagates exactly like PyG's per-call normalisation, and
with a validation part training stops early on validation HR@10 and keeps the best epoch."""

import numpy as np
import pytest
import torch
from torch_geometric.nn.models import LightGCN

from ghrs.data.splits import TemporalLOOSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.evaluation import evaluate
from ghrs.graph.bipartite import homogeneous_edge_index, normalised_adjacency
from ghrs.models.lightgcn import LightGCNRecommender
from ghrs.models.pop import PopRecommender
from ghrs.training import TrainerConfig


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_users=150, n_items=120, ratings_per_user=25, sequential=0.0, seed=3)
    return ds, TemporalLOOSplit()(ds)


def test_normalised_adjacency_equals_pygs_per_call_normalisation(data):
    ds, split = data
    ei = homogeneous_edge_index(ds, split.train)
    n = ds.n_users + ds.n_items
    torch.manual_seed(0)
    per_call = LightGCN(n, 8, 3)  # normalize=True: gcn_norm on every forward
    once = LightGCN(n, 8, 3, normalize=False)
    once.load_state_dict(per_call.state_dict())
    torch.testing.assert_close(once.get_embedding(normalised_adjacency(ei, n)), per_call.get_embedding(ei),
                               rtol=1e-5, atol=1e-6)


def test_early_stopping_keeps_the_best_validation_epoch(data):
    ds, split = data
    trainer = TrainerConfig(max_epochs=12, batch_size=256, lr=0.01, patience=2, progress=False)
    model = LightGCNRecommender(dim=16, n_layers=2, trainer=trainer, seed=0).fit(ds, split.train, split.valid)
    hist = [h["valid_hr@10"] for h in model.state.history]
    assert len(hist) == model.state.epoch >= 1
    assert model.state.best_epoch == int(np.argmax(hist)) + 1
    # the kept embeddings are the best epoch's: the pipeline's evaluation of validation gives its logged value
    assert evaluate(model, ds, split, "valid", rating_metrics=False, progress=False)["hr@10"] == pytest.approx(
        max(hist), abs=1e-6)
    # it learned the planted structure: better than most-popular on the test items
    pop = PopRecommender().fit(ds, split.train)
    hr = {name: evaluate(m, ds, split, "test", rating_metrics=False, progress=False)["hr@10"]
          for name, m in (("lightgcn", model), ("pop", pop))}
    assert hr["lightgcn"] > hr["pop"]


def test_without_validation_it_runs_every_epoch(data):
    ds, split = data
    trainer = TrainerConfig(max_epochs=3, batch_size=256, lr=0.01, patience=1, progress=False)
    model = LightGCNRecommender(dim=8, n_layers=1, trainer=trainer).fit(ds, split.train)
    assert model.state.epoch == 3
