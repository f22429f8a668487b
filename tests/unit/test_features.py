"""Tests of causal feature engineering (kubetrade.data.features / indicators)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import pywt
import ta
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.signal import detrend

from kubetrade.data import indicators as ind
from kubetrade.data.features import (
    ADVANCED,
    FEATURE_GROUPS,
    INDICATORS,
    FeatureEngineer,
    is_scale_free,
)
from kubetrade.data.sources import generate_synthetic, load_embedded, select
from kubetrade.errors import ConfigError, DataError

BASE_COLUMNS = ["symbol", "timestamp", "open", "high", "low", "close", "volume"]
WARMUP = 100  # the longest default window (fractal); every feature is defined after it


@pytest.fixture(scope="module")
def embedded() -> pd.DataFrame:
    return load_embedded()


@pytest.fixture(scope="module")
def small(embedded: pd.DataFrame) -> pd.DataFrame:
    """Four real symbols over ~2.5 years; GOOG starts 2004-08-19, later than the rest."""
    return select(embedded, ["AAPL", "GOOG", "IBM", "MSFT"], "2004-01-01", "2006-06-30")


@pytest.fixture(scope="module")
def small_features(small: pd.DataFrame) -> pd.DataFrame:
    return FeatureEngineer().build_all(small)


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in BASE_COLUMNS]


def with_garbage_after(df: pd.DataFrame, cut: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Replace every row after ``cut`` (all symbols) with random positive OHLCV."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    late = (out["timestamp"] > cut).to_numpy()
    n = int(late.sum())
    close = np.exp(rng.uniform(-3, 8, n))
    open_ = close * np.exp(rng.normal(0, 0.2, n))
    out.loc[late, "close"] = close
    out.loc[late, "open"] = open_
    out.loc[late, "high"] = np.maximum(open_, close) * np.exp(rng.uniform(0, 0.3, n))
    out.loc[late, "low"] = np.minimum(open_, close) * np.exp(-rng.uniform(0, 0.3, n))
    out.loc[late, "volume"] = rng.uniform(0, 1e9, n)
    return out


def assert_same(a: pd.DataFrame, b: pd.DataFrame, columns: list[str], rtol: float = 0.0) -> None:
    """Equal values (NaN == NaN), bitwise by default."""
    for col in columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        same = (np.abs(x - y) <= rtol * np.abs(x)) | (x == y) | (np.isnan(x) & np.isnan(y))
        assert same.all(), f"{col}: {int((~same).sum())} value(s) differ, e.g. {x[~same][:3]}"


# ------------------------------------------------------------------ causality
@pytest.mark.parametrize(
    "cut", ["2004-03-15", "2004-08-25", "2005-01-31", "2005-09-30", "2006-06-15"]
)
def test_future_garbage_leaves_past_features_unchanged(
    small: pd.DataFrame, small_features: pd.DataFrame, cut: str
) -> None:
    cut_ts = pd.Timestamp(cut, tz="UTC")
    garbage = FeatureEngineer().build_all(with_garbage_after(small, cut_ts, seed=len(cut)))
    past = (small["timestamp"] <= cut_ts).to_numpy()
    assert past.any() and not past.all()
    cols = feature_columns(small_features)
    assert len(cols) == 48
    # bitwise equality (NaN == NaN) for every feature value at or before the cut
    assert_same(small_features[past], garbage[past], cols)
    # and the garbage really reached the features after the cut
    assert not np.allclose(
        small_features.loc[~past, "rsi"], garbage.loc[~past, "rsi"], equal_nan=True
    )


@pytest.fixture(scope="module")
def ragged() -> pd.DataFrame:
    """Synthetic symbols with different start dates and a missing day in one of them."""
    df = generate_synthetic(3, 0.8, seed=11)
    late_start = (df["symbol"] == "SYN001") & (df["timestamp"] < "2000-03-01")
    gap = (df["symbol"] == "SYN002") & (df["timestamp"] == pd.Timestamp("2000-05-03", tz="UTC"))
    return df[~late_start & ~gap].reset_index(drop=True)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut_row=st.integers(min_value=0, max_value=200), seed=st.integers(0, 2**16))
def test_lookahead_property_random_cuts(ragged: pd.DataFrame, cut_row: int, seed: int) -> None:
    fe = FeatureEngineer()
    base = fe.build_all(ragged)
    cut = np.sort(ragged["timestamp"].unique())[cut_row]
    garbage = fe.build_all(with_garbage_after(ragged, pd.Timestamp(cut), seed))
    past = (ragged["timestamp"] <= cut).to_numpy()
    assert_same(base[past], garbage[past], feature_columns(base))


@pytest.mark.parametrize("cut", ["2004-09-01", "2005-06-30"])
def test_truncated_history_gives_same_features(
    small: pd.DataFrame, small_features: pd.DataFrame, cut: str
) -> None:
    cut_ts = pd.Timestamp(cut, tz="UTC")
    past = (small["timestamp"] <= cut_ts).to_numpy()
    truncated = FeatureEngineer().build_all(small[past].reset_index(drop=True))
    expected = small_features[past].reset_index(drop=True)
    # the FFT's batched SIMD path may round the last bit differently when the batch
    # holds other windows, hence 1e-12 rather than bitwise
    assert_same(expected, truncated, feature_columns(small_features), rtol=1e-12)


# ------------------------------------------------------------- ta parity
TA_WARMUP = {"rsi": 13, "macd": 25, "macd_signal": 33, "macd_hist": 33, "bb": 19, "atr": 13}


@pytest.mark.parametrize("symbol", ["AAPL", "GOOG", "FB"])
def test_rsi_macd_bollinger_atr_match_ta(embedded: pd.DataFrame, symbol: str) -> None:
    data = select(embedded, [symbol])
    out = FeatureEngineer().add_technical_indicators(
        data, indicators=["rsi", "macd", "bollinger_bands", "atr"]
    )
    close, high, low = data["close"], data["high"], data["low"]
    macd = ta.trend.MACD(close)
    bb = ta.volatility.BollingerBands(close)
    reference = {
        "rsi": (ta.momentum.RSIIndicator(close).rsi(), TA_WARMUP["rsi"]),
        "macd": (macd.macd(), TA_WARMUP["macd"]),
        "macd_signal": (macd.macd_signal(), TA_WARMUP["macd_signal"]),
        "macd_hist": (macd.macd_diff(), TA_WARMUP["macd_hist"]),
        "bb_upper": (bb.bollinger_hband(), TA_WARMUP["bb"]),
        "bb_middle": (bb.bollinger_mavg(), TA_WARMUP["bb"]),
        "bb_lower": (bb.bollinger_lband(), TA_WARMUP["bb"]),
        "bb_width": (bb.bollinger_wband(), TA_WARMUP["bb"]),
        "bb_pct": (bb.bollinger_pband(), TA_WARMUP["bb"]),
        "atr": (
            ta.volatility.AverageTrueRange(high, low, close).average_true_range(),
            TA_WARMUP["atr"],
        ),
    }
    for col, (ref, warm) in reference.items():
        ours = out[col].to_numpy()
        assert np.isnan(ours[:warm]).all(), f"{col}: warm-up rows must be NaN"
        theirs = ref.to_numpy()[warm:]
        assert np.isfinite(ours[warm:]).all() and np.isfinite(theirs).all(), col
        np.testing.assert_allclose(ours[warm:], theirs, rtol=0, atol=1e-6, err_msg=col)


def test_stochastic_sma_ema_match_ta(embedded: pd.DataFrame) -> None:
    data = select(embedded, ["IBM"])
    out = FeatureEngineer().add_technical_indicators(data, ["stochastic", "sma", "ema"])
    stoch = ta.momentum.StochasticOscillator(data["high"], data["low"], data["close"])
    pairs = {
        "stoch_k": stoch.stoch(),
        "stoch_d": stoch.stoch_signal(),
        "sma_20": ta.trend.SMAIndicator(data["close"], 20).sma_indicator(),
        "ema_26": ta.trend.EMAIndicator(data["close"], 26).ema_indicator(),
    }
    for col, ref in pairs.items():
        np.testing.assert_allclose(out[col], ref, rtol=0, atol=1e-6, err_msg=col)


def test_obv_definition() -> None:
    close = np.array([[10.0, 11.0, 11.0, 10.5, 12.0]])
    volume = np.array([[5.0, 7.0, 3.0, 2.0, 4.0]])
    level, flow = ind.obv(close, volume, flow_window=2)
    np.testing.assert_array_equal(level[0], [0.0, 7.0, 7.0, 5.0, 9.0])
    np.testing.assert_allclose(flow[0, 1:], [7 / 12, 7 / 10, -2 / 5, 2 / 6])


# --------------------------------------------------- advanced: reference values
@pytest.mark.filterwarnings("ignore:Level value:UserWarning")
def test_wavelet_matches_direct_pywt(small: pd.DataFrame, small_features: pd.DataFrame) -> None:
    aapl = small_features[small_features["symbol"] == "AAPL"].reset_index(drop=True)
    rets = np.log(aapl["close"] / aapl["close"].shift(1)).to_numpy()
    t = 200
    coeffs = pywt.wavedec(rets[t - 31 : t + 1], "db4", mode="periodization", level=3)
    energy = np.array([np.sum(c**2) for c in coeffs])
    shares = energy / energy.sum()
    cols = ["wavelet_a3", "wavelet_d3", "wavelet_d2", "wavelet_d1"]
    np.testing.assert_allclose(aapl.loc[t, cols].to_numpy(float), shares, rtol=1e-10)
    defined = small_features["wavelet_a3"].notna()
    assert defined.sum() > 2000
    np.testing.assert_allclose(small_features.loc[defined, cols].sum(axis=1), 1.0, atol=1e-12)


def test_fourier_matches_direct_fft(small_features: pd.DataFrame) -> None:
    ibm = small_features[small_features["symbol"] == "IBM"].reset_index(drop=True)
    rets = np.log(ibm["close"] / ibm["close"].shift(1)).to_numpy()
    t = 300
    power = np.abs(np.fft.rfft(detrend(rets[t - 63 : t + 1], type="linear"))[1:]) ** 2
    share = power / power.sum()
    got = ibm.loc[t, [f"fourier_p{k}" for k in range(1, 6)]].to_numpy(float)
    np.testing.assert_allclose(got, share[:5], rtol=1e-8)
    assert ibm.loc[t, "fourier_period"] == pytest.approx(64 / (np.argmax(power) + 1))
    entropy = -(share * np.log(share)).sum() / np.log(len(share))
    assert ibm.loc[t, "fourier_entropy"] == pytest.approx(entropy, rel=1e-10)


def naive_hurst(returns: np.ndarray) -> float:
    sizes = ind.rs_sizes(len(returns))
    ys = []
    for n in sizes:
        blocks = len(returns) // n
        tail = returns[len(returns) - blocks * n :]
        rs = []
        for b in range(blocks):
            seg = tail[b * n : (b + 1) * n]
            path = np.cumsum(seg - seg.mean())
            rs.append((path.max() - min(path.min(), 0.0)) / seg.std())
        ys.append(np.log(np.mean(rs)) - np.log(ind._expected_rs(n)))
    return 0.5 + np.polyfit(np.log(sizes), ys, 1)[0]


def naive_higuchi(x: np.ndarray, k_max: int = 8) -> float:
    n = len(x)
    lengths = []
    for k in range(1, k_max + 1):
        per_m = []
        for m in range(k):
            idx = np.arange(m, n, k)
            steps = len(idx) - 1
            per_m.append(np.abs(np.diff(x[idx])).sum() * (n - 1) / (steps * k) / k)
        lengths.append(np.mean(per_m))
    return -np.polyfit(np.log(np.arange(1, k_max + 1)), np.log(lengths), 1)[0]


def test_fractal_matches_naive_loops(small_features: pd.DataFrame) -> None:
    msft = small_features[small_features["symbol"] == "MSFT"].reset_index(drop=True)
    log_close = np.log(msft["close"].to_numpy())
    for t in (100, 257, 480):
        path = log_close[t - 100 : t + 1]
        assert msft.loc[t, "hurst"] == pytest.approx(naive_hurst(np.diff(path)), abs=1e-9)
        assert msft.loc[t, "fractal_dimension"] == pytest.approx(naive_higuchi(path), abs=1e-9)
    assert msft.loc[:99, ["hurst", "fractal_dimension"]].isna().all().all()


def test_hurst_and_dimension_separate_persistent_from_mean_reverting() -> None:
    rng = np.random.default_rng(7)
    n, n_sym = 1500, 3
    noise = rng.standard_normal((n, n_sym)) * 0.01
    # columns: AR(1) returns with phi = 0.6 (trending), 0 (random walk), -0.6 (reverting)
    phi = np.array([0.6, 0.0, -0.6])
    rets = noise.copy()
    for i in range(1, n):  # test-data generator, not the code under test
        rets[i] = phi * rets[i - 1] + noise[i]
    close = 100 * np.exp(np.cumsum(rets, axis=0))
    dates = pd.bdate_range("2010-01-01", periods=n, tz="UTC")
    df = pd.DataFrame(
        {
            "symbol": np.repeat(["TREND", "WALK", "REVERT"], n),
            "timestamp": np.tile(dates, n_sym),
            "open": close.T.ravel(),
            "high": close.T.ravel() * 1.01,
            "low": close.T.ravel() * 0.99,
            "close": close.T.ravel(),
            "volume": 1e6,
        }
    )
    out = FeatureEngineer().add_fractal_features(df)
    hurst = out.groupby("symbol")["hurst"].mean()
    dim = out.groupby("symbol")["fractal_dimension"].mean()
    assert hurst["TREND"] > hurst["WALK"] + 0.1 > hurst["REVERT"] + 0.2
    assert abs(hurst["WALK"] - 0.5) < 0.06
    assert dim["TREND"] < dim["WALK"] < dim["REVERT"]
    assert abs(dim["WALK"] - 1.5) < 0.05


# ------------------------------------------------------------- cross-asset
def test_cross_asset_aligns_on_timestamps(small: pd.DataFrame) -> None:
    out = FeatureEngineer().add_cross_asset_features(small, correlation_window=30)
    rets = small.assign(r=small.groupby("symbol")["close"].pct_change())
    wide = rets.pivot(index="timestamp", columns="symbol", values="r")
    # before GOOG exists, AAPL's market is the mean of IBM and MSFT
    day = pd.Timestamp("2004-05-03", tz="UTC")
    got = out.loc[(out["symbol"] == "AAPL") & (out["timestamp"] == day), "xa_market_return"]
    assert got.iloc[0] == pytest.approx(wide.loc[day, ["IBM", "MSFT"]].mean(), rel=1e-12)
    # later GOOG counts
    day = pd.Timestamp("2005-05-02", tz="UTC")
    got = out.loc[(out["symbol"] == "AAPL") & (out["timestamp"] == day), "xa_market_return"]
    assert got.iloc[0] == pytest.approx(wide.loc[day, ["GOOG", "IBM", "MSFT"]].mean(), rel=1e-12)
    # correlation and beta against pandas' rolling statistics on the same pairs
    ibm = out[out["symbol"] == "IBM"].reset_index(drop=True)
    r = ibm["close"].pct_change()
    ref_corr = r.rolling(30).corr(ibm["xa_market_return"])
    ref_beta = (
        r.rolling(30).cov(ibm["xa_market_return"]) / ibm["xa_market_return"].rolling(30).var()
    )
    np.testing.assert_allclose(ibm["xa_corr"][30:], ref_corr[30:], atol=1e-9)
    np.testing.assert_allclose(ibm["xa_beta"][30:], ref_beta[30:], atol=1e-9)
    assert ibm["xa_corr"][:30].isna().all()
    # relative returns sum to zero across symbols at each timestamp
    total = out.groupby("timestamp")["xa_rel_return"].sum()
    assert np.abs(total.dropna()).max() < 1e-12


def test_cross_asset_single_symbol(embedded: pd.DataFrame) -> None:
    one = select(embedded, ["IBM"], "2010-01-01", "2010-12-31")
    out = FeatureEngineer().add_cross_asset_features(one)
    assert len(out) == len(one)
    assert out[["xa_market_return", "xa_corr", "xa_beta"]].isna().all().all()
    rel = out["xa_rel_return"].to_numpy()
    assert np.isnan(rel[0]) and (rel[1:] == 0.0).all()


# ------------------------------------------------------------ frame contract
def test_guide_sequence_equals_build_all(small: pd.DataFrame, small_features: pd.DataFrame):
    fe = FeatureEngineer()
    features = fe.add_technical_indicators(
        small, indicators=["rsi", "macd", "bollinger_bands", "atr"]
    )
    features = fe.add_wavelet_features(features)
    features = fe.add_fourier_features(features)
    features = fe.add_fractal_features(features)
    features = fe.add_cross_asset_features(features, correlation_window=30)
    cols = feature_columns(features)
    assert set(cols) <= set(small_features.columns)
    assert_same(small_features, features, cols)
    assert fe.columns_for(["rsi", "wavelet"]) == ["rsi", *fe.feature_groups()["wavelet"]]


def test_row_order_and_extra_columns_kept(small: pd.DataFrame, small_features) -> None:
    shuffled = small.sample(frac=1.0, random_state=3)
    shuffled = shuffled.assign(note=np.arange(len(shuffled)))
    out = FeatureEngineer().build_all(shuffled)
    assert out.index.equals(shuffled.index)
    pd.testing.assert_frame_equal(out[[*BASE_COLUMNS, "note"]], shuffled[[*BASE_COLUMNS, "note"]])
    # values do not depend on the input order
    realigned = out.loc[small.index]
    assert_same(small_features, realigned, feature_columns(small_features), rtol=1e-12)
    assert all(out[c].dtype == np.float64 for c in feature_columns(small_features))


def test_no_nan_after_warmup(embedded: pd.DataFrame) -> None:
    fe = FeatureEngineer()
    out = fe.build_all(embedded)
    assert fe.warmup_rows() == WARMUP
    position = out.groupby("symbol").cumcount().to_numpy()
    cols = feature_columns(out)
    after = out.loc[position >= WARMUP, cols]
    bad = after.columns[~np.isfinite(after.to_numpy()).all(axis=0)]
    assert list(bad) == []
    # each group's documented warm-up is tight: NaN in its last warm-up row, finite after
    for group in (*INDICATORS, *ADVANCED):
        warm = fe.warmup_rows(group)
        block = out[fe.columns_for(group)].to_numpy()
        assert np.isfinite(block[position >= warm]).all(), group
        if warm:
            assert np.isnan(block[position == warm - 1]).any(axis=1).all(), group


def test_feature_groups_cover_config_names_and_outputs(small_features: pd.DataFrame) -> None:
    fe = FeatureEngineer()
    groups = fe.feature_groups()
    assert set(groups) == set(FEATURE_GROUPS)
    produced = set(feature_columns(small_features))
    listed = {c for g in (*INDICATORS, *ADVANCED) for c in groups[g]}
    assert produced == listed
    free = fe.feature_groups(scale_free=True)
    assert free["bollinger_bands"] == ["bb_width", "bb_pct"]
    assert "atr" not in free["atr"] and "atr_pct" in free["atr"]
    assert is_scale_free("sma_20_ratio") and not is_scale_free("sma_20")
    # wavelet level override changes the reported columns
    fe.add_wavelet_features(small_features.iloc[:200], level=2)
    assert fe.columns_for("wavelet") == [
        "wavelet_a2",
        "wavelet_d2",
        "wavelet_d1",
        "wavelet_entropy",
    ]


def test_build_groups_from_config_list(small: pd.DataFrame) -> None:
    fe = FeatureEngineer()
    out = fe.build_groups(small, ["open", "close", "rsi", "macd", "fractal"])
    assert {"rsi", "macd_norm", "hurst"} <= set(out.columns)
    assert "bb_pct" not in out.columns and "xa_corr" not in out.columns


# ----------------------------------------------------------------- errors
def test_unknown_indicator_lists_allowed_names(small: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="unknown indicator.*'ichimoku'.*'rsi'.*'obv'"):
        FeatureEngineer().add_technical_indicators(small, ["rsi", "ichimoku"])
    with pytest.raises(DataError, match="advanced group"):
        FeatureEngineer().add_technical_indicators(small, ["wavelet"])
    with pytest.raises(DataError, match="unknown advanced.*'garch'"):
        FeatureEngineer().build_all(small, advanced=["garch"])
    with pytest.raises(DataError, match="unknown feature group"):
        FeatureEngineer().columns_for("nope")


def test_bad_inputs_raise_data_error(small: pd.DataFrame) -> None:
    fe = FeatureEngineer()
    with pytest.raises(DataError, match="duplicate"):
        fe.add_technical_indicators(pd.concat([small, small.iloc[:1]]), ["rsi"])
    bad = small.copy()
    bad.loc[5, "close"] = 0.0
    with pytest.raises(DataError, match="'close'.*finite and > 0"):
        fe.add_technical_indicators(bad, ["rsi"])
    with pytest.raises(DataError, match="no 'high' column"):
        fe.add_technical_indicators(small.drop(columns="high"), ["atr"])
    with pytest.raises(DataError, match="unknown wavelet"):
        fe.add_wavelet_features(small, wavelet="db99")
    with pytest.raises(DataError, match="fractal window"):
        fe.add_fractal_features(small, window=4)
    with pytest.raises(ConfigError, match="rsi_window must be an integer >= 1, got 0"):
        FeatureEngineer(rsi_window=0)


def test_short_symbol_is_all_warmup() -> None:
    df = generate_synthetic(2, 0.1, seed=1)  # 25 rows each: shorter than most windows
    out = FeatureEngineer().build_all(df)
    assert len(out) == len(df)
    assert out["hurst"].isna().all() and out["rsi"].notna().sum() == 2 * (25 - 13)
