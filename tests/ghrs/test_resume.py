"""Safe resume: the checkpoint's config is checked, a changed lr is applied, GHRS is not refitted."""

import functools
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from ghrs import training
from ghrs.data.splits import RandomSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.models import hybrid as hybrid_module
from ghrs.models.ghrs import GHRSRecommender
from ghrs.models.hybrid import GHRS_CACHE, HybridRecommender
from ghrs.pipeline import run_training
from ghrs.training import CHECKPOINT, TrainerConfig
from ssm.encoders import SequenceEncoder

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def config(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=["dataset=synthetic", "trainer.progress=false", "split=random",
                                           "model=mf", "model.dim=4", *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    run_training(config("trainer.max_epochs=2"), run)
    return run


@pytest.mark.parametrize("change, named", [
    ("model.dim=8", r"model\.dim \(4 -> 8\)"),
    ("seed=3", r"seed \(0 -> 3\)"),
    ("trainer.batch_size=64", r"trainer\.batch_size \(1024 -> 64\)"),
])
def test_resume_with_a_config_that_shapes_the_model_is_refused(trained, change, named):
    before = (trained / CHECKPOINT).read_bytes()
    with pytest.raises(UserError, match=f"cannot resume .*{CHECKPOINT}.*{named}") as err:
        run_training(config("trainer.max_epochs=3", "trainer.resume=true", change), trained)
    assert "\n" not in str(err.value) and "trainer.max_epochs" in str(err.value)  # lists the safe keys
    assert (trained / CHECKPOINT).read_bytes() == before  # nothing trained, nothing overwritten


def test_resume_applies_a_changed_lr_and_more_epochs(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert torch.load(run / CHECKPOINT, weights_only=True)["optimizer"]["param_groups"][0]["lr"] == 0.001
    run_training(config("trainer.max_epochs=3", "trainer.resume=true", "trainer.lr=0.02", "eval.ks=[5]"), run)
    ck = torch.load(run / CHECKPOINT, weights_only=True)
    assert ck["state"]["epoch"] == 3 and [h["epoch"] for h in ck["state"]["history"]] == [1, 2, 3]
    assert ck["optimizer"]["param_groups"][0]["lr"] == 0.02  # trained with the lr config.yaml shows
    assert ck["meta"]["config"]["trainer"]["lr"] == 0.02


def _hybrid(run_dir, max_epochs, resume=False, **kw):
    ds = make_synthetic(n_users=60, n_items=40, ratings_per_user=12, seed=5)
    s = RandomSplit(0.15, seed=0, valid_ratio=0.1)(ds)
    enc = partial(SequenceEncoder, layer="gru", d_model=8, n_layers=1, dropout=0.0)
    trainer = TrainerConfig(max_epochs=max_epochs, batch_size=16, lr=0.01, patience=0, resume=resume,
                            progress=False)
    ghrs = {"alpha": 0.02, "n_clusters": 3, "autoencoder": {"epochs": 5}, "item_autoencoder": {"epochs": 5}}
    model = HybridRecommender(encoder=enc, ghrs=ghrs, dim=8, dropout=0.1, trainer=trainer, base_folds=2, **kw)
    return model.fit(ds, s.train, s.valid, run_dir=run_dir)


class Interrupt(Exception):
    pass


def test_hybrid_resume_reads_ghrs_from_the_run_dir_and_ends_identical(tmp_path, monkeypatch):
    full = _hybrid(tmp_path / "full", max_epochs=2)
    assert (tmp_path / "full" / GHRS_CACHE).exists()

    def crash(state):
        if state.epoch == 1:
            raise Interrupt

    with monkeypatch.context() as m:
        m.setattr(hybrid_module, "train_loop", functools.partial(training.train_loop, on_epoch_end=crash))
        with pytest.raises(Interrupt):
            _hybrid(tmp_path / "cut", max_epochs=2)
    fits = []
    original_fit = GHRSRecommender.fit
    monkeypatch.setattr(GHRSRecommender, "fit", lambda self, *a, **k: fits.append(1) or original_fit(self, *a, **k))
    resumed = _hybrid(tmp_path / "cut", max_epochs=2, resume=True)
    assert fits == []  # neither the GHRS model nor the out-of-fold base models were refitted
    assert [h["epoch"] for h in resumed.state.history] == [1, 2]
    users = np.arange(resumed.dataset.n_users)
    np.testing.assert_array_equal(full.score(users), resumed.score(users))
    np.testing.assert_array_equal(full.predict(users, users % 40), resumed.predict(users, users % 40))
    # a cache written for other settings is not used: the fit runs again
    (tmp_path / "cut" / CHECKPOINT).unlink()
    _hybrid(tmp_path / "cut", max_epochs=1, resume=True, max_len=5)
    assert len(fits) == 3  # the GHRS model and its two out-of-fold models


def test_a_checkpoint_payload_never_runs_on_resume(tmp_path):
    from tests.ghrs.test_artefacts import Payload

    marker = tmp_path / "MARKER"
    torch.save({"model": {}, "optimizer": {}, "state": {}, "rng": Payload(marker), "meta": {}}, tmp_path / CHECKPOINT)
    with pytest.raises(UserError, match=f"{CHECKPOINT} holds objects other than tensors"):
        run_training(config("trainer.max_epochs=1", "trainer.resume=true"), tmp_path)
    assert not marker.exists()
