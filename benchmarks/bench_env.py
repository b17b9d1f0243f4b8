"""Benchmark: environment steps per second, numpy kernel vs a FinRL-style pandas env.

Real data: the 21 yfinance CSVs in ../shared/data/market (``--data-dir``), window 60, loaded with
``data.feature_engineering.load_feature_store``. Measured in the same run:

- ``pandas peer``: a portfolio env written the way FinRL's ``StockPortfolioEnv`` works -- a long
  DataFrame indexed by day, one ``df.loc[day]`` lookup for the day's rows and one ``df.loc`` range
  for the feature window per step -- with the same semantics as ``CryptoHedgeFundEnv``
  (log-return reward, per-category fees, square-root slippage, closed assets held, weight cap).
  Its NAV path is checked against the numpy env's on the same actions.
  It runs twice: full ``step`` (observation built) and accounting only (no observation).
- ``CryptoHedgeFundEnv``: one env, full ``step`` (observation and info dict included).
- ``BatchedHedgeFundEnv`` with 64 portfolios: ``step`` (with observations) and ``step_kernel``
  (accounting only, as an index-based rollout uses it).

Ratios compare like with like: a row that builds observations is divided by the peer that builds them,
an accounting-only row by the peer's accounting-only step (a step kernel that builds no observation
divided by a peer that does would overstate the gain by about 35x). The headline is the batched env
with observations against the peer with observations.

Timing: many short batches of about equal duration per implementation, interleaved in rounds (one batch
of each per round); the headline ratio is the median over rounds of the within-round ratio (both sides
measured under the same load on a shared machine), with the best batch, median batch and CPU-time rates
beside it. Usage:
``python benchmarks/bench_env.py [--data-dir DIR] [--steps N] [--seconds S]``; prints a table and writes
``benchmarks/results/bench_env.json``.
"""

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_common import DEFAULT_DATA_DIR, real_data_config

from data.atomic_files import atomic_write_text
from data.feature_engineering import load_feature_store
from data.market import DataError, FeatureStore
from environments.config import EnvConfig
from environments.crypto_hedge_fund_env import CryptoHedgeFundEnv, trailing_adv
from environments.vector_env import BatchedHedgeFundEnv


class PandasPortfolioEnv:
    """FinRL-style peer: pandas lookups per step, same accounting as ``CryptoHedgeFundEnv``.

    Only the parts the benchmark exercises: no margin, no drawdown control, log-return reward.
    """

    def __init__(self, store: FeatureStore, cfg: EnvConfig, fee: np.ndarray, slip: np.ndarray) -> None:
        t_days, n, f = store.features.shape
        self.cfg, self.n = cfg, n
        self.feature_cols = list(store.feature_names)
        frame = pd.DataFrame(store.features.reshape(t_days * n, f), columns=self.feature_cols)
        frame["tic"] = np.tile(np.array(store.tickers), t_days)
        frame["ret"] = store.returns.reshape(-1)
        frame["tradable"] = store.tradable.reshape(-1)
        frame["adv"] = trailing_adv(store.volume, cfg.adv_window).reshape(-1)
        frame["fee"] = np.tile(fee, t_days)
        frame["slip"] = np.tile(slip, t_days)
        frame.index = np.repeat(np.arange(t_days), n)  # FinRL: df.index = df.date.factorize()[0]
        self.df = frame

    def reset(self, start: int) -> np.ndarray:
        self.day = start
        self.nav = self.cfg.initial_nav
        self.weights = np.zeros(self.n + 1)
        self.weights[-1] = 1.0
        return self._observation()

    def _observation(self) -> np.ndarray:
        window = self.df.loc[self.day - self.cfg.window + 1 : self.day, self.feature_cols].values
        mask = self.df.loc[self.day, "tradable"].values.astype(np.float32)
        return np.concatenate([window.reshape(-1).astype(np.float32), self.weights.astype(np.float32), mask])

    def step(self, action: np.ndarray, observe: bool = True):
        """One day; ``observe=False`` skips building the next observation (accounting only)."""
        data = self.df.loc[self.day, :]
        tradable = data["tradable"].values
        x = action / action.sum() if action.sum() > 0 else np.eye(self.n + 1)[-1]
        held = np.where(tradable, 0.0, self.weights[:-1])
        open_x = np.append(np.where(tradable, x[:-1], 0.0), x[-1])
        risky = open_x[:-1] / open_x.sum() * max(1.0 - held.sum(), 0.0)
        risky = np.minimum(risky, self.cfg.max_weight) + held
        traded = np.abs(risky - self.weights[:-1]) * self.nav
        fee = float((data["fee"].values * traded).sum())
        adv = data["adv"].values
        impact = np.where(adv > 0, np.sqrt(traded / np.where(adv > 0, 0.01 * adv, 1.0)), 1.0)
        slippage = float((data["slip"].values * traded * impact).sum())
        nav_post = self.nav - fee - slippage
        holdings = np.append(risky * (1.0 + data["ret"].values), 1.0 - risky.sum()) * nav_post
        new_nav = holdings.sum()
        reward = float(np.log(new_nav / self.nav))
        self.nav, self.weights = new_nav, holdings / new_nav
        self.day += 1
        obs = self._observation() if observe else None
        return obs, reward, False, False, {"nav": self.nav, "cost": fee + slippage}


class _Runner:
    """Steps one implementation ``batch`` decisions at a time through a fixed span of actions."""

    def __init__(self, reset, step, actions: np.ndarray, batch: int) -> None:
        self.reset, self.step, self.actions, self.batch = reset, step, actions, batch
        self.pos = len(actions)  # forces a reset before the first batch

    def prepare(self) -> None:
        if self.pos + self.batch > len(self.actions):
            self.reset()
            self.pos = 0

    def run(self) -> None:
        for a in self.actions[self.pos : self.pos + self.batch]:
            self.step(a)
        self.pos += self.batch


def _rates(runners: list[_Runner], seconds: float) -> tuple[list[tuple[float, float, float]], np.ndarray]:
    """``(best, median, cpu)`` steps per second of each runner over many short timed batches.

    Batch sizes are chosen so that every batch lasts about the same (~10 ms, long enough to warm caches); batches of the
    implementations are interleaved for about ``seconds`` in all, and resets happen outside the
    timed region. ``best`` is the fastest batch (as ``timeit`` advises on a shared machine, where
    slower batches measure other processes' load), ``median`` the median batch, ``cpu`` total steps
    over total CPU time (``time.process_time``) of this single-threaded process. Also returns the
    per-round rates (rounds, runners): one batch of each runner per round, run back to back, so the
    ratio of two runners within a round is measured under the same load.
    """
    walls: list[list[float]] = [[] for _ in runners]
    cpus = [0.0 for _ in runners]
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or min(len(t) for t in walls) < 5:
        for k, runner in enumerate(runners):
            runner.prepare()
            c0, t0 = time.process_time(), time.perf_counter()
            runner.run()
            walls[k].append(time.perf_counter() - t0)
            cpus[k] += time.process_time() - c0
    rates = [(r.batch / min(t), r.batch / float(np.median(t)), r.batch * len(t) / max(c, 1e-9))
             for r, t, c in zip(runners, walls, cpus, strict=True)]
    per_round = np.array([[r.batch / t[i] for r, t in zip(runners, walls, strict=True)]
                          for i in range(min(len(t) for t in walls))])
    return rates, per_round


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--steps", type=int, default=600, help="length of the stepped span (days)")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="total timing budget")
    args = parser.parse_args(argv)
    try:
        data_cfg = real_data_config("csv", args.data_dir)
        store = load_feature_store(data_cfg, source="csv", data_dir=args.data_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg = EnvConfig(window=60)
    t_days, n, f = store.features.shape
    print(f"data: {n} assets x {f} features x {t_days} days ({store.source}), window {cfg.window}, "
          f"obs_dim {cfg.window * n * f + 2 * n + 1}")

    env = CryptoHedgeFundEnv.from_store(store, cfg)
    core = env.core
    peer = PandasPortfolioEnv(store, cfg, core.market.fee_rate, core.market.slip_rate)
    start = core.first
    steps = min(args.steps, core.last - start)
    rng = np.random.default_rng(0)
    actions = rng.random((steps, n + 1))

    # Same semantics: identical NAV paths on the same actions.
    env.reset(options={"start": start})
    peer.reset(start)
    navs_env, navs_peer = [], []
    for a in actions:
        navs_env.append(env.step(a)[4]["nav"])
        navs_peer.append(peer.step(a)[4]["nav"])
    max_rel = float(np.max(np.abs(np.array(navs_env) / np.array(navs_peer) - 1.0)))
    print(f"NAV agreement env vs pandas peer over {steps} steps: max relative difference {max_rel:.2e}")

    m = args.num_envs
    venv = BatchedHedgeFundEnv.like(env, m)
    batch_actions = np.repeat(rng.random((1, m, n + 1)), steps, axis=0)
    runners = [
        _Runner(lambda: peer.reset(start), peer.step, actions, 10),  # batches of roughly 10 ms each
        _Runner(lambda: peer.reset(start), lambda a: peer.step(a, observe=False), actions, 12),
        _Runner(lambda: env.reset(options={"start": start}), env.step, actions, 200),
        _Runner(lambda: venv.reset(seed=0), venv.step, batch_actions, 4),
        _Runner(lambda: venv.reset(seed=0), venv.step_kernel, batch_actions, 100),
    ]
    names = ["pandas peer (FinRL-style, 1 env)", "pandas peer, accounting only (1 env)",
             "CryptoHedgeFundEnv.step (1 env)", f"BatchedHedgeFundEnv.step ({m} envs)",
             f"BatchedHedgeFundEnv.step_kernel ({m} envs)"]
    envs = [1, 1, 1, m, m]
    builds_obs = [True, False, True, True, False]
    measured, per_round = _rates(runners, args.seconds)
    # ratio within each round (same load), median over rounds: the headline statistic
    paired = {k: float(np.median(envs[k] * per_round[:, k] / per_round[:, 0 if builds_obs[k] else 1]))
              for k in range(len(runners))}
    rows = [(name, k, obs, k * best, k * med, k * cpu)
            for name, k, obs, (best, med, cpu) in zip(names, envs, builds_obs, measured, strict=True)]
    peers = {True: rows[0][3:], False: rows[1][3:]}  # like-for-like peer: with / without observations
    print(f"\n{'implementation':<42} {'envs':>4} {'obs':>4} {'steps/s best':>13} {'x peer':>7} {'median':>10} "
          f"{'x peer':>7} {'CPU-time':>10} {'x peer':>7}")
    for name, k, obs, best, med, cpu in rows:
        pb, pm_, pc = peers[obs]
        print(f"{name:<42} {k:>4} {'yes' if obs else 'no':>4} {best:>13,.0f} {best / pb:>7.1f} {med:>10,.0f} "
              f"{med / pm_:>7.1f} {cpu:>10,.0f} {cpu / pc:>7.1f}")
    print("(env-steps/s: best timed batch, median batch, total steps over total CPU time; 'x peer' divides by the\n"
          " pandas peer doing the same work: with observations, or accounting only)")
    headline = {
        "batched_with_obs_vs_peer_with_obs": {"paired_median": paired[3], "best": rows[3][3] / peers[True][0],
                                              "median": rows[3][4] / peers[True][1], "cpu": rows[3][5] / peers[True][2]},
        "single_vs_peer_with_obs": {"paired_median": paired[2], "best": rows[2][3] / peers[True][0],
                                    "median": rows[2][4] / peers[True][1], "cpu": rows[2][5] / peers[True][2]},
        "kernel_vs_peer_accounting_only": {"paired_median": paired[4], "best": rows[4][3] / peers[False][0],
                                           "median": rows[4][4] / peers[False][1], "cpu": rows[4][5] / peers[False][2]},
        "rounds": int(per_round.shape[0]),
    }
    goals = {"single_vs_peer": headline["single_vs_peer_with_obs"]["paired_median"], "single_goal": 20.0,
             "batched_kernel": rows[4][3], "batched_with_obs": rows[3][3], "batched_goal": 200_000.0}
    h = headline["batched_with_obs_vs_peer_with_obs"]
    print(f"\nheadline (like for like, both build {cfg.window}x{n}x{f} observations; median over "
          f"{per_round.shape[0]} interleaved rounds of the within-round ratio): batched env {h['paired_median']:.1f}x "
          f"the pandas peer (best batches {h['best']:.1f}x, median batches {h['median']:.1f}x, CPU time {h['cpu']:.1f}x)")
    print(f"single env {headline['single_vs_peer_with_obs']['paired_median']:.1f}x the peer; accounting only: "
          f"step_kernel {headline['kernel_vs_peer_accounting_only']['paired_median']:.1f}x the peer's accounting-only step")
    print(f"goal single >= 20x peer: {goals['single_vs_peer']:.1f}x "
          f"({'met' if goals['single_vs_peer'] >= 20 else 'NOT met'}); goal batched >= 200,000/s: "
          f"{rows[4][3]:,.0f} kernel-only ({'met' if rows[4][3] >= 200_000 else 'NOT met'}), "
          f"{rows[3][3]:,.0f} with observations")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "data": {"assets": n, "features": f, "days": t_days, "window": cfg.window, "source": store.source},
        "nav_max_rel_diff_vs_peer": max_rel,
        "rows": [{"name": name, "envs": k, "builds_observation": obs, "env_steps_per_s_best": best,
                  "ratio_vs_like_peer_best": best / peers[obs][0], "env_steps_per_s_median": med,
                  "ratio_vs_like_peer_median": med / peers[obs][1], "env_steps_per_s_cpu": cpu,
                  "ratio_vs_like_peer_cpu": cpu / peers[obs][2]}
                 for name, k, obs, best, med, cpu in rows],
        "headline": headline, "goals": goals, "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
        "timing": "interleaved batches of every implementation; best and median batch, and CPU time",
    }
    atomic_write_text(out_dir / "bench_env.json", json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
