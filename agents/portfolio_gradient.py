"""Direct portfolio-gradient training of a deterministic allocation policy (the signal EIIE trains on).

The market does not react to the agent: the one-day outcome of *any* weights on *any* past day is known
exactly, and the day's net growth is a differentiable function of the weights. So a policy
``obs (B, obs_dim) -> weights (B, N+1)`` (e.g. ``PPOAgent.policy_module()``) can be trained by gradient
ascent on

    J = mean over sampled (day t, current weights w) of  log(1 + w'.r_{t+1} - cost(w' - w))
        - risk_aversion * var(log growth) - downside * mean(min(log growth, 0)^2)

or, with ``sharpe``, the batch's Sharpe ratio of the same log growths in excess of the cash leg's,
``mean(g - g_cash) / std(g)``: scale-free, so it does not reward a higher or lower average exposure, only
holding more on the days that pay more per unit of risk (timing).

where ``w' = policy(obs(t, w))`` after the environment's own closed-asset and cap rules, and the cost is
the fee + slippage rate per asset times the traded fraction of NAV (the env's square-root slippage is
replaced by its flat rate, the rate for a trade of 1% of ADV). Current weights are sampled around equal
weight, cash and random mixes, then carried along short rolled-out trajectories (``rollout`` consecutive
days, the weights drifting with the market between decisions; the previous weights are constants, as in
EIIE's portfolio-vector memory). Windows are rebuilt from day indices (``IndexReplayBuffer``), never copied
per sample.

Units: ``returns`` simple daily returns close t -> t+1; weights fractions of NAV (cash last); the
objective is in daily log growth. Day ``t`` only ever sees its own observation window (data up to t's
close) and the objective uses ``returns[t]``; training days are limited to ``[first, last)`` so that no
return after ``last`` (the training span's end) is read.

Use :func:`warm_start` to pre-train a PPO agent's actor before PPO's own training (``agent.train``), or
:func:`train_policy` on any policy module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from agents.common import ObsLayout
from agents.replay_buffer import IndexReplayBuffer
from environments.accounting import DAYS_PER_YEAR  # the env's accrual convention for the cash leg


@dataclass(frozen=True)
class PortfolioGradientConfig:
    """Hyper-parameters of :func:`train_policy`.

    - ``steps``: gradient steps; ``batch_days`` start days per step; ``rollout`` consecutive decisions per
      start (so ``batch_days * rollout`` scored decisions per step).
    - ``learning_rate`` (Adam), ``max_grad_norm`` (global-norm clipping).
    - ``risk_aversion``: weight of the variance of the scored daily log growths; ``downside``: weight of
      their mean squared negative part (both 0 = pure log growth, Kelly).
    - ``sharpe``: maximise the batch's Sharpe ratio of daily log growth in excess of the cash leg instead
      (:func:`objective`); ``risk_aversion`` and ``downside`` must then be 0.
    - ``turnover_penalty``: extra cost per unit of turnover (fraction of NAV) charged in training only, on
      top of the real cost rates (a cost curriculum against churning on daily noise).
    - ``holdout_days``: the last ``holdout_days`` days of the span are not trained on; every
      ``eval_every`` steps (and before the first) the objective from equal weight on every holdout day is
      measured (real costs, no ``turnover_penalty``) and the best parameters are kept (early stopping
      inside the training span; 0 = off).
    - ``feature_noise``: std of Gaussian noise added to the (normalised) feature windows of the trained
      observations (augmentation; 0 = off); ``weight_decay``: AdamW's decoupled weight decay.
    - ``seed``: sampling of days, starting weights and noise.
    """

    steps: int = 300
    batch_days: int = 32
    rollout: int = 4
    learning_rate: float = 1e-3
    max_grad_norm: float = 1.0
    risk_aversion: float = 0.0
    downside: float = 0.0
    sharpe: bool = False
    turnover_penalty: float = 0.0
    holdout_days: int = 0
    eval_every: int = 25
    feature_noise: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_days", "rollout"):
            if getattr(self, name) < 1:
                raise ValueError(f"PortfolioGradientConfig.{name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or not self.max_grad_norm > 0:
            raise ValueError("PortfolioGradientConfig.learning_rate and max_grad_norm must be positive")
        if min(self.risk_aversion, self.downside, self.turnover_penalty, self.holdout_days, self.feature_noise,
               self.weight_decay) < 0:
            raise ValueError("PortfolioGradientConfig.risk_aversion, downside, turnover_penalty and "
                             "holdout_days must be non-negative")
        if self.sharpe and (self.risk_aversion or self.downside):
            raise ValueError("PortfolioGradientConfig.sharpe is scale-free: risk_aversion and downside must be 0 with it")
        if self.eval_every < 1:
            raise ValueError(f"PortfolioGradientConfig.eval_every must be at least 1, got {self.eval_every}")


class MarketTape(NamedTuple):
    """What the objective reads, indexed by day on axis 0 (T days, N assets, F features).

    - ``features`` (T, N, F) float32: the normalised feature array the env observes.
    - ``returns`` (T, N) float64: simple return close t -> t+1.
    - ``tradable`` (T, N) bool: the asset can be traded at t's close.
    - ``cost_rate`` (N,) float64: fee + slippage as a fraction of traded notional.
    - ``first``, ``last``: decisions on days ``first .. last - 1`` (``first >= window - 1``).
    - ``max_weight``: per-asset cap (the excess goes to cash); ``cash_rate``: annual rate earned by cash.
    - ``prior`` (T, N+1) or None: the env's action prior (``EnvConfig.action_prior``); when set the policy's
      weights are scores multiplied by ``prior[t]`` before the env's rules, as the env does.
    """

    features: np.ndarray
    returns: np.ndarray
    tradable: np.ndarray
    cost_rate: np.ndarray
    first: int
    last: int
    max_weight: float
    cash_rate: float = 0.0
    prior: np.ndarray | None = None


def tape_from_core(core: Any, last: int | None = None) -> MarketTape:
    """A :class:`MarketTape` from an env's ``core`` (duck-typed: ``features``, ``market.returns``,
    ``market.tradable``, ``market.fee_rate``, ``market.slip_rate``, ``first``, ``last``, ``cfg``).

    ``last`` (optional) ends the span earlier. The cost rate is ``cost_scale * (fee + slip)`` with
    slippage only when ``cfg.slippage``.
    """
    cfg, market = core.cfg, core.market
    slip = market.slip_rate if getattr(cfg, "slippage", True) else np.zeros_like(market.slip_rate)
    rate = float(getattr(cfg, "cost_scale", 1.0)) * (np.asarray(market.fee_rate) + np.asarray(slip))
    end = int(core.last) if last is None else min(int(last), int(core.last))
    return MarketTape(core.features, np.asarray(market.returns, np.float64), np.asarray(market.tradable, bool),
                      rate.astype(np.float64), int(core.first), end, float(cfg.max_weight),
                      float(getattr(cfg, "cash_rate", 0.0)), getattr(market, "prior", None))


def env_targets(action: torch.Tensor, prev: torch.Tensor, open_: torch.Tensor, max_weight: float) -> torch.Tensor:
    """The env's post-trade weights (B, N+1) for simplex ``action`` (B, N+1) from drifted ``prev`` (B, N+1).

    Closed risky assets (``open_`` (B, N) == 0) keep their drifted weight; the action's share on open assets
    and cash fills the rest of the budget; open risky weights are clipped at ``max_weight`` and cash takes
    the remainder (``environments.accounting`` steps 1, 2 and 4, no margin, no drawdown control).
    """
    n = open_.shape[1]
    open1 = torch.cat([open_, torch.ones_like(open_[:, :1])], dim=1)
    closed_w = prev[:, :n] * (1.0 - open_)
    budget = 1.0 - closed_w.sum(dim=1, keepdim=True)
    share = (action * open1).sum(dim=1, keepdim=True).clamp_min(1e-12)
    free = action * open1 * budget / share
    risky = torch.minimum(free[:, :n], torch.full_like(free[:, :n], max_weight)) * open_ + closed_w
    cash = 1.0 - risky.sum(dim=1, keepdim=True)
    return torch.cat([risky, cash], dim=1)


def step_growth(target: torch.Tensor, prev: torch.Tensor, returns: torch.Tensor, cost_rate: torch.Tensor,
                cash_rate: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Daily log growth (B,) and drifted next weights (B, N+1) of post-trade ``target`` (B, N+1).

    ``cost = sum_i cost_rate_i |target_i - prev_i|`` (fraction of NAV, paid pro rata);
    ``growth = (1 - cost) * (sum_i target_i (1 + r_i) + cash (1 + cash_rate / 365))``.
    """
    n = returns.shape[1]
    cost = ((target[:, :n] - prev[:, :n]).abs() * cost_rate).sum(dim=1)
    gross = torch.cat([1.0 + returns, torch.full_like(returns[:, :1], 1.0 + cash_rate / DAYS_PER_YEAR)], dim=1)
    hold = target * gross
    value = hold.sum(dim=1)
    growth = (1.0 - cost) * value
    return torch.log(growth.clamp_min(1e-12)), hold / value.clamp_min(1e-12).unsqueeze(1)


def held_assets(tape: MarketTape, days: np.ndarray) -> np.ndarray:
    """(B, N) bool: assets tradable on one of the 4 days up to each of ``days`` (ETFs held over weekends)."""
    held = np.zeros((days.shape[0], tape.returns.shape[1]), bool)
    for lag in range(4):
        held |= tape.tradable[np.maximum(days - lag, 0)]
    return held


def start_weights(tape: MarketTape, days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Starting weights (B, N+1) for ``days``: a third equal weight, a third cash, a third Dirichlet(1)
    mixes, over the :func:`held_assets` and cash."""
    b, n = days.shape[0], tape.returns.shape[1]
    held = held_assets(tape, days)
    held1 = np.concatenate([held, np.ones((b, 1), bool)], axis=1)
    kind = rng.integers(0, 3, size=b)
    mix = rng.gamma(1.0, size=(b, n + 1)) * held1
    ew = held1.astype(np.float64)
    cash = np.zeros((b, n + 1))
    cash[:, -1] = 1.0
    w = np.where(kind[:, None] == 0, ew, np.where(kind[:, None] == 1, cash, mix))
    return w / w.sum(axis=1, keepdims=True)


#: Added to the batch's standard deviation in the Sharpe objective (a batch of all-cash days has none).
SHARPE_EPS = 1e-8


def objective(log_growth: torch.Tensor, risk_aversion: float = 0.0, downside: float = 0.0,
              sharpe: bool = False, cash_log_growth: float = 0.0) -> torch.Tensor:
    """``mean(g) - risk_aversion * var(g) - downside * mean(min(g, 0)^2)`` of daily log growths ``g`` (K,);
    with ``sharpe``, ``mean(g - cash_log_growth) / (std(g) + SHARPE_EPS)`` (population std; daily, not
    annualised). Differentiable in ``g``."""
    if sharpe:
        return (log_growth - cash_log_growth).mean() / (log_growth.std(unbiased=False) + SHARPE_EPS)
    j = log_growth.mean()
    if risk_aversion:
        j = j - risk_aversion * log_growth.var(unbiased=False)
    if downside:
        j = j - downside * (torch.clamp(log_growth, max=0.0) ** 2).mean()
    return j


def rollout_growth(policy: nn.Module, tape: MarketTape, builder: IndexReplayBuffer, days: np.ndarray,
                   w0: np.ndarray, rollout: int, extra_cost: float = 0.0, noise: float = 0.0,
                   rng: np.random.Generator | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Log growths (B * rollout,) of ``policy`` from ``days`` (B,) with weights ``w0`` (B, N+1), and the
    post-trade weights (B, rollout, N+1) as numpy (for diagnostics). ``extra_cost`` is added to every
    asset's cost rate; ``noise`` > 0 adds N(0, noise^2) to the feature windows (``rng`` draws it)."""
    fd = builder.layout.feature_dim
    cost_rate = torch.as_tensor(tape.cost_rate + extra_cost, dtype=torch.float32)
    prev = torch.as_tensor(w0, dtype=torch.float32)
    out, targets = [], []
    for k in range(rollout):
        d = days + k
        obs_np = builder.observations(d, prev.numpy())
        if noise > 0:
            obs_np[:, :fd] += (noise * rng.standard_normal((obs_np.shape[0], fd))).astype(np.float32)
        obs = torch.as_tensor(obs_np)
        action = policy(obs)
        if tape.prior is not None:  # a residual policy's weights tilt the env's prior (the env's step 1)
            action = action * torch.as_tensor(tape.prior[d], dtype=action.dtype)
        open_ = torch.as_tensor(tape.tradable[d], dtype=torch.float32)
        target = env_targets(action, prev, open_, tape.max_weight)
        g, nxt = step_growth(target, prev, torch.as_tensor(tape.returns[d], dtype=torch.float32), cost_rate,
                             tape.cash_rate)
        out.append(g)
        targets.append(target.detach().numpy())
        prev = nxt.detach()
    return torch.cat(out), np.stack(targets, axis=1)


def train_policy(policy: nn.Module, tape: MarketTape, layout: ObsLayout,
                 config: PortfolioGradientConfig | None = None) -> dict[str, list[float]]:
    """Gradient ascent on :func:`objective` over ``tape``'s training days; ``policy`` is trained in place.

    Returns the history ``{"objective": [...], "log_growth": [...], "cash": [...]}`` per step (mean
    scored log growth and mean post-trade cash weight of the batch), plus ``holdout`` (objective on the
    holdout days at steps ``holdout_step``) and ``best_step`` when ``holdout_days`` > 0. Deterministic
    given ``config.seed`` and the policy's initial parameters. Only days before ``tape.last`` are read.
    """
    c = config or PortfolioGradientConfig()
    lo, hi = max(tape.first, layout.window - 1), tape.last - c.rollout + 1  # day + rollout - 1 < last
    split = hi - c.holdout_days
    if split - lo < 1 or (c.holdout_days and hi <= split):
        raise ValueError(f"the span {tape.first}..{tape.last} has no room for a {c.rollout}-day rollout "
                         f"and {c.holdout_days} holdout days")
    builder = IndexReplayBuffer(tape.features, tape.tradable.astype(np.float32), layout, capacity=1)
    rng = np.random.default_rng(c.seed)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=c.weight_decay)
    history: dict[str, list[float]] = {"objective": [], "log_growth": [], "cash": [], "holdout": [], "holdout_step": []}
    hold_days = np.arange(split + c.rollout - 1, hi) if c.holdout_days else np.zeros(0, np.int64)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    cash_g = float(np.log1p(tape.cash_rate / DAYS_PER_YEAR))  # the cash leg's daily log growth (Sharpe's hurdle)

    def score_holdout(step: int) -> None:
        nonlocal best
        policy.eval()
        with torch.no_grad():
            w0 = np.zeros((hold_days.size, tape.returns.shape[1] + 1))
            held = held_assets(tape, hold_days)
            w0[:, :-1] = held / np.maximum(held.sum(axis=1, keepdims=True), 1)
            g, _ = rollout_growth(policy, tape, builder, hold_days, w0, c.rollout)
            j = float(objective(g, c.risk_aversion, c.downside, c.sharpe, cash_g))
        history["holdout"].append(j)
        history["holdout_step"].append(step)
        if best is None or j > best[0]:
            best = (j, step, {k: v.detach().clone() for k, v in policy.state_dict().items()})
        policy.train()

    policy.train()
    for step in range(c.steps):
        if hold_days.size and step % c.eval_every == 0:
            score_holdout(step)
        days = rng.integers(lo, split, size=c.batch_days)
        g, targets = rollout_growth(policy, tape, builder, days, start_weights(tape, days, rng), c.rollout,
                                    c.turnover_penalty, c.feature_noise, rng)
        j = objective(g, c.risk_aversion, c.downside, c.sharpe, cash_g)
        opt.zero_grad()
        (-j).backward()
        nn.utils.clip_grad_norm_(params, c.max_grad_norm)
        opt.step()
        history["objective"].append(float(j.detach()))
        history["log_growth"].append(float(g.detach().mean()))
        history["cash"].append(float(targets[..., -1].mean()))
    if hold_days.size:
        score_holdout(c.steps)
        policy.load_state_dict(best[2])
        history["best_step"] = [float(best[1])]
    policy.eval()
    return history


def copy_policy_into(agent: Any, policy: nn.Module) -> int:
    """Load ``policy``'s parameters (a trained ``agent.policy_module()`` snapshot) back into ``agent``.

    Keys are matched as they are or without the snapshot's ``net.`` prefix; uses the agent's public
    ``model_state`` / ``load_model_state``. Returns how many tensors were copied; raises ``ValueError``
    if a policy tensor has no counterpart (another architecture).
    """
    state = dict(agent.model_state())
    copied = 0
    for key, value in policy.state_dict().items():
        target = key if key in state else key.removeprefix("net.")
        if target not in state or state[target].shape != value.shape:
            raise ValueError(f"the policy tensor '{key}' has no counterpart in the agent's network")
        state[target] = value.detach().clone()
        copied += 1
    agent.load_model_state(state)
    return copied


def warm_start(agent: Any, core: Any, config: PortfolioGradientConfig | None = None,
               last: int | None = None) -> dict[str, list[float]]:
    """Pre-train ``agent``'s actor (PPO's ``policy_module()``) on the env ``core``'s training days.

    ``core``: a ``MarketCore`` (``env.core`` of the training env; ``last`` may end the span earlier).
    The critic and ``log_std`` are untouched; PPO then trains as usual. Returns :func:`train_policy`'s history.
    """
    policy = agent.policy_module()
    layout = agent.layout
    history = train_policy(policy, tape_from_core(core, last), layout, config)
    copy_policy_into(agent, policy)
    return history
