"""Fuzzy memberships on hand-computed points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from libs.pipeline.fuzzy import FuzzyError, Memberships, compute_memberships, membership
from libs.pipeline.kernels import MEMBERSHIP_BLOCK_ROWS
from libs.pipeline.strategy import FuzzySetConfig, MembershipConfig

X = np.array([-1.0, 0.0, 1.0, 2.0, 2.5, 3.0, 4.0, np.nan])


def m(type_: str, *params: float) -> MembershipConfig:
    return MembershipConfig(type=type_, parameters=tuple(float(p) for p in params))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        # 0 at/below a and at/above c, 1 at b, linear in between; no shoulders
        (m("triangular", 0, 2, 3), [0, 0, 0.5, 1, 0.5, 0, 0, np.nan]),
        # vertical left edge: a step up to 1 at b
        (m("triangular", 0, 0, 3), [0, 1, 2 / 3, 1 / 3, 1 / 6, 0, 0, np.nan]),
        # vertical right edge: 1 at b, 0 beyond
        (m("triangular", 0, 3, 3), [0, 0, 1 / 3, 2 / 3, 5 / 6, 1, 0, np.nan]),
        (m("trapezoidal", 0, 1, 2, 4), [0, 0, 1, 1, 0.75, 0.5, 0, np.nan]),
        (m("trapezoidal", 0, 0, 2, 4), [0, 1, 1, 1, 0.75, 0.5, 0, np.nan]),
        (m("trapezoidal", 0, 1, 3, 3), [0, 0, 1, 1, 1, 1, 0, np.nan]),
        (m("trapezoidal", 0, 0, 2, 2), [0, 1, 1, 1, 0, 0, 0, np.nan]),
        (
            m("gaussian", 1, 1),
            [
                np.exp(-2),
                np.exp(-0.5),
                1,
                np.exp(-0.5),
                np.exp(-1.125),
                np.exp(-2),
                np.exp(-4.5),
                np.nan,
            ],
        ),
    ],
)
def test_membership_values(cfg: MembershipConfig, expected: list[float]) -> None:
    result = membership(X, cfg)
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)
    assert result.dtype == np.float64
    single = membership(X.astype(np.float32), cfg)
    assert single.dtype == np.float32  # float32 in, float32 out (the feature matrix dtype)
    np.testing.assert_allclose(single, expected, rtol=1e-6, atol=1e-6)


def test_integers_and_shapes() -> None:
    result = membership(np.array([[0, 1], [2, 3]]), m("triangular", 0, 2, 3))
    assert result.dtype == np.float64 and result.shape == (2, 2)
    np.testing.assert_allclose(result, [[0.0, 0.5], [1.0, 0.0]])
    assert membership(np.array([]), m("gaussian", 0, 1)).shape == (0,)


def test_the_matrix_pass_equals_one_set_at_a_time() -> None:
    """compute_memberships (blocked, several inputs, gaussians exp'd afterwards, bar flags)
    gives each column exactly as `membership` does, across block boundaries."""
    rng = np.random.default_rng(3)
    block = MEMBERSHIP_BLOCK_ROWS
    n = 2 * block + 1000  # several blocks and a ragged last one
    a, b = rng.normal(50, 30, n), rng.normal(0, 1, n)
    a[[0, 1, 2, 1500, block - 1]] = np.nan
    b[[3, block, 2 * block + 1]] = np.nan
    frame = pd.DataFrame({"a": a, "b": b})
    cfgs = {
        "x": ("a", {"lo": m("triangular", 0, 0, 50), "mid": m("trapezoidal", 20, 40, 60, 80)}),
        "y": ("b", {"g": m("gaussian", 0.5, 0.7), "hi": m("triangular", 0, 1, 1)}),
        "z": ("a", {"top": m("gaussian", 90, 5)}),
    }
    sets = {k: FuzzySetConfig(indicator=i, memberships=ms) for k, (i, ms) in cfgs.items()}
    out = compute_memberships(frame, sets)
    for fs_id, (indicator, ms) in cfgs.items():
        for name, cfg in ms.items():
            expected = membership(frame[indicator].to_numpy(), cfg)  # float64: the reference
            np.testing.assert_allclose(out[f"{fs_id}_{name}"], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out.bar_defined, ~(np.isnan(a) | np.isnan(b)))


def test_memberships_stay_in_unit_interval() -> None:
    values = np.random.default_rng(0).normal(50, 30, 10_000)
    for cfg in (
        m("triangular", 20, 50, 80),
        m("trapezoidal", 0, 10, 90, 100),
        m("gaussian", 50, 5),
    ):
        result = membership(values, cfg)
        assert result.min() >= 0 and result.max() <= 1


def test_compute_memberships_columns_in_order() -> None:
    index = pd.date_range("2024-01-01", periods=4, freq="1h", tz="UTC")
    frame = pd.DataFrame(
        {"rsi_14": [10.0, 50.0, 90.0, np.nan], "m.histogram": [-1.0, 0.0, 1.0, 2.0]}, index=index
    )
    sets = {
        "zone": FuzzySetConfig(
            indicator="rsi_14",
            memberships={"high": m("triangular", 50, 100, 101), "low": m("triangular", -1, 0, 50)},
        ),
        "hist": FuzzySetConfig(
            indicator="m.histogram", memberships={"pos": m("trapezoidal", 0, 1, 10, 11)}
        ),
    }
    out = compute_memberships(frame, sets)
    assert out.names == ("zone_high", "zone_low", "hist_pos")
    assert out.index.equals(index)
    table = out.to_frame()
    assert list(table.columns) == list(out.names) and (table.dtypes == np.float32).all()
    np.testing.assert_allclose(table["zone_high"], [0, 0, 0.8, np.nan], atol=1e-6)
    np.testing.assert_allclose(table["zone_low"], [0.8, 0, 0, np.nan], atol=1e-6)
    np.testing.assert_allclose(table["hist_pos"], [0, 0, 1, 1])
    assert out.bar_defined.tolist() == [True, True, True, False]
    assert Memberships.from_frame(table).bar_defined.tolist() == [True, True, True, False]
    with pytest.raises(KeyError):
        out["nope"]


def test_missing_indicator_column() -> None:
    frame = pd.DataFrame({"rsi_14": [1.0]})
    sets = {"z": FuzzySetConfig(indicator="rsi_7", memberships={"a": m("gaussian", 0, 1)})}
    with pytest.raises(
        FuzzyError, match="fuzzy set 'z' reads 'rsi_7', which is not among the indicator columns"
    ):
        compute_memberships(frame, sets)
