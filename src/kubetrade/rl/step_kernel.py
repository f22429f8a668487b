"""The trading env's step as one numba kernel, and the layout of the arrays it reads.

:class:`~kubetrade.rl.env.TradingEnvironment` hoists its settings into a ``params`` vector and
its portfolio into a ``state`` vector (one array each, so the kernel takes few arguments:
numba's per-call dispatch cost grows with each argument it has to type-check).
"""

from __future__ import annotations

from math import sqrt

import numpy as np
from numba import njit

__all__ = [
    "CASH",
    "EQUITY",
    "MODE_LONG",
    "MODE_SHORT",
    "MODE_WEIGHTS",
    "PEAK",
    "SHARES",
    "step_kernel",
]

# Layout of the float64 state vector.
CASH, EQUITY, PEAK, PREV_DD, RET_SUM, RET_SQ, RET_COUNT = range(7)
SHARES = 7  # then n_assets shares, then n_assets cost bases
# Layout of the params vector: costs, caps, the four reward weights, the action mode.
MODE_LONG, MODE_SHORT, MODE_WEIGHTS = 0.0, 1.0, 2.0


@njit(cache=True)
def step_kernel(action, t, window, px, state, params, ret_buf, obs_buf, pcol):  # type: ignore[no-untyped-def]
    """One env step, fused: action -> weights -> fills -> costs -> equity -> reward -> obs row.

    A numba kernel because at a handful of assets the step is all per-call overhead (dozens of
    ~1 us numpy calls on 4-element arrays); compiled, the whole step costs about one call.
    The arithmetic (and its order) is that of the former numpy/Python step, so rewards match
    the golden trajectories. ``px[t]`` holds ``open, close, open*slippage, 1/open`` per asset.
    Returns ``ok`` = False (state untouched) when the action has NaNs, else the step's results.
    """
    n = px.shape[2]
    cost, slip, max_pos, max_gross = params[0], params[1], params[2], params[3]
    mode = params[8]
    target = np.empty(n)
    gross = 0.0
    for i in range(n):  # ActionMapper.from_continuous (NaN survives the clamps, as in numpy)
        a = float(action[i])
        if mode == 2.0:
            w = a
        elif mode == 1.0:
            w = a
            if w < -max_pos:
                w = -max_pos
            elif w > max_pos:
                w = max_pos
            gross += abs(w)
        else:
            w = (a + 1.0) * 0.5
            if w < 0.0:
                w = 0.0
            if w > max_pos:
                w = max_pos
            gross += w
        target[i] = w
    fills = np.empty(n)
    weights = np.empty(n)
    if not gross < np.inf:  # NaN slipped through
        return (False, obs_buf[0:0].copy(), target, weights, fills,
                0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # fmt: skip
    if mode != 2.0 and gross > max_gross:
        f = max_gross / gross
        for i in range(n):
            target[i] *= f

    nxt = t + 1
    row = px[nxt]
    # fill at the next bar's open, slipped against the trader, fee on traded notional
    equity_open = 0.0
    for i in range(n):
        equity_open += state[SHARES + i] * row[0, i]
    equity_open += state[CASH]
    # cost basis behind unrealised P&L: adds at the fill price, reductions pro rata, a flip or
    # a close restarts it
    at_open = abs_at_open = 0.0
    for i in range(n):
        o, o_slip = row[0, i], row[2, i]
        s = state[SHARES + i]
        d = target[i] * row[3, i] * equity_open - s
        f = o + o_slip if d > 0.0 else (o - o_slip if d < 0.0 else o)
        fills[i] = f
        at_open += d * o
        abs_at_open += d * o if d > 0.0 else -d * o
        b = SHARES + n + i
        if s * d >= 0.0:
            state[b] += d * f
        elif (s + d) * s > 0.0:
            state[b] *= (s + d) / s
        else:
            state[b] = (s + d) * f
        state[SHARES + i] = s + d
    traded = abs_at_open + slip * at_open  # = sum |delta| * fill
    fee = traded * cost
    slippage_cost = slip * abs_at_open
    cash = state[CASH] - (at_open + slippage_cost + fee)  # delta @ fill = at_open + slippage
    state[CASH] = cash

    # mark at the next bar's close; record the state the next observation shows
    held_value = basis = 0.0
    for i in range(n):
        h = state[SHARES + i] * row[1, i]
        weights[i] = h
        held_value += h
        basis += state[SHARES + n + i]
    equity = cash + held_value
    scale = 1.0 / equity if equity > 0.0 else 1.0
    out = obs_buf[nxt]
    for i in range(n):
        w = weights[i] * scale
        weights[i] = w
        out[pcol + i] = min(max(w, -10.0), 10.0)  # only near ruin
    out[pcol + n] = min(max(cash * scale, -10.0), 10.0)
    out[pcol + n + 1] = min(max((held_value - basis) * scale, -10.0), 10.0)

    # reward: see the module docstring
    ret = equity / state[EQUITY] - 1.0
    size = ret_buf.shape[0]
    count = int(state[RET_COUNT])
    k = count % size
    old = ret_buf[k]
    ret_buf[k] = ret
    state[RET_SUM] += ret - old
    state[RET_SQ] += ret * ret - old * old
    count += 1
    state[RET_COUNT] = count
    m = min(count, size)
    sharpe = 0.0
    if m >= 2:
        mean = state[RET_SUM] / m
        var = state[RET_SQ] / m - mean * mean
        sharpe = mean / sqrt(var) if var > 1e-16 else 0.0
    if equity > state[PEAK]:
        state[PEAK] = equity
    drawdown = 1.0 - equity / state[PEAK]
    prev_dd = state[PREV_DD]
    deepening = drawdown - prev_dd if drawdown > prev_dd else 0.0
    state[PREV_DD] = drawdown
    turnover = traded / equity_open if equity_open > 0.0 else 0.0
    reward = params[4] * ret - params[5] * deepening + params[6] * sharpe - params[7] * turnover
    state[EQUITY] = equity
    obs = obs_buf[nxt - window + 1 : nxt + 1].copy()
    return (True, obs, target, weights, fills,
            equity, ret, traded, fee, slippage_cost, turnover, drawdown, reward)  # fmt: skip
