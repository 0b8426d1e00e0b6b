import numpy as np
import pytest
import torch

from ghrs.autoencoder import AutoEncoder, AutoEncoderConfig, limited_threads, train_autoencoder


def data(n=200, d=20, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    return (latent @ rng.normal(size=(3, d)) + 0.05 * rng.normal(size=(n, d))).astype(np.float32)


def test_reconstruction_loss_decreases():
    x = data()
    ae = train_autoencoder(x, {"hidden": [16], "code_dim": 4, "epochs": 60, "lr": 5e-3}, seed=0)
    assert len(ae.losses) == 60
    assert ae.losses[-1] < 0.2 * ae.losses[0]
    assert ae.reconstruction_error(x) < 0.2 * float((x**2).mean())
    codes = ae.encode(x)
    assert codes.shape == (200, 4) and codes.dtype == np.float32 and np.isfinite(codes).all()


def test_deterministic_for_a_seed_and_leaves_global_rng_alone():
    x = data()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = train_autoencoder(x, {"epochs": 5}, seed=7)
    after = torch.rand(1)
    b = train_autoencoder(x, {"epochs": 5}, seed=7)
    c = train_autoencoder(x, {"epochs": 5}, seed=8)
    assert torch.equal(before, after)  # the global RNG stream is untouched
    np.testing.assert_array_equal(a.encode(x), b.encode(x))
    assert a.losses == b.losses
    assert not np.array_equal(a.encode(x), c.encode(x))


def test_architecture_and_config_validation():
    net = AutoEncoder(10, hidden=(8, 6), code_dim=3, activation="tanh")
    assert net.encoder(torch.zeros(2, 10)).shape == (2, 3) and net(torch.zeros(2, 10)).shape == (2, 10)
    assert AutoEncoder(10, hidden=(), code_dim=3)(torch.zeros(1, 10)).shape == (1, 10)
    with pytest.raises(ValueError, match="activation"):
        AutoEncoder(4, activation="swish")
    with pytest.raises(ValueError, match="unknown autoencoder option"):
        AutoEncoderConfig.from_any({"layers": 2})
    with pytest.raises(ValueError, match="non-empty"):
        train_autoencoder(np.zeros((0, 3)))


def test_limited_threads_restores():
    n = torch.get_num_threads()
    with limited_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n
