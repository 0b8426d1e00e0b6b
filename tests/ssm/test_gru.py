import torch

from ssm.gru import GRUStack


def test_step_equals_forward():
    torch.manual_seed(0)
    gru = GRUStack(8, n_layers=2, dropout=0.3).eval()
    x = torch.randn(3, 7, 8)
    state, ys = gru.init_state(3), []
    for t in range(7):
        state, y_t = gru.step(state, x[:, t])
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), gru(x), atol=1e-6, rtol=1e-5)
    assert state.shape == (3, 2, 8)  # batch first


def test_single_layer_has_no_dropout():
    assert GRUStack(4, n_layers=1, dropout=0.5).gru.dropout == 0.0
