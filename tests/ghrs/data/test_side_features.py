import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghrs.data.side_features import SideTableEncoder
from ghrs.errors import UserError

TRAIN = pd.DataFrame({
    "id": [1, 2, 3, 4, 5],
    "income": [10.0, 20.0, np.nan, 40.0, 50.0],
    "city": ["a", "b", "a", None, "c"],
    "tags": ["rock|pop", "pop", "", "jazz", "rock"],
    "title": list("vwxyz"),
})


def test_names_and_shapes():
    enc = SideTableEncoder().fit(TRAIN)
    assert enc.names_ == ["income", "city=a", "city=b", "city=c", "tags=jazz", "tags=pop", "tags=rock"]
    x = enc.transform(TRAIN)
    assert x.shape == (5, 7) and x.dtype == np.float32
    assert abs(x[:, 0].mean()) < 1e-6  # standardised on the training rows (missing -> the mean)
    assert x[3, 1:4].sum() == 0 and x[0, 4:].tolist() == [0, 1, 1]


@pytest.mark.parametrize("numeric", ["standard", "minmax"])
def test_a_row_encodes_alone_as_in_the_training_table(numeric):
    enc = SideTableEncoder(numeric=numeric).fit(TRAIN)
    full = enc.transform(TRAIN)
    for k in range(len(TRAIN)):  # one folded-in user at a time: no re-standardising on the batch
        np.testing.assert_array_equal(enc.transform(TRAIN.iloc[[k]]), full[[k]])
    assert np.abs(full[:, 0]).max() > 0.5  # a lone numeric value does not collapse to 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=20), st.data())
def test_fitted_once_property(values, data):
    train = pd.DataFrame({"x": values})
    enc = SideTableEncoder().fit(train)
    rows = data.draw(st.lists(st.integers(0, len(values) - 1), min_size=1, max_size=5))
    np.testing.assert_allclose(enc.transform(train.iloc[rows]), enc.transform(train)[rows], rtol=0, atol=0)


def test_unseen_values_are_an_error_naming_column_value_and_known_values():
    enc = SideTableEncoder().fit(TRAIN)
    new = pd.DataFrame({"income": [1000.0], "city": ["zz"], "tags": ["pop|polka"]})
    with pytest.raises(UserError) as err:
        enc.check(new)
    msg = str(err.value)
    assert "city='zz' was not seen in training (known: a, b, c)" in msg
    assert "tags='polka' was not seen" in msg and "income=1000 is outside the training range [10, 50]" in msg
    assert "side_unknown=ignore" in msg and "\n" not in msg
    with pytest.raises(UserError, match="income='lots' is not a number"):
        enc.check(pd.DataFrame({"income": ["lots"]}))
    enc.check(TRAIN.iloc[:2])  # known values pass


def test_ignore_policy_logs_and_encodes_unseen_as_zero_and_clips(caplog):
    enc = SideTableEncoder().fit(TRAIN)
    new = pd.DataFrame({"income": [1000.0], "city": ["zz"], "tags": ["pop|polka"]})
    with caplog.at_level(logging.WARNING, logger="ghrs.data.side_features"):
        enc.check(new, "ignore")
    assert "side_unknown=ignore" in caplog.text and "city='zz'" in caplog.text
    x = enc.transform(new)[0]
    top = enc.transform(TRAIN.iloc[[4]])[0, 0]  # income 50, the training maximum
    assert x[0] == top and x[1:4].sum() == 0 and x[4:].tolist() == [0, 1, 0]
    with pytest.raises(UserError, match="side_unknown must be one of"):
        enc.check(new, "skip")
