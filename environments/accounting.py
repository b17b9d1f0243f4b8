"""The step kernel: exact portfolio accounting for M portfolios in one vectorised numpy call.

Both ``CryptoHedgeFundEnv`` (M = 1) and ``BatchedHedgeFundEnv`` (M portfolios) call
``step_portfolios``; there is no other accounting code, so the two agree to the last bit.

Conventions (shapes: M portfolios, N risky assets, slot N is the cash leg):

- Weights are fractions of NAV, shape (M, N+1), summing to 1. Long-only without margin; with
  margin the cash slot may be negative (borrowed money).
- Day t's decision is taken after t's close. Trades execute at t's close, then the portfolio earns
  ``returns[t]`` (close t -> close t+1), weights drift, and the next decision happens at t+1.

One step, in order:

1. **Action -> simplex.** ``x = a / a.sum()`` (an all-zero action means all cash). With an action
   prior (``MarketArrays.prior``) the scores are ``a * prior[t]`` instead of ``a``.
2. **Closed assets.** An asset that is not tradable on day t (market closed, or not listed yet)
   keeps its drifted weight ``w_i`` (0 if unlisted). The action's share on tradable assets and cash
   is rescaled to fill the remaining budget ``1 - sum_closed w_i / L``: ``target_j = L * x_j *
   budget / sum_{tradable or cash} x`` for tradable risky j, where ``L`` is the leverage (1 without
   margin). The map is the identity on a simplex action whose closed entries already equal ``w / L``.
3. **Drawdown control.** If on and realised volatility (annualised) or drawdown is above its
   threshold, tradable risky targets are multiplied by ``dd_scale``.
4. **Cap.** Tradable risky targets are clipped at ``max_weight``; cash absorbs everything left:
   ``cash = 1 - sum_i target_i``.
5. **Costs.** With ``d_i = |target_i - w_i| * NAV`` the traded notional (currency):
   ``fee = sum_i fee_rate_i * d_i`` and ``slippage = sum_i slip_rate_i * d_i * sqrt(d_i / (0.01 * ADV_i))``
   (square-root impact: the slippage rate equals ``slip_rate_i`` for a trade of 1% of the average
   daily dollar volume ``ADV_i`` and grows with the square root of the trade's size; where ADV is
   unknown (0) the rate is the flat ``slip_rate_i``). Costs are paid pro rata out of the
   post-trade holdings, so post-trade weights equal the targets exactly and
   ``NAV_post = NAV - fee - slippage``.
6. **Returns and drift.** Holdings ``h_i = target_i * NAV_post * (1 + r_i)``; cash earns
   ``cash_rate / 365`` per day when positive and pays ``borrow_rate / 365`` when negative.
   ``NAV_{t+1} = sum h``; new weights ``h / NAV_{t+1}``.
7. **Margin.** With margin on, if ``NAV_{t+1} < maintenance_margin * sum_i |h_i|`` every position is
   closed, ``liquidation_penalty * sum_i |h_i|`` is charged, and the episode terminates. A NAV at or
   below 0 (any mode) is bankruptcy: NAV is floored at 0 and the episode terminates.
8. **Reward** (see ``environments.rewards``) minus ``concentration_penalty * sum_i target_i**2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from environments.config import EnvConfig
from environments.rewards import differential_sharpe, rolling_vol

#: Intervention bit flags reported per portfolio per step; ``decode_flags`` turns them into names.
#: Holding a closed asset is the rule, not an intervention (policies give closed assets no score).
WEIGHT_CAP, DRAWDOWN_CONTROL, LIQUIDATION, BANKRUPTCY = 1, 2, 4, 8
FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (WEIGHT_CAP, "weight_cap"),
    (DRAWDOWN_CONTROL, "drawdown_control"),
    (LIQUIDATION, "liquidation"),
    (BANKRUPTCY, "bankruptcy"),
)
_TOL = 1e-12
_sum = np.add.reduce
_max = np.maximum.reduce
_min = np.minimum.reduce
DAYS_PER_YEAR = 365.0


def decode_flags(flags: int) -> list[str]:
    """Names of the interventions set in one portfolio's ``flags`` integer."""
    return [name for bit, name in FLAG_NAMES if int(flags) & bit]


@dataclass(frozen=True)
class MarketArrays:
    """What the kernel reads from the market, all indexed by day t on axis 0.

    - ``returns`` (T, N) float64: simple return close t -> t+1 (0 where unlisted or unknown).
    - ``tradable`` (T, N) bool: the asset can be traded at t's close.
    - ``adv`` (T, N) float64: trailing average daily dollar volume up to day t (0 = unknown).
    - ``fee_rate`` (N,) float64: fee as a fraction of traded notional (10 bps = 0.001).
    - ``slip_rate`` (N,) float64: slippage fraction for a trade of 1% of ADV.
    - ``prior`` (T, N+1) float64 or None: the rule a residual policy tilts (``environments.action_prior``);
      when set, day t's action ``a`` becomes the scores ``a * prior[t]`` before the target step.

    Derived once at construction, so that a step gathers one block per portfolio: ``day_rows`` (T, 5, N)
    holds, per day, the tradable mask as 1.0/0.0 (``OPEN``), its complement (``CLOSED``), ``1 +
    returns`` (``GROWTH``), ``slip_rate / sqrt(0.01 * adv)`` (``SLIP_SQRT``, 0 where ADV is unknown)
    and ``slip_rate`` where ADV is unknown, else 0 (``SLIP_FLAT``); ``any_closed`` (T,) marks days on
    which some asset cannot trade.
    """

    returns: np.ndarray
    tradable: np.ndarray
    adv: np.ndarray
    fee_rate: np.ndarray
    slip_rate: np.ndarray
    prior: np.ndarray | None = None
    day_rows: np.ndarray = field(init=False, repr=False)
    any_closed: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        known = self.adv > 0
        rows = np.stack([
            self.tradable.astype(np.float64),
            (~self.tradable).astype(np.float64),
            1.0 + self.returns,
            np.where(known, self.slip_rate / np.sqrt(np.where(known, 0.01 * self.adv, 1.0)), 0.0),
            np.where(known, 0.0, self.slip_rate),
        ], axis=1)
        object.__setattr__(self, "day_rows", rows)
        object.__setattr__(self, "any_closed", ~self.tradable.all(axis=1))


OPEN, CLOSED, GROWTH, SLIP_SQRT, SLIP_FLAT = range(5)


@dataclass
class PortfolioState:
    """State of M portfolios between two decisions (after the drift to day t's close).

    ``nav`` (M,) currency; ``weights`` (M, N+1) fractions of NAV, cash last; ``peak`` (M,) highest NAV
    so far; ``log_returns`` (M, K) the last K daily log returns, newest last; ``n_returns`` (M,) how
    many of those are real (<= K), both maintained only when read (drawdown control or the
    risk-adjusted reward); ``dsr_a``/``dsr_b`` (M,) the EMAs of return and squared return.
    """

    nav: np.ndarray
    weights: np.ndarray
    peak: np.ndarray
    log_returns: np.ndarray
    n_returns: np.ndarray
    dsr_a: np.ndarray
    dsr_b: np.ndarray

    @classmethod
    def initial(cls, navs: np.ndarray, weights: np.ndarray, vol_window: int) -> PortfolioState:
        """Fresh portfolios with NAV ``navs`` (M,) and weights (M, N+1); no return history."""
        m = navs.shape[0]
        return cls(
            nav=np.asarray(navs, dtype=np.float64).copy(),
            weights=np.asarray(weights, dtype=np.float64).copy(),
            peak=np.asarray(navs, dtype=np.float64).copy(),
            log_returns=np.zeros((m, vol_window)),
            n_returns=np.zeros(m, dtype=np.int64),
            dsr_a=np.zeros(m),
            dsr_b=np.zeros(m),
        )

    def replace_rows(self, rows: np.ndarray, other: PortfolioState) -> None:
        """Overwrite portfolios ``rows`` (bool mask (M,)) with those of ``other`` (same M)."""
        for name in ("nav", "weights", "peak", "log_returns", "n_returns", "dsr_a", "dsr_b"):
            getattr(self, name)[rows] = getattr(other, name)[rows]


class StepOutcome(NamedTuple):
    """Per-portfolio results of one step; every field has leading shape (M,).

    ``target`` (M, N+1) post-trade weights; ``fee``/``slippage`` currency; ``turnover`` sum of
    |risky weight change| (fraction of NAV); ``log_return`` log(NAV_{t+1}/NAV_t); ``drawdown`` 1 - NAV/peak; ``gross_leverage`` sum |risky
    weights| after drift; ``terminated`` liquidation or bankruptcy. Interventions, bool (M,) or
    None where the feature is off: ``capped``, ``dd_active``, ``liquidated``, ``bankrupt``.
    ``flags()`` packs
    them into bits, ``interventions(i)`` names those of portfolio i.
    """

    reward: np.ndarray
    target: np.ndarray
    fee: np.ndarray
    slippage: np.ndarray
    turnover: np.ndarray
    log_return: np.ndarray
    drawdown: np.ndarray
    gross_leverage: np.ndarray
    terminated: np.ndarray
    capped: np.ndarray
    dd_active: np.ndarray | None
    liquidated: np.ndarray | None
    bankrupt: np.ndarray

    def flags(self) -> np.ndarray:
        """Intervention bits (M,) int64 (see ``FLAG_NAMES``)."""
        bits = np.zeros(self.reward.shape[0], dtype=np.int64)
        for bit, mask in ((WEIGHT_CAP, self.capped), (DRAWDOWN_CONTROL, self.dd_active),
                          (LIQUIDATION, self.liquidated),
                          (BANKRUPTCY, self.bankrupt)):
            if mask is not None:
                bits |= mask * bit
        return bits

    def interventions(self, i: int) -> list[str]:
        """Names of portfolio ``i``'s interventions this step, in ``FLAG_NAMES`` order."""
        names = []
        if self.capped[i]:
            names.append("weight_cap")
        if self.dd_active is not None and self.dd_active[i]:
            names.append("drawdown_control")
        if self.liquidated is not None and self.liquidated[i]:
            names.append("liquidation")
        if self.bankrupt[i]:
            names.append("bankruptcy")
        return names


def check_actions(actions: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Validate raw actions and return them as float64; raise ``ValueError`` with one sentence.

    Actions must have ``shape`` and hold finite, non-negative numbers. Nothing is repaired.
    """
    try:
        arr = np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"action must be an array of numbers with shape {shape}") from None
    if arr.shape != shape:
        raise ValueError(f"action must have shape {shape}, got {arr.shape}")
    low, high = _min(arr, None), _max(arr, None)
    if not (low >= 0 and high < np.inf):  # one test catches NaN, +-inf and negatives
        if not np.isfinite(arr).all():
            raise ValueError("action contains NaN or infinite values")
        raise ValueError("action contains negative values; actions are non-negative portfolio scores")
    return arr


def target_weights(
    actions: np.ndarray, weights: np.ndarray, open_f: np.ndarray | None, closed_f: np.ndarray | None,
    leverage: float, max_weight: float, risky_scale: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-4 of the module docstring: actions (M, N+1) -> ``(target (M, N+1), capped (M,))``.

    ``weights`` (M, N+1) are the current drifted weights; ``open_f``/``closed_f`` (M, N) the day's
    tradable mask as 1.0/0.0 and its complement, or both None when every asset can trade;
    ``risky_scale`` (M,) the drawdown-control factor (None = no scaling). Scores need not be
    normalised first: with ``s = a.sum()`` the share of a tradable asset is ``(a_j / s) * budget /
    (sum_open a / s)`` = ``a_j * budget / sum_open a``, so ``s`` cancels; a row with no open score
    (e.g. all zeros) keeps its whole budget in cash. ``capped``: a tradable weight hit the cap.
    """
    n = weights.shape[1] - 1
    if closed_f is None:
        held = None
        open_a = actions[:, :n]
        open_sum = _sum(actions, 1)
        factor = None if leverage == 1.0 else np.full(actions.shape[0], leverage)
    else:
        held = weights[:, :n] * closed_f
        held_sum = _sum(held, 1)
        open_a = actions[:, :n] * open_f
        open_sum = _sum(open_a, 1) + actions[:, n]
        if leverage == 1.0:
            factor = 1.0 - held_sum
        else:
            factor = np.maximum(1.0 - held_sum / leverage, 0.0) * leverage
    if risky_scale is not None:
        factor = risky_scale if factor is None else factor * risky_scale
    target = np.empty_like(weights)
    risky = target[:, :n]
    # Scores summing to less than 1e-300 count as (nearly) nothing: no overflow, the rest stays in cash.
    scale = (1.0 if factor is None else factor) / np.maximum(open_sum, 1e-300)
    np.multiply(open_a, scale[:, None], out=risky)
    capped = _max(risky, 1) > max_weight + _TOL
    np.minimum(risky, max_weight, out=risky)
    if held is not None:
        risky += held
    if leverage == 1.0:  # long-only: clip the -1e-16 a rounded sum can leave
        np.maximum(1.0 - _sum(risky, 1), 0.0, out=target[:, n])
    else:
        np.subtract(1.0, _sum(risky, 1), out=target[:, n])
    return target, capped


def step_portfolios(
    state: PortfolioState, actions: np.ndarray, t: np.ndarray, market: MarketArrays, cfg: EnvConfig,
) -> tuple[PortfolioState, StepOutcome]:
    """Advance M portfolios from day ``t`` (M,) int to ``t + 1``; see the module docstring.

    ``actions`` (M, N+1) must already have passed ``check_actions``. Returns the new state (new
    arrays; ``state`` is not modified) and the step's outcome.
    """
    n = market.fee_rate.shape[0]
    nav = state.nav
    weights = state.weights
    single = t.shape[0] == 1
    if single:  # a slice is a view: cheaper than a gather for the single env
        day = int(t[0])
        rows, any_closed = market.day_rows[day : day + 1], market.any_closed[day]
    else:
        rows, any_closed = market.day_rows[t], market.any_closed[t].any()
    open_f, closed_f = (rows[:, OPEN], rows[:, CLOSED]) if any_closed else (None, None)
    if market.prior is not None:
        actions = actions * (market.prior[day : day + 1] if single else market.prior[t])

    if cfg.drawdown_control:
        vol = rolling_vol(state.log_returns, state.n_returns)
        active = (vol * np.sqrt(DAYS_PER_YEAR) > cfg.dd_vol_threshold) | (1.0 - nav / state.peak > cfg.dd_threshold)
        scale = 1.0 - active * (1.0 - cfg.dd_scale)
    else:
        active = scale = None
    target, capped = target_weights(actions, weights, open_f, closed_f, cfg.leverage, cfg.max_weight, scale)

    # Costs on traded notional (currency).
    risky = target[:, :n]
    change = np.abs(risky - weights[:, :n])
    turnover = _sum(change, 1)
    traded = change * nav[:, None]
    fee = _sum(traded * market.fee_rate, 1)  # row-wise reductions: same bits for any M (no BLAS)
    if cfg.slippage and cfg.cost_scale > 0:
        # slip_i * d_i * sqrt(d_i / (0.01 ADV_i)) = d_i * (sqrt(d_i) * SLIP_SQRT_i + SLIP_FLAT_i)
        slippage = _sum(traded * (np.sqrt(traded) * rows[:, SLIP_SQRT] + rows[:, SLIP_FLAT]), 1)
    else:
        slippage = np.zeros_like(fee)
    if cfg.cost_scale != 1.0:
        fee *= cfg.cost_scale
        slippage *= cfg.cost_scale
    cost = fee + slippage
    nav_post = nav - cost

    # Returns and drift.
    holdings = target * nav_post[:, None]
    holdings[:, :n] *= rows[:, GROWTH]
    if cfg.margin:
        cash_rate = np.where(target[:, n] >= 0, cfg.cash_rate, cfg.borrow_rate)
        holdings[:, n] *= 1.0 + cash_rate / DAYS_PER_YEAR
    elif cfg.cash_rate:
        holdings[:, n] *= 1.0 + cfg.cash_rate / DAYS_PER_YEAR
    nav_new = _sum(holdings, 1)

    terminated = nav_new <= 0.0  # bankruptcy
    if cfg.margin:
        gross_notional = _sum(np.abs(holdings[:, :n]), 1)
        liquidated = ~terminated & (nav_new < cfg.maintenance_margin * gross_notional)
        nav_new = nav_new - liquidated * (cfg.liquidation_penalty * gross_notional)
        bankrupt = nav_new <= 0.0
        terminated = liquidated | bankrupt
    else:
        liquidated, bankrupt = None, terminated
    if terminated[0] if single else terminated.any():
        nav_new = np.maximum(nav_new, 0.0)
        weights_new = holdings / np.where(terminated, 1.0, nav_new)[:, None]
        weights_new[terminated] = 0.0
        weights_new[terminated, n] = 1.0
        ratio = np.maximum(nav_new / nav, 1e-6)
    else:
        weights_new = holdings / nav_new[:, None]
        ratio = nav_new / nav
    gross_leverage = _sum(np.abs(weights_new[:, :n]), 1) if cfg.margin else 1.0 - weights_new[:, n]

    # Bookkeeping for rewards and risk.
    log_ret = np.log(ratio)
    peak = np.maximum(state.peak, nav_new)
    drawdown = 1.0 - nav_new / peak
    if cfg.drawdown_control or cfg.reward == "risk_adjusted":  # the only readers of the return history
        log_returns = np.empty_like(state.log_returns)
        log_returns[:, :-1] = state.log_returns[:, 1:]
        log_returns[:, -1] = log_ret
        n_returns = np.minimum(state.n_returns + 1, log_returns.shape[1])
    else:
        log_returns, n_returns = state.log_returns, state.n_returns

    dsr_a, dsr_b = state.dsr_a, state.dsr_b
    if cfg.reward == "log_return":
        reward = log_ret
    elif cfg.reward == "dsr":
        reward, dsr_a, dsr_b = differential_sharpe(ratio - 1.0, dsr_a, dsr_b, cfg.dsr_eta)
    else:
        vol_new = rolling_vol(log_returns, n_returns)
        reward = (cfg.return_weight * log_ret - cfg.vol_penalty * vol_new - cfg.drawdown_penalty * drawdown
                  - cfg.cost_penalty * (cost / nav))
    if cfg.concentration_penalty:
        reward = reward - cfg.concentration_penalty * _sum(risky * risky, 1)

    new_state = PortfolioState(nav_new, weights_new, peak, log_returns, n_returns, dsr_a, dsr_b)
    outcome = StepOutcome(  # positional, in field order
        reward, target, fee, slippage, turnover, log_ret, drawdown, gross_leverage, terminated, capped,
        active, liquidated, bankrupt,
    )
    return new_state, outcome
