"""Benchmark: PPO with each encoder (Transformer, LSTM, MLP) on the same env: training speed, size, latency.

Env: ``environments.vector_env.BatchedHedgeFundEnv`` over the 21 yfinance CSVs in ../shared/data/market
(``--data-dir``; ``--source synthetic`` for the embedded market), window 60, M portfolios. Every encoder
trains with the same PPO settings (n_steps, batch size, epochs, seed, latent width ``d_model``), so the
encoder is the only difference; the peer is the default PPO-Transformer measured in the same run, and
stable-baselines3's ``PPO("MlpPolicy")`` (an MLP on the whole flat observation) on the very same env is an
outside reference. Reported per encoder:

- train samples/s = env decisions / wall time of ``train`` (rollouts and updates) and the ratio to the
  Transformer's;
- parameters of the actor-critic and of the deployed policy module;
- deterministic decision latency p50/p99 in ms at batch 1 and per 64-observation batch (eager PyTorch).

Usage: ``python benchmarks/bench_ppo_encoders.py [--data-dir DIR] [--steps N] [--window W]``; prints a
table and writes ``benchmarks/results/bench_ppo_encoders.json``.
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

import numpy as np
import torch
from bench_agents import latency_ms, sb3_adapter
from bench_common import DEFAULT_DATA_DIR, real_data_config

from agents.ppo_agent import PPOAgent
from agents.ppo_encoders import ENCODERS
from data.atomic_files import atomic_write_text
from data.market import DataError
from environments.config import EnvConfig
from environments.vector_env import BatchedHedgeFundEnv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--source", choices=("csv", "synthetic"), default="csv")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument("--steps", type=int, default=512, help="env decisions per PPO run")
    parser.add_argument("--n-steps", type=int, default=64, help="PPO rollout length per env")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100, help="latency samples")
    args = parser.parse_args(argv)
    if min(args.num_envs, args.window, args.steps, args.n_steps, args.threads, args.repeats) < 1:
        print("error: --num-envs, --window, --steps, --n-steps, --threads and --repeats must be positive",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    try:
        from data.feature_engineering import load_feature_store

        data_cfg = real_data_config(args.source, args.data_dir)
        store = load_feature_store(data_cfg, source=args.source, data_dir=args.data_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from stable_baselines3 import PPO

    cfg = EnvConfig(window=args.window)
    t_days, n, f = store.features.shape
    obs_dim = cfg.window * n * f + 2 * n + 1
    print(f"data: {n} assets x {f} features x {t_days} days ({store.source}), window {cfg.window}, obs_dim {obs_dim}, "
          f"{args.num_envs} portfolios, {args.steps} steps per run, torch threads {args.threads}")

    def make_env() -> BatchedHedgeFundEnv:
        return BatchedHedgeFundEnv(store, cfg, args.num_envs)

    ppo_kw = dict(n_steps=args.n_steps, batch_size=64, n_epochs=10, seed=0)
    obs1 = make_env().reset(seed=1)[0][:1]
    obs64 = np.repeat(make_env().reset(seed=2)[0], 64 // args.num_envs + 1, axis=0)[:64]
    res: dict[str, dict] = {}
    for enc in ENCODERS:
        agent = PPOAgent(obs_dim, n + 1, window=cfg.window, encoder=enc, **ppo_kw)
        t0 = time.perf_counter()
        agent.train(make_env(), args.steps)
        wall = time.perf_counter() - t0
        pol = agent.policy_module()

        def run(o, pol=pol):
            with torch.no_grad():
                return pol(torch.as_tensor(o))

        p50, p99 = latency_ms(run, obs1, args.repeats)
        b50, _ = latency_ms(run, obs64, max(args.repeats // 5, 5))
        res[enc] = {"samples_per_s": agent.global_step / wall, "train_s": wall,
                    "net_parameters": sum(p.numel() for p in agent.net.parameters()),
                    "policy_parameters": sum(p.numel() for p in pol.parameters()),
                    "latency_b1_p50_ms": p50, "latency_b1_p99_ms": p99, "latency_b64_p50_ms": b50}
        print(f"  {enc}: {agent.global_step} steps in {wall:.1f} s")
    sb3 = PPO("MlpPolicy", sb3_adapter(make_env()), device="cpu", verbose=0, **ppo_kw)
    t0 = time.perf_counter()
    sb3.learn(args.steps)
    wall = time.perf_counter() - t0
    p50, p99 = latency_ms(lambda o: sb3.predict(o, deterministic=True), obs1, args.repeats)
    b50, _ = latency_ms(lambda o: sb3.predict(o, deterministic=True), obs64, max(args.repeats // 5, 5))
    n_sb3 = sum(p.numel() for p in sb3.policy.parameters())
    res["sb3_mlp"] = {"samples_per_s": sb3.num_timesteps / wall, "train_s": wall, "net_parameters": n_sb3,
                      "policy_parameters": n_sb3, "latency_b1_p50_ms": p50, "latency_b1_p99_ms": p99,
                      "latency_b64_p50_ms": b50}

    peer = res["transformer"]["samples_per_s"]
    head = (f"\n{'PPO encoder':16s} {'samples/s':>10s} {'vs Transf.':>10s} {'net params':>11s} {'policy params':>13s} "
            f"{'b1 p50 ms':>9s} {'b1 p99 ms':>9s} {'b64 p50 ms':>10s}")
    print(head)
    for name, r in res.items():
        r["ratio_vs_transformer"] = r["samples_per_s"] / peer
        print(f"{name:16s} {r['samples_per_s']:10.1f} {r['ratio_vs_transformer']:10.2f} {r['net_parameters']:11d} "
              f"{r['policy_parameters']:13d} {r['latency_b1_p50_ms']:9.2f} {r['latency_b1_p99_ms']:9.2f} "
              f"{r['latency_b64_p50_ms']:10.2f}")
    result = {
        "data": {"assets": n, "features": f, "days": t_days, "source": store.source, "window": cfg.window,
                 "obs_dim": obs_dim, "num_envs": args.num_envs, "threads": args.threads, "steps": args.steps,
                 **{k: v for k, v in ppo_kw.items() if k != "seed"}},
        "encoders": res,
    }
    out = Path(__file__).resolve().parent / "results" / "bench_ppo_encoders.json"
    atomic_write_text(out, json.dumps(result, indent=2))  # parents created
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
