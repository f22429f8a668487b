"""Time splits, purge gap, windows, train-only scaling and augmentation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kubetrade.config import TrainingConfig
from kubetrade.data.features import FeatureEngineer
from kubetrade.data.sources import generate_synthetic
from kubetrade.data.splits import (
    BUY,
    HOLD,
    SELL,
    TimeSeriesSplitter,
    augment,
    load_bundle,
    make_windows,
    prepare_datasets,
    save_bundle,
)
from kubetrade.errors import SplitError


@pytest.fixture(scope="module")
def feats():
    raw = generate_synthetic(3, 4, seed=3)
    return FeatureEngineer().add_technical_indicators(
        raw, indicators=["rsi", "macd", "bollinger_bands", "atr"]
    )


@pytest.fixture(scope="module")
def cfg():
    c = TrainingConfig()
    c.data.sequence_length = 20
    return c


@pytest.fixture(scope="module")
def bundle(feats, cfg):
    return prepare_datasets(feats, cfg)


def test_guide_api_split_is_chronological_with_gap(embedded):
    df = embedded[embedded["symbol"].isin(["AAPL", "IBM"])]
    splitter = TimeSeriesSplitter(train_ratio=0.7, val_ratio=0.15, test_ratio=0.15, gap_days=5)
    train, val, test = splitter.split(df)
    cal = pd.DatetimeIndex(np.sort(df["timestamp"].unique()))
    pos = {t: i for i, t in enumerate(cal)}
    assert train["timestamp"].max() < val["timestamp"].min() < test["timestamp"].min()
    assert pos[val["timestamp"].min()] - pos[train["timestamp"].max()] == 6  # 5 bars left out
    assert pos[test["timestamp"].min()] - pos[val["timestamp"].max()] == 6
    assert len(train) + len(val) + len(test) == len(df) - 2 * 5 * 2
    assert abs(len(train) / len(df) - 0.7) < 0.01


def test_bad_ratios_and_too_little_data(embedded):
    with pytest.raises(SplitError, match="sum to 1"):
        TimeSeriesSplitter(0.8, 0.15, 0.15)
    tiny = embedded[embedded["symbol"] == "IBM"].head(30)
    with pytest.raises(SplitError, match="too few"):
        TimeSeriesSplitter(gap_days=20).split(tiny)


def test_no_window_crosses_a_split_boundary(feats, cfg, bundle):
    L, h = cfg.data.sequence_length, cfg.data.prediction_horizon
    cal = pd.DatetimeIndex(np.sort(feats["timestamp"].unique())).tz_localize(None)
    periods = {k: (pd.Timestamp(a), pd.Timestamp(b)) for k, (a, b) in bundle.periods.items()}
    for name in ("train", "val", "test"):
        ws = getattr(bundle, name)
        pos = cal.searchsorted(pd.DatetimeIndex(ws.timestamps))
        first_input = cal[pos - L + 1]
        label_bar = cal[np.minimum(pos + h, len(cal) - 1)]
        start, end = periods[name]
        assert (pd.DatetimeIndex(ws.timestamps) >= start).all()
        assert (label_bar <= end).all(), name
        for other, (o_start, o_end) in periods.items():
            if other == name:
                continue
            touches = (first_input <= o_end) & (label_bar >= o_start)
            assert not touches.any(), f"{name} window touches {other}"
    # the gap is at least sequence_length + horizon bars
    assert (
        cal.searchsorted(periods["val"][0]) - cal.searchsorted(periods["train"][1]) - 1
    ) >= L + h


def test_labels_are_forward_returns_with_threshold(feats, cfg):
    one = feats[feats["symbol"] == feats["symbol"].iloc[0]].reset_index(drop=True)
    ws = make_windows(one, ["rsi"], 10, 1, 0.005)
    close = one.set_index(one["timestamp"].dt.tz_localize(None))["close"]
    t = pd.DatetimeIndex(ws.timestamps)
    nxt = close.shift(-1).loc[t].to_numpy()
    np.testing.assert_allclose(ws.y_reg, nxt / close.loc[t].to_numpy() - 1, rtol=1e-6)
    assert (ws.y_cls[ws.y_reg > 0.005] == BUY).all()
    assert (ws.y_cls[ws.y_reg < -0.005] == SELL).all()
    assert (ws.y_cls[np.abs(ws.y_reg) <= 0.005] == HOLD).all()
    # the window's last input row is the decision bar t itself
    rsi = one.set_index(one["timestamp"].dt.tz_localize(None))["rsi"]
    np.testing.assert_allclose(ws.X[:, -1, 0], rsi.loc[t].to_numpy(), rtol=1e-6)
    assert np.isfinite(ws.X).all()


def test_scaler_fitted_on_train_only(feats, cfg):
    base = prepare_datasets(feats, cfg, augment_train=False)
    poisoned = feats.copy()
    test_start = pd.Timestamp(base.periods["test"][0], tz="UTC")
    mask = poisoned["timestamp"] >= test_start
    poisoned.loc[mask, "rsi"] = poisoned.loc[mask, "rsi"] * 50 + 1000
    other = prepare_datasets(poisoned, cfg, augment_train=False)
    np.testing.assert_array_equal(base.scaler.center, other.scaler.center)
    np.testing.assert_array_equal(base.train.X, other.train.X)
    np.testing.assert_array_equal(base.val.X, other.val.X)
    assert not np.array_equal(base.test.X, other.test.X)


def test_augmentation_only_on_train_and_never_looks_ahead(feats, cfg, bundle):
    plain = prepare_datasets(feats, cfg, augment_train=False)
    assert len(bundle.train) == 2 * len(plain.train)
    assert len(bundle.val) == len(plain.val) and len(bundle.test) == len(plain.test)
    np.testing.assert_array_equal(bundle.val.X, plain.val.X)
    # a pure time shift (no noise, no warp) only repeats earlier bars
    aug_cfg = cfg.data.augmentation.model_copy(update={"noise_std": 0.0, "magnitude_warp": False})
    X = np.arange(5 * 8, dtype=np.float32).reshape(5, 8, 1)
    ws = plain.train.take(slice(0, 5))
    ws.X = X
    out = augment(ws, aug_cfg, seed=1)
    shifted = out.X[5:, :, 0]
    assert (shifted <= X[:, :, 0]).all()  # values only come from the same or earlier bars


def test_walk_forward_folds_never_reach_the_test_period(feats, cfg):
    splitter = TimeSeriesSplitter.from_config(cfg)
    test_start = splitter.periods(feats).test[0]
    folds = list(splitter.walk_forward_splits(feats, n_folds=4))
    assert len(folds) == 4
    for (tr0, tr1), (va0, va1) in folds:
        assert tr0 <= tr1 < va0 <= va1 < test_start
    assert folds[0][0][1] < folds[-1][0][1]  # expanding


def test_bundle_roundtrip_without_pickle(tmp_path, bundle):
    path = save_bundle(bundle, tmp_path / "b.npz")
    back = load_bundle(path)
    for name in ("train", "val", "test"):
        a, b = getattr(bundle, name), getattr(back, name)
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y_cls, b.y_cls)
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.symbols, b.symbols)
    assert back.feature_names == bundle.feature_names
    assert back.periods == bundle.periods


def test_without_test_keeps_train_and_val_and_empties_test(bundle):
    blind = bundle.without_test()
    assert blind.train is bundle.train and blind.val is bundle.val
    assert len(blind.test) == 0 and blind.test.X.shape[1:] == bundle.val.X.shape[1:]
    assert blind.feature_names == bundle.feature_names


def test_unknown_feature_is_a_clear_error(feats, cfg):
    c = cfg.model_copy(deep=True)
    c.data.features = ["close", "fractal"]  # not computed in this table
    with pytest.raises(SplitError, match="'fractal' is not in the feature table"):
        prepare_datasets(feats, c)


def test_dropped_rows_are_counted_per_split_and_symbol(feats, cfg):
    bundle = prepare_datasets(feats, cfg, augment_train=False)
    for name in ("train", "val", "test"):
        per_symbol = bundle.coverage[name]
        assert set(per_symbol) == set(feats["symbol"].unique())
        windows = sum(c["windows"] for c in per_symbol.values())
        assert windows == len(getattr(bundle, name))
        for c in per_symbol.values():
            assert 0 < c["windows"] <= c["bars"]
    # the train split starts with the indicator warm-up and the first sequence_length bars:
    # those rows are dropped, and counted
    train = bundle.coverage["train"]
    assert all(c["bars"] - c["windows"] >= cfg.data.sequence_length - 1 for c in train.values())


def test_a_symbol_left_without_windows_in_a_split_is_an_error_naming_it(feats, cfg):
    periods = TimeSeriesSplitter.from_config(cfg).periods(feats)
    broken = feats.copy()
    sym = sorted(broken["symbol"].unique())[1]
    in_test = (broken["symbol"] == sym) & (broken["timestamp"] >= periods.test[0])
    broken.loc[in_test, "rsi"] = np.nan  # e.g. a feed outage: every test window has a hole
    with pytest.raises(SplitError, match=rf"\['{sym}'\].*test split"):
        prepare_datasets(broken, cfg, augment_train=False)
