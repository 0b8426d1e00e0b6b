from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ssm import SequenceEncoder
from ssm.encoders import LAYERS

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "encoder"
N_ITEMS, N_FEATURES, LENGTH = 30, 2, 9
# small layer options keep every test fast on CPU
SMALL = {
    "mamba": {"d_state": 4, "expand": 2},
    "mamba2": {"d_state": 4, "headdim": 8, "chunk_size": 4},
    "s4d": {"d_state": 8},
    "sasrec": {"n_heads": 2, "d_ff": 32},
    "gru": {},
    "none": {},
}


def make_encoder(layer, seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = {"n_features": N_FEATURES, "layer": layer, "d_model": 16, "n_layers": 2, "max_len": 12}
    return SequenceEncoder(N_ITEMS, **{**kwargs, **SMALL[layer], **overrides}).eval()


def right_padded_batch(lengths=(9, 5, 1, 0), seed=1):
    """Items and features with random junk at padded positions (the encoder must ignore it)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    items = torch.randint(1, N_ITEMS + 1, (len(lengths), LENGTH), generator=g)
    real = torch.arange(LENGTH) < lengths[:, None]
    items = torch.where(real, items, 0)
    features = torch.randn(len(lengths), LENGTH, N_FEATURES, generator=g)
    return items, lengths, features


def to_left(x, lengths):
    """Right-padded (batch, length, ...) -> left-padded."""
    index = (torch.arange(x.size(1)) - (x.size(1) - lengths)[:, None]) % x.size(1)
    return x.gather(1, index.view(*index.shape, *[1] * (x.dim() - 2)).expand_as(x))


@pytest.mark.parametrize("layer", LAYERS)
def test_shapes_and_embedding(layer):
    enc = make_encoder(layer)
    items, lengths, features = right_padded_batch()
    states, final = enc(items, lengths, features)
    d = 0 if layer == "none" else 16
    assert enc.out_dim == d
    assert states.shape == (4, LENGTH, d) and final.shape == (4, d)
    assert enc.item_embedding.weight.shape == (N_ITEMS + 1, d) and enc.item_embedding.padding_idx == 0
    assert torch.isfinite(states).all()
    if d:
        real = torch.arange(LENGTH) < lengths[:, None]
        assert (states[~real] == 0).all() and (final[3] == 0).all()  # padding and the empty row
        torch.testing.assert_close(final[:3], states[torch.arange(3), lengths[:3] - 1])


@pytest.mark.parametrize("layer", LAYERS)
def test_causal(layer):
    enc = make_encoder(layer)
    items, lengths, features = right_padded_batch(lengths=(LENGTH,) * 3)
    states, _ = enc(items, lengths, features)
    for t in (0, 4, LENGTH - 1):
        items2, features2 = items.clone(), features.clone()
        items2[:, t] = items2[:, t] % N_ITEMS + 1
        features2[:, t] += 1.0
        states2, _ = enc(items2, lengths, features2)
        # exact for every layer but s4d, whose FFT spreads float rounding error over all positions
        torch.testing.assert_close(states2[:, :t], states[:, :t], atol=1e-5, rtol=0)
        if layer != "none":
            assert (states2[:, t] - states[:, t]).abs().max() > 1e-3


@pytest.mark.parametrize("layer", LAYERS)
def test_left_right_and_unpadded_agree(layer):
    enc = make_encoder(layer)
    items, lengths, features = right_padded_batch()
    states_r, final_r = enc(items, lengths, features, padding="right")
    states_l, final_l = enc(to_left(items, lengths), lengths, to_left(features, lengths), padding="left")
    torch.testing.assert_close(final_l, final_r, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(states_l, to_left(states_r, lengths), atol=1e-6, rtol=1e-5)
    for b, n in enumerate(lengths.tolist()):
        if n:
            states, final = enc(items[b : b + 1, :n], lengths[b : b + 1], features[b : b + 1, :n])
            torch.testing.assert_close(states[0], states_r[b, :n], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(final[0], final_r[b], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layer", LAYERS)
def test_step_equals_full_pass(layer):
    enc = make_encoder(layer)
    items, lengths, features = right_padded_batch()
    states, final = enc(items, lengths, features)
    state, ys = enc.init_state(4), []
    for t in range(LENGTH):
        state, y_t = enc.step(state, items[:, t], features[:, t])
        ys.append(y_t)
    ys = torch.stack(ys, 1)
    real = torch.arange(LENGTH) < lengths[:, None]
    torch.testing.assert_close(ys[real], states[real], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ys[torch.arange(3), lengths[:3] - 1], final[:3], atol=1e-5, rtol=1e-4)


def _tensors(state):
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, (tuple, list)):
        return [t for part in state for t in _tensors(part)]
    return []


@pytest.mark.parametrize("layer", LAYERS)
def test_stream_state_is_batch_first(layer):
    # callers (the hybrid model) select and merge users' rows along dimension 0 of every state tensor
    enc = make_encoder(layer)
    state = enc.init_state(5)
    state, _ = enc.step(state, torch.arange(1, 6), torch.zeros(5, N_FEATURES))
    assert all(t.shape[0] == 5 for t in _tensors(state.layers))
    assert layer == "none" or _tensors(state.layers)


@pytest.mark.parametrize("layer", [name for name in LAYERS if name != "none"])
def test_gradients_reach_every_parameter(layer):
    enc = make_encoder(layer).train()
    items, lengths, features = right_padded_batch()
    states, final = enc(items, lengths, features)
    real = torch.arange(LENGTH - 1) < (lengths[:, None] - 1)  # positions that have a next item
    logits = states[:, :-1][real] @ enc.item_embedding.weight.T
    loss = torch.nn.functional.cross_entropy(logits, items[:, 1:][real]) + final.pow(2).mean()
    loss.backward()
    grads = {name: p.grad for name, p in enc.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), grads.keys()
    zero = [name for name, g in grads.items() if not g.abs().sum() > 0]
    assert not zero, f"parameters with an all-zero gradient: {zero}"


def test_none_has_no_trainable_elements():
    enc = make_encoder("none")
    assert sum(p.numel() for p in enc.parameters()) == 0


def test_sasrec_step_stops_at_max_len():
    enc = make_encoder("sasrec", max_len=2)
    state = enc.init_state(1)
    for _ in range(2):
        state, _ = enc.step(state, torch.tensor([1]), torch.zeros(1, N_FEATURES))
    with pytest.raises(ValueError, match="max_len"):
        enc.step(state, torch.tensor([1]), torch.zeros(1, N_FEATURES))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"layer": "lstm"},
        {"layer": "gru", "d_state": 4},
        {"layer": "mamba", "n_heads": 2},
        {"layer": "mamba", "scan_backend": "cuda"},
        {"layer": "mamba", "norm": "batch"},
        {"layer": "sasrec", "n_heads": 3},
        {"layer": "s4d", "d_state": 5},
        {"layer": "mamba", "d_model": 0},
        {"layer": "gru", "n_layers": 0},
        {"layer": "gru", "dropout": 1.0},
        {"layer": "gru", "n_items": 0},
    ],
)
def test_bad_constructor_values_raise(kwargs):
    kwargs = {"n_items": N_ITEMS, **kwargs}
    with pytest.raises(ValueError):
        SequenceEncoder(**kwargs)


def test_bad_inputs_raise():
    enc = make_encoder("sasrec")
    items, lengths, features = right_padded_batch()
    with pytest.raises(ValueError, match="padding"):
        enc(items, lengths, features, padding="middle")
    with pytest.raises(ValueError, match="features"):
        enc(items, lengths)
    with pytest.raises(ValueError, match="lengths"):
        enc(items, lengths + LENGTH, features)
    long_items = torch.ones(1, 13, dtype=torch.long)
    with pytest.raises(ValueError, match="max_len"):
        enc(long_items, torch.tensor([13]), torch.zeros(1, 13, N_FEATURES))
    with pytest.raises(ValueError, match="features"):
        SequenceEncoder(N_ITEMS, layer="gru")(items, lengths, features)


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_config_instantiates_a_working_encoder(path):
    cfg = OmegaConf.load(path)
    assert cfg.layer == path.stem
    build = instantiate(cfg)
    enc = build(n_items=20, n_features=1).eval()
    assert isinstance(enc, SequenceEncoder) and enc.layer == path.stem
    items = torch.tensor([[3, 5, 7, 0], [2, 0, 0, 0]])
    states, final = enc(items, torch.tensor([3, 1]), torch.randn(2, 4, 1))
    assert states.shape == (2, 4, enc.out_dim) and final.shape == (2, enc.out_dim)
    assert torch.isfinite(states).all()


def test_every_layer_has_a_config():
    assert {p.stem for p in CONF_DIR.glob("*.yaml")} == set(LAYERS)
