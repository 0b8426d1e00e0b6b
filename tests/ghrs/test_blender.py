"""The stacking blender: recovers planted weights, and count-dependent weights when asked to."""

import numpy as np
import pytest

from ghrs.errors import UserError
from ghrs.models.blender import LinearBlender


def _bases(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(3.5, 1.0, n)
    n_user = rng.integers(1, 500, n).astype(float)
    n_item = rng.integers(1, 500, n).astype(float)
    # base 1 is good for heavy users, base 2 for light users
    heavy = np.log1p(n_user) / np.log1p(500)
    p1 = y + rng.normal(0, 1, n) * (1.2 - heavy)
    p2 = y + rng.normal(0, 1, n) * (0.2 + heavy)
    return np.column_stack([p1, p2]), n_user, n_item, y


def test_linear_blender_recovers_planted_weights():
    rng = np.random.default_rng(1)
    p = rng.normal(3.5, 1.0, (3000, 2))
    y = 0.2 + 0.3 * p[:, 0] + 0.6 * p[:, 1] + rng.normal(0, 0.05, 3000)
    b = LinearBlender().fit(p, np.ones(3000), np.ones(3000), y)
    np.testing.assert_allclose(b.coef_, [0.2, 0.3, 0.6], atol=0.02)


def test_support_blender_weighs_bases_by_user_history_length():
    preds, n_user, n_item, y = _bases()
    test = _bases(seed=1)
    err = {}
    for support in (False, True):
        b = LinearBlender(support=support).fit(preds, n_user, n_item, y)
        err[support] = np.sqrt(np.mean((b.predict(*test[:3]) - test[3]) ** 2))
    assert err[True] < err[False] - 0.02
    with pytest.raises(UserError, match="ridge"):
        LinearBlender(ridge=-1)
