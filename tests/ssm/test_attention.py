import pytest
import torch

from ssm.attention import CausalSelfAttention, FeedForward


def test_step_with_cache_equals_forward():
    torch.manual_seed(0)
    attn = CausalSelfAttention(8, n_heads=2).eval()
    x = torch.randn(3, 6, 8)
    state, ys = attn.init_state(3), []
    for t in range(6):
        state, y_t = attn.step(state, x[:, t])
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), attn(x), atol=1e-5, rtol=1e-4)
    assert state[0].shape == (3, 2, 6, 4)


def test_key_padding_mask():
    torch.manual_seed(0)
    attn = CausalSelfAttention(8, n_heads=2).eval()
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, True, True, True], [False, False, True, True, True]])
    y = attn(x, mask)
    # row 1: padded keys 0-1 are ignored, so real positions match the unpadded sequence
    torch.testing.assert_close(y[1, 2:], attn(x[1:, 2:])[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y[0], attn(x[:1])[0], atol=1e-5, rtol=1e-4)
    assert torch.isfinite(attn(x, torch.zeros(2, 5, dtype=torch.bool))).all()  # fully padded rows


def test_causal():
    attn = CausalSelfAttention(8, n_heads=4).eval()
    x = torch.randn(1, 6, 8)
    x2 = x.clone()
    x2[:, 3] += 1.0
    torch.testing.assert_close(attn(x)[:, :3], attn(x2)[:, :3])


def test_bad_values_raise():
    with pytest.raises(ValueError):
        CausalSelfAttention(10, n_heads=3)
    with pytest.raises(ValueError):
        FeedForward(8, d_ff=0)
