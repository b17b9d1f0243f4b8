"""Typed configuration of the trading environment (the YAML ``env:`` section).

Load it with ``data.config.from_mapping(EnvConfig, yaml["env"], "env")``; every field has a
default, so an empty section gives the defaults below. Invalid values raise ``DataError`` (a
``ValueError``) with one sentence.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

from data.market import DataError

REWARDS: tuple[str, ...] = ("log_return", "dsr", "risk_adjusted")
#: Rules an action can tilt (``EnvConfig.action_prior``); "none" = the action is the target itself.
ACTION_PRIORS: tuple[str, ...] = ("none", "vol_target")
#: Reward coefficients renamed so they no longer read like SAC's temperature (alpha) or the discount (gamma).
RENAMED_KEYS: dict[str, str] = {
    "alpha": "return_weight", "beta": "vol_penalty", "gamma": "drawdown_penalty", "delta": "cost_penalty",
}


def env_section(raw: dict[str, Any]) -> dict[str, Any]:
    """The YAML ``env:`` mapping with the pre-rename keys (``alpha``, ``beta``, ``gamma``, ``delta``) moved to
    their names (``RENAMED_KEYS``) and one ``FutureWarning`` line per old key, so run directories written
    before the rename still load; an old key next to its new name is a ``DataError``."""
    out = dict(raw)
    for old, new in RENAMED_KEYS.items():
        if old not in out:
            continue
        if new in out:
            raise DataError(f"env.{old} is the old name of env.{new}; set only env.{new}")
        warnings.warn(f"env.{old} is deprecated: it is now env.{new}; rename it in the config", FutureWarning,
                      stacklevel=2)
        out[new] = out.pop(old)
    return out


@dataclass(frozen=True)
class EnvConfig:
    """Every knob of ``CryptoHedgeFundEnv`` / ``BatchedHedgeFundEnv``.

    Units: weights and thresholds are fractions of NAV (0.5 = 50%); rates are annual decimals
    (0.05 = 5% a year) applied per calendar day as ``rate / 365``; money is in the quote currency.

    Portfolio and episode
    - ``window``: days of features in an observation (the decision day and ``window - 1`` before it).
    - ``max_weight``: cap on each risky asset's post-trade weight (fraction of NAV); the excess goes to cash.
    - ``concentration_penalty``: ``c`` in ``reward -= c * sum_i w_i**2`` over post-trade risky weights.
    - ``episode_length``: decisions per episode; 0 runs from the random start to the end of the span.
    - ``initial_nav``: starting net asset value (currency); slippage depends on it through trade size.

    Rewards (``reward``): ``"log_return"`` = ``log(NAV_{t+1} / NAV_t)``; ``"dsr"`` = Moody & Saffell's
    differential Sharpe ratio of the simple return with EMA decay ``dsr_eta``; ``"risk_adjusted"`` =
    ``return_weight * log_return - vol_penalty * vol20 - drawdown_penalty * drawdown - cost_penalty * cost``
    with ``vol20`` the sample
    standard deviation of the last ``vol_window`` daily log returns (daily units), ``drawdown`` =
    ``1 - NAV / peak NAV`` and ``cost`` = fee + slippage as a fraction of the pre-trade NAV.

    Costs
    - ``cost_scale``: multiplies every fee and slippage rate (0 = frictionless).
    - ``slippage``: switch the square-root impact term on or off.
    - ``adv_window``: days in the trailing average daily dollar volume used by the impact rule.

    Drawdown control (``drawdown_control``): before a trade, if the annualised realised volatility
    (``vol20 * sqrt(365)``) exceeds ``dd_vol_threshold`` or the drawdown exceeds ``dd_threshold``,
    the tradable risky target weights are multiplied by ``dd_scale`` and the rest goes to cash.

    Margin (``margin``): risky weights are ``max_leverage`` times the action's risky share, the
    cash leg goes negative (borrowed) and pays ``borrow_rate``; positive cash earns ``cash_rate``.
    When equity falls strictly below ``maintenance_margin`` times gross exposure, every position
    is closed at a penalty of ``liquidation_penalty`` times gross exposure and the episode terminates.

    Residual policy (``action_prior``): ``"none"`` (default) takes the action as the target. With
    ``"vol_target"`` the action is a multiplicative tilt of a rule's weights ``p_t`` (N+1,): the scores
    handed to the cap and margin steps are ``a * p_t``, so the uniform action (a latent of zeros) trades
    to ``p_t`` itself and the agent learns only a departure from the rule. ``p_t`` = ``(1 - prior_floor)``
    times the vol-targeted equal weight of ``environments.action_prior.vol_target_weights`` (annual target
    ``prior_vol_target``, trailing ``prior_lookback`` days, known at t's close; the function the backtester's
    vol-target benchmark calls) plus ``prior_floor`` spread evenly over the listed assets and cash, so that
    every position stays reachable.
    """

    window: int = 60
    max_weight: float = 0.5
    concentration_penalty: float = 0.0
    episode_length: int = 0
    reward: str = "log_return"
    dsr_eta: float = 0.01
    return_weight: float = 1.0
    vol_penalty: float = 0.1
    drawdown_penalty: float = 0.1
    cost_penalty: float = 1.0
    cost_scale: float = 1.0
    slippage: bool = True
    adv_window: int = 20
    vol_window: int = 20
    drawdown_control: bool = False
    dd_vol_threshold: float = 1.0
    dd_threshold: float = 0.25
    dd_scale: float = 0.5
    margin: bool = False
    max_leverage: float = 2.0
    borrow_rate: float = 0.08
    maintenance_margin: float = 0.25
    liquidation_penalty: float = 0.05
    cash_rate: float = 0.0
    initial_nav: float = 1_000_000.0
    action_prior: str = "none"
    prior_vol_target: float = 0.20
    prior_lookback: int = 60
    prior_floor: float = 0.02

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise DataError(f"env.{msg}")

        for name in ("window", "episode_length", "adv_window", "vol_window", "prior_lookback"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                bad(f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in (
            "max_weight", "concentration_penalty", "dsr_eta", "return_weight", "vol_penalty", "drawdown_penalty",
            "cost_penalty",
            "cost_scale", "dd_vol_threshold", "dd_threshold", "dd_scale", "max_leverage",
            "borrow_rate", "maintenance_margin", "liquidation_penalty", "cash_rate", "initial_nav",
            "prior_vol_target", "prior_floor",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                bad(f"{name} must be a finite number, got {value!r}")
        if self.window < 1:
            bad(f"window must be at least 1, got {self.window}")
        if self.episode_length < 0:
            bad(f"episode_length must be 0 (to the end) or positive, got {self.episode_length}")
        if self.adv_window < 1 or self.vol_window < 2:
            bad("adv_window must be >= 1 and vol_window >= 2")
        if self.reward not in REWARDS:
            bad(f"reward must be one of {', '.join(REWARDS)}, got '{self.reward}'")
        if not 0.0 < self.dsr_eta < 1.0:
            bad(f"dsr_eta must be in (0, 1), got {self.dsr_eta}")
        if self.max_leverage < 1.0:
            bad(f"max_leverage must be at least 1, got {self.max_leverage}")
        cap_limit = self.leverage
        if not 0.0 < self.max_weight <= cap_limit:
            bad(f"max_weight must be in (0, {cap_limit:g}], got {self.max_weight}")
        for name in ("concentration_penalty", "cost_scale", "borrow_rate", "liquidation_penalty",
                     "dd_vol_threshold", "dd_threshold"):
            if getattr(self, name) < 0:
                bad(f"{name} must be non-negative, got {getattr(self, name)}")
        if not 0.0 <= self.dd_scale <= 1.0:
            bad(f"dd_scale must be in [0, 1], got {self.dd_scale}")
        if not 0.0 <= self.maintenance_margin < 1.0:
            bad(f"maintenance_margin must be in [0, 1), got {self.maintenance_margin}")
        if self.initial_nav <= 0:
            bad(f"initial_nav must be positive, got {self.initial_nav}")
        if self.action_prior not in ACTION_PRIORS:
            bad(f"action_prior must be one of {', '.join(ACTION_PRIORS)}, got '{self.action_prior}'")
        if self.prior_vol_target <= 0:
            bad(f"prior_vol_target must be positive, got {self.prior_vol_target}")
        if self.prior_lookback < 5:
            bad(f"prior_lookback must be at least 5 days, got {self.prior_lookback}")
        if not 0.0 < self.prior_floor <= 1.0:
            bad(f"prior_floor must be in (0, 1], got {self.prior_floor}")

    @property
    def prior_rows(self) -> int:
        """Days of prices the action prior reads for one decision (``prior_lookback`` returns need one more
        close); 0 without a prior. Servers keep at least this many rows of market state."""
        return self.prior_lookback + 1 if self.action_prior != "none" else 0

    @property
    def leverage(self) -> float:
        """Gross leverage the action can reach: ``max_leverage`` with margin on, else 1."""
        return float(self.max_leverage) if self.margin else 1.0
