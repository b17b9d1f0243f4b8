"""Benchmark: agent training throughput and decision latency, ours next to stable-baselines3, same env.

Env: ``environments.vector_env.BatchedHedgeFundEnv`` over the 21 yfinance CSVs in ../shared/data/market
(``--data-dir``; ``--source synthetic`` for the embedded market), window 60, M portfolios. SB3 sees the
very same batched env through a thin ``VecEnv`` adapter, so both sides pay the same env cost.
Measured in one run, same torch thread count:

- PPO: ours (Transformer actor-critic, day-index rollout) vs SB3 ``PPO("MlpPolicy")``, equal n_steps,
  batch size and epochs; samples/s = env decisions / wall time of ``train`` / ``learn`` incl. updates.
- SAC: ours (LSTM extractor, day-index replay) vs SB3 ``SAC("MlpPolicy")``, one gradient step per
  batched env step, equal batch size and learning_starts.
- Inference: p50/p99 latency of one decision (batch 1) of each deterministic policy.
- Replay memory per stored transition: our index buffer vs SB3's observation buffer.

Usage: ``python benchmarks/bench_agents.py [--data-dir DIR] [--ppo-steps N] [--sac-steps N]``; prints a
table and writes ``benchmarks/results/bench_agents.json``.
"""

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_common import DEFAULT_DATA_DIR, real_data_config

from agents.ppo_agent import PPOAgent
from agents.sac_agent import SACAgent
from data.atomic_files import atomic_write_text
from data.market import DataError
from environments.config import EnvConfig
from environments.vector_env import BatchedHedgeFundEnv


def sb3_adapter(env: BatchedHedgeFundEnv) -> Any:
    """The batched env as an SB3 ``VecEnv`` (auto-reset, ``terminal_observation`` in infos)."""
    from stable_baselines3.common.vec_env import VecEnv

    class Adapter(VecEnv):
        def __init__(self) -> None:
            super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
            self._actions: np.ndarray | None = None

        def reset(self) -> np.ndarray:
            return env.reset(seed=0)[0]

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = actions

        def step_wait(self):
            obs, rew, term, trunc, infos = env.step(self._actions)
            done = term | trunc
            out = [{} for _ in range(self.num_envs)]
            for i in np.flatnonzero(done):
                out[i] = {"terminal_observation": infos["final_obs"][i], "TimeLimit.truncated": bool(trunc[i])}
            return obs, rew.astype(np.float32), done, out

        def close(self) -> None:
            return None

        def get_attr(self, attr_name, indices=None):
            return [getattr(env, attr_name, None)] * self.num_envs

        def set_attr(self, attr_name, value, indices=None) -> None:
            return None

        def env_method(self, method_name, *args, indices=None, **kwargs):
            return [None] * self.num_envs

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * self.num_envs

    return Adapter()


def latency_ms(fn, obs: np.ndarray, repeats: int) -> tuple[float, float]:
    """p50, p99 wall time in ms of ``fn(obs)`` for a batch-1 observation."""
    for _ in range(10):
        fn(obs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(obs)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--source", choices=("csv", "synthetic"), default="csv")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--ppo-steps", type=int, default=1024, help="env decisions per PPO run")
    parser.add_argument("--n-steps", type=int, default=128, help="PPO rollout length per env")
    parser.add_argument("--sac-steps", type=int, default=400, help="env decisions per SAC run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200, help="latency samples")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    try:
        from data.feature_engineering import load_feature_store

        data_cfg = real_data_config(args.source, args.data_dir)
        store = load_feature_store(data_cfg, source=args.source, data_dir=args.data_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from stable_baselines3 import PPO, SAC

    cfg = EnvConfig(window=60)
    t_days, n, f = store.features.shape
    obs_dim = cfg.window * n * f + 2 * n + 1
    print(f"data: {n} assets x {f} features x {t_days} days ({store.source}), window {cfg.window}, obs_dim {obs_dim}, "
          f"{args.num_envs} portfolios, torch threads {args.threads}")

    def make_env() -> BatchedHedgeFundEnv:
        return BatchedHedgeFundEnv(store, cfg, args.num_envs)

    ppo_kw = dict(n_steps=args.n_steps, batch_size=64, n_epochs=10, seed=0)
    ours_ppo = PPOAgent(obs_dim, n + 1, window=cfg.window, **ppo_kw)
    t_ours_ppo = timed(lambda: ours_ppo.train(make_env(), args.ppo_steps))
    sb3_ppo = PPO("MlpPolicy", sb3_adapter(make_env()), device="cpu", verbose=0, **ppo_kw)
    t_sb3_ppo = timed(lambda: sb3_ppo.learn(args.ppo_steps))
    n_ppo = ours_ppo.global_step

    sac_kw = dict(batch_size=64, learning_starts=100, seed=0)
    ours_sac = SACAgent(obs_dim, n + 1, window=cfg.window, buffer_size=args.sac_steps, **sac_kw)
    t_ours_sac = timed(lambda: ours_sac.train(make_env(), args.sac_steps))
    sb3_sac = SAC("MlpPolicy", sb3_adapter(make_env()), device="cpu", verbose=0, buffer_size=args.sac_steps,
                  train_freq=1, gradient_steps=1, **sac_kw)
    t_sb3_sac = timed(lambda: sb3_sac.learn(args.sac_steps))

    obs1 = make_env().reset(seed=1)[0][:1]
    ppo_pol, sac_pol = ours_ppo.policy_module(), ours_sac.policy_module()
    with torch.no_grad():
        traced_ppo = torch.jit.trace(ppo_pol, torch.as_tensor(obs1))

    def torch_fn(module):
        def run(o):
            with torch.no_grad():
                return module(torch.as_tensor(o))
        return run

    lat = {
        "ours PPO-Transformer (eager)": latency_ms(torch_fn(ppo_pol), obs1, args.repeats),
        "ours PPO-Transformer (TorchScript)": latency_ms(torch_fn(traced_ppo), obs1, args.repeats),
        "ours SAC-LSTM (eager)": latency_ms(torch_fn(sac_pol), obs1, args.repeats),
        "SB3 PPO MlpPolicy predict": latency_ms(lambda o: sb3_ppo.predict(o, deterministic=True), obs1, args.repeats),
        "SB3 SAC MlpPolicy predict": latency_ms(lambda o: sb3_sac.predict(o, deterministic=True), obs1, args.repeats),
    }
    n_params = {
        "ours PPO": sum(p.numel() for p in ours_ppo.net.parameters()),
        "SB3 PPO": sum(p.numel() for p in sb3_ppo.policy.parameters()),
        "ours SAC": sum(p.numel() for k, m in ours_sac.nets.items() if "target" not in k for p in m.parameters()),
        # SB3's SAC policy also holds critic_target; count the trained networks only, as for ours
        "SB3 SAC": sum(p.numel() for name, p in sb3_sac.policy.named_parameters() if not name.startswith("critic_target")),
    }
    buf = ours_sac.buffer
    ours_bytes = buf.nbytes / buf.capacity
    sb3_buf = sb3_sac.replay_buffer
    sb3_bytes = (sb3_buf.observations.nbytes + sb3_buf.actions.nbytes + sb3_buf.rewards.nbytes
                 + sb3_buf.dones.nbytes + (0 if sb3_buf.optimize_memory_usage else sb3_buf.next_observations.nbytes)
                 ) / sb3_buf.buffer_size

    rows = [
        ("PPO train samples/s", n_ppo / t_ours_ppo, sb3_ppo.num_timesteps / t_sb3_ppo),
        ("SAC train samples/s", ours_sac.global_step / t_ours_sac, sb3_sac.num_timesteps / t_sb3_sac),
    ]
    print(f"\n{'metric':34s} {'ours':>12s} {'SB3':>12s} {'ours/SB3':>9s}")
    for name, ours, peer in rows:
        print(f"{name:34s} {ours:12.1f} {peer:12.1f} {ours / peer:9.2f}")
    print(f"{'PPO parameters':34s} {n_params['ours PPO']:12d} {n_params['SB3 PPO']:12d} "
          f"{n_params['ours PPO'] / n_params['SB3 PPO']:9.3f}")
    print(f"{'SAC parameters (no targets)':34s} {n_params['ours SAC']:12d} {n_params['SB3 SAC']:12d} "
          f"{n_params['ours SAC'] / n_params['SB3 SAC']:9.3f}")
    print(f"{'replay bytes / transition':34s} {ours_bytes:12.0f} {sb3_bytes:12.0f} {ours_bytes / sb3_bytes:9.4f}")
    print(f"\n{'decision latency, batch 1':40s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for name, (p50, p99) in lat.items():
        print(f"{name:40s} {p50:8.2f} {p99:8.2f}")

    result = {
        "data": {"assets": n, "features": f, "days": t_days, "source": store.source, "window": cfg.window,
                 "obs_dim": obs_dim, "num_envs": args.num_envs, "threads": args.threads},
        "ppo": {"ours_samples_per_s": rows[0][1], "sb3_samples_per_s": rows[0][2], "ratio": rows[0][1] / rows[0][2],
                "steps": n_ppo, **{k: v for k, v in ppo_kw.items() if k != "seed"}},
        "sac": {"ours_samples_per_s": rows[1][1], "sb3_samples_per_s": rows[1][2], "ratio": rows[1][1] / rows[1][2],
                "steps": args.sac_steps, "batch_size": 64, "learning_starts": 100},
        "parameters": n_params,
        "replay_bytes_per_transition": {"ours_index": ours_bytes, "sb3_obs": sb3_bytes},
        "latency_ms": {k: {"p50": v[0], "p99": v[1]} for k, v in lat.items()},
    }
    out = Path(__file__).resolve().parent / "results" / "bench_agents.json"
    atomic_write_text(out, json.dumps(result, indent=2))  # parents created
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
