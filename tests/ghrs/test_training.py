import functools

import pytest
import torch

from ghrs import training
from ghrs.data.splits import RandomSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.errors import UserError
from ghrs.models import mf
from ghrs.models.mf import MFRecommender
from ghrs.training import CHECKPOINT, TrainerConfig


class Interrupt(Exception):
    pass


def fit_mf(tmp_path, max_epochs, resume=False, seed=0):
    ds = make_synthetic(n_users=80, n_items=50, ratings_per_user=20, seed=seed)
    s = RandomSplit(0.1, valid_ratio=0.1, seed=0)(ds)
    cfg = TrainerConfig(max_epochs=max_epochs, batch_size=128, lr=0.01, patience=0, resume=resume, progress=False)
    return MFRecommender(dim=8, trainer=cfg, seed=seed).fit(ds, s.train, s.valid, run_dir=tmp_path)


def crash_after(epoch: int, monkeypatch):
    """Make the training loop raise right after ``epoch``'s checkpoint (a simulated kill)."""

    def hook(state):
        if state.epoch == epoch:
            raise Interrupt

    monkeypatch.setattr(mf, "train_loop", functools.partial(training.train_loop, on_epoch_end=hook))


def test_resume_after_interrupt_continues_from_last_finished_epoch(tmp_path, monkeypatch):
    full = fit_mf(tmp_path / "full", max_epochs=5)
    with monkeypatch.context() as m:
        crash_after(3, m)
        with pytest.raises(Interrupt):
            fit_mf(tmp_path / "cut", max_epochs=5)
    ck = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)
    assert ck["state"]["epoch"] == 3
    resumed = fit_mf(tmp_path / "cut", max_epochs=5, resume=True)
    epochs = [h["epoch"] for h in resumed.state.history]
    assert epochs == [1, 2, 3, 4, 5]  # history kept, epochs 4-5 run after the resume, none repeated
    # same RNG, optimiser and weights restored: identical to the uninterrupted run
    for a, b in zip(full.state.history, resumed.state.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    for (k, a), b in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_bad_trainer_values():
    with pytest.raises(ValueError, match="trainer"):
        TrainerConfig(max_epochs=0)
    with pytest.raises(UserError, match="trainer.device"):
        TrainerConfig(device="tpu")
