"""BacktestingEngine: parity with backtesting.py, fills, costs, stops, metrics, report."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from kubetrade.backtest import (
    BacktestingEngine,
    BacktestResult,
    cagr,
    calmar_ratio,
    max_drawdown,
    max_drawdown_duration,
    sharpe_ratio,
    sortino_ratio,
    write_backtest_report,
)
from kubetrade.backtest import metrics as m
from kubetrade.data.sources import generate_synthetic
from kubetrade.errors import ConfigError, DataError

ENGINE = BacktestingEngine()


def make_prices(bars: list[tuple[float, float, float, float]], symbol: str = "X") -> pd.DataFrame:
    """Canonical table from (open, high, low, close) tuples on consecutive business days."""
    stamps = pd.bdate_range("2020-01-01", periods=len(bars), tz="UTC")
    o, h, low, c = (np.array(col, dtype=float) for col in zip(*bars, strict=True))
    return pd.DataFrame(
        {
            "symbol": symbol,
            "timestamp": stamps,
            "open": o,
            "high": h,
            "low": low,
            "close": c,
            "volume": 1e6,
        }
    )


def make_signal(prices: pd.DataFrame, values: list[float], symbol: str = "X") -> pd.Series:
    stamps = pd.DatetimeIndex(prices.loc[prices["symbol"] == symbol, "timestamp"])
    return pd.Series(values, index=stamps, name=symbol, dtype=float)


def run(prices: pd.DataFrame, signal: pd.Series | pd.DataFrame, **kwargs) -> BacktestResult:
    kwargs.setdefault("initial_capital", 100_000.0)
    kwargs.setdefault("transaction_costs", 0.0)
    return ENGINE.run_backtest(signal, prices=prices, **kwargs)


# --------------------------------------------------------------------------- backtesting.py parity


def _goog_crossover() -> tuple[pd.DataFrame, pd.Series]:
    from backtesting.test import GOOG, SMA

    prices = pd.DataFrame(
        {
            "symbol": "GOOG",
            "timestamp": pd.DatetimeIndex(GOOG.index).tz_localize("UTC"),
            "open": GOOG["Open"].to_numpy(),
            "high": GOOG["High"].to_numpy(),
            "low": GOOG["Low"].to_numpy(),
            "close": GOOG["Close"].to_numpy(),
            "volume": GOOG["Volume"].to_numpy(dtype=float),
        }
    )
    fast = SMA(GOOG["Close"], 10).to_numpy()
    slow = SMA(GOOG["Close"], 20).to_numpy()
    # backtesting.lib.crossover: strictly below on the previous bar, strictly above now.
    up = np.r_[False, (fast[:-1] < slow[:-1]) & (fast[1:] > slow[1:])]
    down = np.r_[False, (slow[:-1] < fast[:-1]) & (slow[1:] > fast[1:])]
    target = np.where(up, 1.0, np.where(down, -1.0, np.nan))  # NaN: keep the last target
    signal = pd.Series(target, index=pd.DatetimeIndex(prices["timestamp"]), name="GOOG")
    return prices, signal


def _backtesting_py_run(cash: float, commission: float):
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import GOOG, SMA

    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(SMA, self.data.Close, 10)
            self.slow = self.I(SMA, self.data.Close, 20)

        def next(self):
            if crossover(self.fast, self.slow):
                self.buy()
            elif crossover(self.slow, self.fast):
                self.sell()

    bt = Backtest(
        GOOG,
        SmaCross,
        cash=cash,
        commission=commission,
        exclusive_orders=True,
        trade_on_close=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bt.run()


def test_sma_crossover_matches_backtesting_py():
    """Same conventions as backtesting.py: next-open fills, whole shares, all-in sizing net of
    commission, commission on entry and exit, last trade left open."""
    cash, commission = 10_000.0, 0.002
    stats = _backtesting_py_run(cash, commission)
    prices, signal = _goog_crossover()
    res = run(
        prices, signal, initial_capital=cash, transaction_costs=commission, fractional_shares=False
    )

    reference = stats["Equity Final [$]"]
    assert res.final_equity == pytest.approx(reference, rel=1e-9)
    assert abs(res.final_equity / reference - 1) < 1e-3  # the spec's 0.1 % bound, with margin
    # The whole equity curve, not only its end.
    np.testing.assert_allclose(
        res.equity.to_numpy(), stats["_equity_curve"]["Equity"].to_numpy(), rtol=1e-9
    )
    theirs = stats["_trades"]
    ours = res.trades[res.trades["exit_reason"] != "open"]
    assert len(ours) == len(theirs)  # backtesting.py lists closed trades only
    np.testing.assert_allclose(ours["entry_price"].to_numpy(), theirs["EntryPrice"].to_numpy())
    np.testing.assert_allclose(ours["size"].to_numpy(), theirs["Size"].to_numpy())
    np.testing.assert_allclose(ours["pnl"].to_numpy(), theirs["PnL"].to_numpy(), rtol=1e-9)


def test_fractional_shares_residual_vs_backtesting_py_is_small_with_large_capital():
    # With fractional shares the only difference is backtesting.py's share rounding,
    # which is negligible when a share is a tiny part of the account.
    cash, commission = 10_000_000.0, 0.001
    stats = _backtesting_py_run(cash, commission)
    prices, signal = _goog_crossover()
    res = run(prices, signal, initial_capital=cash, transaction_costs=commission)
    assert abs(res.final_equity / stats["Equity Final [$]"] - 1) < 1e-3


# --------------------------------------------------------------------------- fills and costs


def test_signal_fills_at_next_open_not_same_close():
    # The close of bar 0 is 100 but bar 1 gaps to 200: a look-ahead fill at 100
    # would double the account by bar 1's close.
    prices = make_prices([(100, 101, 99, 100), (200, 202, 198, 200), (200, 210, 190, 210)])
    res = run(prices, make_signal(prices, [1.0, 1.0, 1.0]))
    trade = res.trades.iloc[0]
    assert trade["entry_price"] == 200.0
    assert trade["entry_time"] == prices["timestamp"][1]
    assert res.equity.iloc[0] == 100_000.0  # nothing can happen on the signal's own bar
    assert res.equity.iloc[1] == pytest.approx(100_000.0)
    assert res.equity.iloc[2] == pytest.approx(100_000.0 * 210 / 200)


def test_future_prices_do_not_change_the_past():
    prices = generate_synthetic(n_symbols=2, n_years=0.5, seed=3)
    stamps = pd.DatetimeIndex(sorted(prices["timestamp"].unique()))
    rng = np.random.default_rng(0)
    wide = pd.DataFrame(
        rng.choice([-1.0, 0.0, 1.0], size=(len(stamps), 2)),
        index=stamps,
        columns=sorted(prices["symbol"].unique()),
    )
    base = run(prices, wide, max_position_size=0.5, stop_loss_pct=0.03)
    cut = stamps[60]
    shocked = prices.copy()
    later = shocked["timestamp"] > cut
    shocked.loc[later, ["open", "high", "low", "close"]] *= 3.0
    after = run(shocked, wide, max_position_size=0.5, stop_loss_pct=0.03)
    pd.testing.assert_series_equal(base.equity[:cut], after.equity[:cut])
    assert not np.allclose(base.equity.to_numpy(), after.equity.to_numpy())


def test_costs_are_traded_notional_times_rate():
    rate, capital = 0.01, 1_000.0
    prices = make_prices([(10, 10, 10, 10), (10, 12, 10, 12), (12, 12, 11, 11), (11, 11, 11, 11)])
    res = run(
        prices,
        make_signal(prices, [0.5, 0.0, 0.0, 0.0]),
        initial_capital=capital,
        transaction_costs=rate,
        signal_mode="weights",
    )
    # Sized so that notional plus cost is half the equity; sold at bar 2's open.
    shares = 0.5 * capital / (10 * (1 + rate))
    buy_cost, sell_cost = shares * 10 * rate, shares * 12 * rate
    assert res.shares.iloc[1, 0] == pytest.approx(shares)
    assert res.equity.iloc[1] == pytest.approx(capital + shares * (12 - 10) - buy_cost)
    assert res.final_equity == pytest.approx(capital + shares * (12 - 10) - buy_cost - sell_cost)
    assert res.total_costs == pytest.approx(buy_cost + sell_cost)
    assert res.trades["costs"].iloc[0] == pytest.approx(buy_cost + sell_cost)
    assert res.trades["pnl"].iloc[0] == pytest.approx(res.final_equity - capital)
    free = run(
        prices,
        make_signal(prices, [0.5, 0.0, 0.0, 0.0]),
        initial_capital=capital,
        signal_mode="weights",
    )
    assert free.total_costs == 0.0
    assert free.final_equity == pytest.approx(capital + 0.5 * capital / 10 * 2)


def test_slippage_moves_fills_against_the_trader():
    prices = make_prices([(100, 100, 100, 100), (100, 100, 100, 100), (100, 100, 100, 100)])
    res = run(prices, make_signal(prices, [1.0, -1.0, -1.0]), slippage=0.01)
    trades = res.trades
    assert trades["entry_price"].iloc[0] == pytest.approx(101.0)  # bought above the open
    assert trades["exit_price"].iloc[0] == pytest.approx(99.0)  # sold below it
    assert trades["entry_price"].iloc[1] == pytest.approx(99.0)  # short entry is a sale
    assert res.final_equity < 100_000.0


# --------------------------------------------------------------------------- stops


@pytest.mark.parametrize(
    ("direction", "bar2", "reason", "exit_price"),
    [
        (1.0, (100, 101, 94, 96), "stop_loss", 95.0),  # long stop hit intrabar at 95
        (1.0, (93, 94, 90, 92), "stop_loss", 93.0),  # long stop gapped through: open
        (1.0, (110, 116, 109, 112), "take_profit", 115.0),  # long target at 115
        (1.0, (120, 121, 119, 120), "take_profit", 120.0),  # gap above target: open
        (-1.0, (100, 106, 99, 104), "stop_loss", 105.0),  # short stop at 105
        (-1.0, (108, 109, 107, 108), "stop_loss", 108.0),  # short stop gapped: open
        (-1.0, (90, 91, 84, 86), "take_profit", 85.0),  # short target at 85
        (1.0, (100, 116, 94, 100), "stop_loss", 95.0),  # both inside one bar: stop first
    ],
)
def test_stop_loss_and_take_profit(direction, bar2, reason, exit_price):
    prices = make_prices(
        [
            (100, 100, 100, 100),
            (100, 102, 98, 100),
            bar2,
            (100, 100, 100, 100),
            (100, 100, 100, 100),
        ]
    )
    res = run(
        prices, make_signal(prices, [direction] * 5), stop_loss_pct=0.05, take_profit_pct=0.15
    )
    trade = res.trades.iloc[0]
    assert trade["exit_reason"] == reason
    assert trade["exit_time"] == prices["timestamp"][2]
    assert trade["exit_price"] == pytest.approx(exit_price)
    units = direction * 100_000.0 / 100.0
    assert res.equity.iloc[2] == pytest.approx(100_000.0 + units * (exit_price - 100.0))
    # Flat afterwards, because the signal did not change.
    assert (res.shares.iloc[2:, 0] == 0).all()
    assert len(res.trades) == 1


def test_reentry_after_stop_waits_for_a_new_signal():
    bars = [
        (100, 100, 100, 100),
        (100, 100, 100, 100),
        (100, 100, 90, 92),
        (92, 93, 91, 92),
        (92, 93, 91, 92),
        (92, 93, 91, 92),
    ]
    prices = make_prices(bars)
    res = run(prices, make_signal(prices, [1, 1, 1, 0.5, 0.5, 0.5]), stop_loss_pct=0.05)
    assert res.trades["exit_reason"].tolist() == ["stop_loss", "open"]
    assert res.shares.iloc[3, 0] == 0  # still flat: signal unchanged at bar 2's close
    assert res.trades["entry_time"].iloc[1] == prices["timestamp"][4]


def test_stop_that_is_not_hit_keeps_the_position():
    prices = make_prices([(100, 100, 100, 100), (100, 104, 96, 100), (100, 114, 95.5, 101)])
    res = run(prices, make_signal(prices, [1, 1, 1]), stop_loss_pct=0.05, take_profit_pct=0.15)
    assert res.trades["exit_reason"].tolist() == ["open"]
    assert res.final_equity == pytest.approx(101_000.0)


# --------------------------------------------------------------------------- sizing, universe


def test_position_cap_and_gross_exposure_scale_weights():
    prices = generate_synthetic(n_symbols=10, n_years=0.2, seed=1)
    stamps = pd.DatetimeIndex(sorted(prices["timestamp"].unique()))
    symbols = sorted(prices["symbol"].unique())
    ones = pd.DataFrame(1.0, index=stamps, columns=symbols)
    res = run(prices, ones[symbols[:2]], max_position_size=0.2)
    first_open = prices[prices["timestamp"] == stamps[1]].set_index("symbol")["open"]
    held = res.shares.iloc[1] * first_open[symbols[:2]]
    np.testing.assert_allclose(held.to_numpy() / 100_000.0, [0.2, 0.2])
    # Ten assets at 0.2 would be 200 % gross; the cap scales each to 10 %.
    res = run(prices, ones, max_position_size=0.2, max_gross_exposure=1.0)
    held = res.shares.iloc[1] * first_open[symbols]
    np.testing.assert_allclose(held.to_numpy() / 100_000.0, np.full(10, 0.1))
    assert res.buy_and_hold_equity.iloc[0] > 0


def test_every_bar_rebalance_restores_the_target_weight():
    prices = make_prices(
        [(100, 100, 100, 100), (100, 110, 100, 110), (120, 120, 100, 100), (90, 95, 85, 95)]
    )
    res = run(prices, make_signal(prices, [0.5] * 4), rebalance="every_bar", signal_mode="weights")
    opens = prices["open"].to_numpy()
    shares = res.shares.iloc[:, 0].to_numpy()
    equity = res.equity.to_numpy()
    for t in (2, 3):
        equity_at_open = equity[t - 1] + shares[t - 1] * (opens[t] - prices["close"][t - 1])
        assert shares[t] * opens[t] == pytest.approx(0.5 * equity_at_open)
    held = run(prices, make_signal(prices, [0.5] * 4), signal_mode="weights")
    assert (held.shares.iloc[1:, 0] == held.shares.iloc[1, 0]).all()  # on_change: no drift fix


def test_missing_bar_delays_the_order_to_the_next_bar():
    a = make_prices([(10, 10, 10, 10)] * 4, symbol="A")
    b = make_prices([(20, 20, 20, 20)] * 4, symbol="B").drop(index=1)
    prices = pd.concat([a, b], ignore_index=True)
    signals = pd.DataFrame({"A": 0.5, "B": 0.5}, index=pd.DatetimeIndex(a["timestamp"]))
    res = run(prices, signals, signal_mode="weights")
    assert res.shares["A"].iloc[1] > 0
    assert res.shares["B"].iloc[1] == 0  # B has no bar 1
    assert res.shares["B"].iloc[2] == pytest.approx(0.5 * 100_000.0 / 20)


def test_long_signal_frame_and_model_object_agree():
    prices = generate_synthetic(n_symbols=3, n_years=1.0, seed=2)

    class Momentum:
        seen_until: pd.Timestamp | None = None

        def predict_signals(self, table: pd.DataFrame) -> pd.DataFrame:
            Momentum.seen_until = table["timestamp"].max()
            out = table[["symbol", "timestamp"]].copy()
            change = table.groupby("symbol")["close"].pct_change(5)
            out["signal"] = np.sign(change).fillna(0.0)
            return out

    kwargs = {
        "start_date": "2000-03-01",
        "end_date": "2000-10-31",
        "max_position_size": 0.3,
        "stop_loss_pct": 0.05,
        "take_profit_pct": 0.15,
        "transaction_costs": 0.001,
    }
    by_model = ENGINE.run_backtest(model=Momentum(), prices=prices, **kwargs)
    assert Momentum.seen_until <= pd.Timestamp("2000-10-31 23:59", tz="UTC")
    frame = Momentum().predict_signals(prices)
    by_frame = ENGINE.run_backtest(frame, prices=prices, **kwargs)
    pd.testing.assert_series_equal(by_model.equity, by_frame.equity)
    assert by_model.equity.index[0] >= pd.Timestamp("2000-03-01", tz="UTC")
    assert by_model.num_trades > 0
    assert set(by_model.trades["symbol"]) <= set(frame["symbol"])


def test_guide_call_on_embedded_data_and_dict_access():
    from kubetrade.data.sources import load_embedded

    prices = load_embedded()
    prices = prices[prices["symbol"].isin(["AAPL", "MSFT"])]
    stamps = pd.DatetimeIndex(sorted(prices["timestamp"].unique()))
    signals = pd.DataFrame({"AAPL": 1.0, "MSFT": -0.5}, index=stamps)
    res = BacktestingEngine().run_backtest(
        signals,
        start_date="2011-01-01",
        end_date="2013-03-01",
        initial_capital=100_000,
        transaction_costs=0.001,
        max_position_size=0.2,
        stop_loss_pct=0.05,
        take_profit_pct=0.15,
        prices=prices,
    )
    assert res["total_return"] == res.total_return
    assert math.isfinite(res["sharpe_ratio"])
    assert -1.0 < res["max_drawdown"] <= 0.0
    assert set(res.metrics()) >= {"total_return", "sharpe_ratio", "max_drawdown", "cagr"}
    assert "trades" in res and "nonsense" not in res
    with pytest.raises(KeyError):
        res["nonsense"]
    assert str(res.equity.index[0].date()) >= "2011-01-01"
    assert str(res.equity.index[-1].date()) <= "2013-03-01"
    # Buy & hold: half the capital in each, bought at the second bar's open with costs.
    window = prices[(prices["timestamp"] >= "2011-01-01") & (prices["timestamp"] <= "2013-03-02")]
    entry = window.groupby("symbol").nth(1).set_index("symbol")["open"]
    last = window.groupby("symbol").last()["close"]
    value = (50_000 / (entry * 1.001) * last).sum()
    assert res.buy_and_hold_return == pytest.approx(value / 100_000 - 1)


def test_always_long_equal_weight_strategy_is_buy_and_hold():
    prices = generate_synthetic(n_symbols=4, n_years=0.5, seed=5)
    stamps = pd.DatetimeIndex(sorted(prices["timestamp"].unique()))
    signals = pd.DataFrame(1.0, index=stamps, columns=sorted(prices["symbol"].unique()))
    res = run(prices, signals, max_position_size=0.25, transaction_costs=0.002, slippage=0.001)
    np.testing.assert_allclose(res.equity.to_numpy(), res.buy_and_hold_equity.to_numpy())
    assert res.total_return == pytest.approx(res.buy_and_hold_return)
    assert res.total_return == pytest.approx(res.buy_and_hold_metrics["total_return"])


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"stop_loss_pct": 1.5}, ConfigError, "stop_loss_pct=1.5"),
        ({"transaction_costs": -0.1}, ConfigError, "transaction_costs"),
        ({"rebalance": "weekly"}, ConfigError, "'on_change' or 'every_bar'"),
        ({"symbols": ["NOPE"]}, DataError, "NOPE"),
        ({"start_date": "2031-01-01"}, DataError, "no bars between 2031-01-01"),
        ({"start_date": "2020-02-01", "end_date": "2020-01-01"}, ConfigError, "after end_date"),
    ],
)
def test_user_errors_name_the_problem(kwargs, error, pattern):
    prices = make_prices([(10, 10, 10, 10)] * 3)
    with pytest.raises(error, match=pattern):
        run(prices, make_signal(prices, [1, 1, 1]), **kwargs)


def test_bad_signals_and_models_are_rejected():
    prices = make_prices([(10, 10, 10, 10)] * 3)
    with pytest.raises(DataError, match=re.escape("[-1, 1]")):
        run(prices, make_signal(prices, [2.0, 1.0, 1.0]))
    with pytest.raises(DataError, match="lack"):
        run(prices, make_signal(prices, [1.0, 1.0, 1.0]).rename("ZZZ"))

    class NetWithoutSignals:
        def forward(self, x):
            return x

        def __call__(self, x):
            return x

    with pytest.raises(ConfigError, match="predict_signals"):
        ENGINE.run_backtest(model=NetWithoutSignals(), prices=prices)


# --------------------------------------------------------------------------- metrics


def test_metrics_on_known_series():
    assert max_drawdown([100, 120, 90, 130]) == pytest.approx(-0.25)
    assert max_drawdown([100, 110, 120]) == 0.0
    assert max_drawdown_duration([100, 120, 90, 110, 130]) == 2
    assert max_drawdown_duration([100, 120, 90, 110]) == 2  # unrecovered run counts to the end
    assert max_drawdown_duration([1, 2, 3]) == 0
    assert cagr([100, 110, 121], periods_per_year=2) == pytest.approx(0.21)
    assert calmar_ratio([100, 120, 90, 130], periods_per_year=3) == pytest.approx(0.3 / 0.25)
    returns = np.array([0.01, -0.02, 0.03, 0.0])
    assert sharpe_ratio(returns) == pytest.approx(
        returns.mean() / returns.std(ddof=1) * math.sqrt(252)
    )
    downside = math.sqrt(np.mean(np.minimum(returns, 0) ** 2))
    assert sortino_ratio(returns) == pytest.approx(returns.mean() / downside * math.sqrt(252))
    assert m.annual_volatility(returns, 252) == pytest.approx(returns.std(ddof=1) * math.sqrt(252))
    assert sharpe_ratio([0.0, 0.0, 0.0]) == 0.0  # flat strategy scores 0, not nan
    assert sharpe_ratio([0.01, 0.01]) == math.inf
    assert math.isnan(sharpe_ratio([]))
    np.testing.assert_allclose(m.returns_from_equity([100, 110, 99]), [0.1, -0.1])
    np.testing.assert_allclose(m.equity_from_returns([0.1, -0.1], 100), [100, 110, 99])


def test_result_metrics_are_the_metric_functions_of_its_equity():
    prices, signal = _goog_crossover()
    res = run(prices, signal, transaction_costs=0.001)
    path = np.r_[res.initial_capital, res.equity.to_numpy()]
    assert res.max_drawdown == pytest.approx(max_drawdown(path))
    assert res.sharpe_ratio == pytest.approx(sharpe_ratio(res.returns.to_numpy()))
    assert res.total_return == pytest.approx(res.final_equity / res.initial_capital - 1)
    closed = res.trades[res.trades["exit_reason"] != "open"]
    assert res.win_rate == pytest.approx((closed["pnl"] > 0).mean())
    assert 0.9 < res.exposure <= 1.0  # always in the market after the first crossing


# --------------------------------------------------------------------------- report


def test_report_holds_every_strategy_and_embedded_charts(tmp_path):
    prices, signal = _goog_crossover()
    results = {
        "sma crossover": run(prices, signal, transaction_costs=0.001, name="sma crossover"),
        "long only": run(
            prices,
            signal.clip(lower=0),
            transaction_costs=0.001,
            stop_loss_pct=0.05,
            name="long only",
        ),
    }
    out = write_backtest_report(results, tmp_path / "sub" / "report.html", title="GOOG <test>")
    text = out.read_text()
    assert "sma crossover" in text and "long only" in text and "buy &amp; hold" in text
    assert "GOOG &lt;test&gt;" in text
    assert text.count("data:image/png;base64,") == 3
    assert "stop_loss" in text and "Sharpe" in text
    assert 'src="http' not in text  # self-contained
    single = write_backtest_report(results["long only"], tmp_path / "one.html")
    assert "long only" in single.read_text()
    with pytest.raises(ConfigError):
        write_backtest_report({}, tmp_path / "empty.html")
