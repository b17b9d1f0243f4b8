"""Benchmark: training throughput at the papers' sizes, before/after, against the FLOP limit and SB3.

- PPO-Transformer at the first paper's size (configs/paper.yaml on real CSVs: window 60, 82 features,
  d_model 64, n_steps 256 x 8 envs, batch 256, 10 epochs): ours with the per-day forward ("after"), ours
  with the straightforward per-window forward (``per_day_market=False``, "before"), and stable-baselines3
  ``PPO("MlpPolicy")`` on the same batched env with the same n_steps, batch size and epochs. Equal terms: no
  KL early stop and no reward normalisation on either side, one torch thread each (``--threads``), runs
  interleaved ours/theirs/ours/theirs for ``--rounds`` rounds after ``--warmup-rounds`` untimed ones (the
  median is reported; a fresh process's first large allocations and kernels are slow).
- SAC and DDPG with the LSTM extractor at the second paper's size (configs/crypto4.yaml on real CSVs,
  window 30, 8 envs, ``--warmup`` random decisions first) and SB3 ``SAC("MlpPolicy")`` with the same batch,
  learning_starts, train_freq 1 and gradient_steps 1. ``train_freq``/``gradient_steps`` are algorithm
  settings (updates per sample), reported in their own rows, not as speed-ups.
- FLOPs per env sample counted from the layer shapes (rollout forward + epochs x (forward + backward =
  3 x forward) for PPO; the per-day path counts the distinct days it actually saw), the single-thread
  2048x2048 float32 matmul rate measured in the same run, and the ratio of the measured rate to that
  FLOP limit (limit = matmul FLOP/s / FLOPs per sample). For PPO also the kernel-rate ceiling: the products at
  the matmul rate measured at the day encoder's shapes and the attention at the rate of PyTorch's attention
  kernel (forward + backward) at its shape, everything else free; the fraction of it says how much of the gap
  to the FLOP limit is overhead rather than the kernels themselves.

Usage: ``python benchmarks/bench_training.py [--data-dir DIR] [--ppo-steps 4096] [--sac-steps 1536]
[--rounds 3] [--warmup-rounds 1] [--threads 1] [--two-threads] [--skip-sb3] [--only ppo|off-policy]``; prints a table and writes
``benchmarks/results/bench_training.json``. Absolute rates swing with machine load; only the ratios
measured in one run are comparable.
"""

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from bench_common import DEFAULT_DATA_DIR

from agents.common import ObsLayout
from agents.ddpg_agent import DDPGAgent
from agents.ppo_agent import PPOAgent
from agents.sac_agent import SACAgent
from data.atomic_files import atomic_write_text
from data.market import DataError
from environments.vector_env import BatchedHedgeFundEnv

ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 n x n matmul rate (GFLOP/s) over ``repeats``, at the current thread count."""
    return shaped_matmul_gflops([(n, n, n)], repeats)


def shaped_matmul_gflops(shapes: list[tuple[int, int, int]], repeats: int = 5) -> float:
    """Best rate (GFLOP/s) of a sequence of float32 (m x k) @ (k x n) products at the current thread count:
    the matmul limit at the model's own shapes (small k runs below the square-matmul rate)."""
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    flop = sum(2 * m * k * n for m, k, n in shapes)
    for a, b in mats:
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a, b in mats:
            a @ b
        best = min(best, time.perf_counter() - t0)
    return flop / best / 1e9


def attention_gflops(batch: int, heads: int, tokens: int, head_dim: int, repeats: int = 5) -> float:
    """Best rate (GFLOP/s) of ``scaled_dot_product_attention`` forward + backward on (batch, heads, tokens,
    head_dim) float32 at the current thread count, counting 3 x the forward's 4 * batch * heads * tokens^2 *
    head_dim FLOPs (this benchmark's convention for a backward pass): the kernel's own limit at the model's shape."""
    q, k, v = (torch.randn(batch, heads, tokens, head_dim, requires_grad=True) for _ in range(3))
    flop = 3 * 4 * batch * heads * tokens * tokens * head_dim

    def once() -> None:
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()

    once()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t0)
    return flop / best / 1e9


def transformer_flops(layout: ObsLayout, d: int, ff: int, day_layers: int, asset_layers: int,
                      rows_per_sample: float, windows_per_sample: float, last_token_only: bool,
                      attention_only: bool = False) -> float:
    """Forward FLOPs per sample of ``TransformerActorCritic`` (multiply-add = 2 FLOPs; elementwise ignored).

    rows_per_sample: day projections per sample (W for the straightforward path, distinct days / B for the
    per-day path); windows_per_sample: day-encoder passes per sample (1, or distinct decision days / B).
    ``attention_only``: count only the attention products (scores and weighted values).
    """
    w, n, f = layout.window, layout.n_assets, layout.n_features

    def layer(tokens: int, queries: int) -> float:
        kv = 2 * tokens * d * d * 2
        q_out_ff = queries * (2 * d * d * 2 + 2 * d * ff * 2)
        attn = 2 * queries * tokens * d * 2
        return attn if attention_only else kv + q_out_ff + attn

    day = sum(layer(w, 1 if (last_token_only and i == day_layers - 1) else w) for i in range(day_layers))
    market = n * f * d * 2
    assets = asset_layers * layer(n + 1, n + 1)
    if attention_only:
        return windows_per_sample * day + assets
    heads = (n + 1) * d * 2 + 2 * d * d * 2 + d * 2 + (n + 1) * d * 2
    return rows_per_sample * n * f * d * 2 + windows_per_sample * (day + market) + assets + heads


def lstm_flops(layout: ObsLayout, hidden: int, layers: int) -> float:
    """Forward FLOPs of ``LSTMExtractor`` per observation: fc + ``layers`` LSTM layers over N windows."""
    w, n, f = layout.window, layout.n_assets, layout.n_features
    per_seq = w * (f * hidden * 2 + layers * 4 * hidden * (2 * hidden) * 2)
    return n * per_seq


class DayCounter:
    """Wraps ``net.forward_days`` to count distinct window days and decision days per sample (update only)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.rows = self.ends = self.samples = 0
        self.inner, self.window = net.forward_days, net.layout.window
        net.forward_days = self

    def __call__(self, features, days, weights, mask, day_rows=None):
        if day_rows is None and torch.is_grad_enabled():
            ends = torch.unique(days)
            win = ends[:, None] + torch.arange(1 - self.window, 1)
            self.rows += len(torch.unique(win))
            self.ends += len(ends)
            self.samples += len(days)
        return self.inner(features, days, weights, mask, day_rows=day_rows)


def load_store(config: str, data_dir: str) -> tuple[Any, Any]:
    from training.config import load_experiment
    from training.train import build_store

    cfg = load_experiment(str(ROOT / config))
    return cfg, build_store(cfg, "csv", data_dir)


def rate(fn, steps: int) -> float:
    t0 = time.perf_counter()
    fn()
    return steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--ppo-steps", type=int, default=4096, help="env decisions per PPO run (n_steps x 8 envs each update)")
    p.add_argument("--sac-steps", type=int, default=1536, help="env decisions per SAC/DDPG run, warm-up included")
    p.add_argument("--warmup", type=int, default=512, help="SAC/DDPG learning_starts")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    p.add_argument("--warmup-rounds", type=int, default=1,
                   help="untimed rounds first (a process's first large allocations and kernels are slow)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--two-threads", action="store_true", help="also run ours (after) with 2 intra-op threads")
    p.add_argument("--skip-sb3", action="store_true")
    p.add_argument("--only", choices=("ppo", "off-policy"), default=None, help="run one half of the benchmark")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_training.json"))
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    try:
        ppo_cfg, ppo_store = load_store("configs/paper.yaml", args.data_dir)
        sac_cfg, sac_store = load_store("configs/crypto4.yaml", args.data_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n_envs = 8

    def ppo_env() -> BatchedHedgeFundEnv:
        return BatchedHedgeFundEnv(ppo_store, ppo_cfg.env, n_envs, end=ppo_cfg.data.train_end)

    def sac_env() -> BatchedHedgeFundEnv:
        return BatchedHedgeFundEnv(sac_store, sac_cfg.env, n_envs, end=sac_cfg.data.train_end)

    lay_ppo, lay_sac = ObsLayout.from_dict(ppo_env().obs_layout), ObsLayout.from_dict(sac_env().obs_layout)
    import yaml

    ppo_params = dict(yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())["agent"]["ppo"])
    ppo_params.update(window=lay_ppo.window, n_features=lay_ppo.n_features, target_kl=0.0, normalize_reward=False,
                      seed=0)
    n_steps, batch, epochs = ppo_params["n_steps"], ppo_params["batch_size"], ppo_params["n_epochs"]
    steps = max(args.ppo_steps // (n_steps * n_envs), 1) * n_steps * n_envs
    print(f"PPO: {lay_ppo.n_assets} assets x {lay_ppo.n_features} features, window {lay_ppo.window}, "
          f"{n_envs} envs, n_steps {n_steps}, batch {batch}, epochs {epochs}, {steps} steps per run; "
          f"torch threads {args.threads}", flush=True)

    results: dict[str, list[float]] = {}
    counts: dict[str, float] = {}

    def ours_ppo(per_day: bool, threads: int) -> float:
        torch.set_num_threads(threads)
        agent = PPOAgent(lay_ppo.obs_dim, lay_ppo.action_dim, layout=lay_ppo, per_day_market=per_day, **ppo_params)
        counter = DayCounter(agent.net) if per_day else None
        r = rate(lambda: agent.train(ppo_env(), steps), steps)
        if counter is not None and counter.samples:
            counts["rows_per_sample"] = counter.rows / counter.samples
            counts["windows_per_sample"] = counter.ends / counter.samples
        torch.set_num_threads(args.threads)
        return r

    def sb3_ppo() -> float:
        from bench_agents import sb3_adapter
        from stable_baselines3 import PPO

        model = PPO("MlpPolicy", sb3_adapter(ppo_env()), n_steps=n_steps, batch_size=batch, n_epochs=epochs,
                    target_kl=None, device="cpu", seed=0, verbose=0)
        return rate(lambda: model.learn(steps), steps)

    ppo_runs = [("PPO ours (per-day forward)", lambda: ours_ppo(True, args.threads)),
                ("PPO ours (straightforward forward)", lambda: ours_ppo(False, args.threads))]
    if not args.skip_sb3:
        ppo_runs.insert(1, ("PPO stable-baselines3 MlpPolicy", sb3_ppo))
    if args.two_threads:
        ppo_runs.append(("PPO ours (per-day), 2 threads", lambda: ours_ppo(True, 2)))

    sac_params = dict(hidden=64, lstm_layers=3, batch_size=64, learning_starts=args.warmup, window=lay_sac.window,
                      n_features=lay_sac.n_features, seed=0)
    trained = args.sac_steps - args.warmup

    def ours_off(cls: type, threads: int | None = None, **over: Any) -> float:
        torch.set_num_threads(threads or args.threads)
        agent = cls(lay_sac.obs_dim, lay_sac.action_dim, layout=lay_sac, **dict(sac_params, **over))
        env = sac_env()
        agent.train(env, args.warmup)
        r = rate(lambda: agent.train(env, args.sac_steps), trained)
        torch.set_num_threads(args.threads)
        return r

    def sb3_sac() -> float:
        from bench_agents import sb3_adapter
        from stable_baselines3 import SAC

        model = SAC("MlpPolicy", sb3_adapter(sac_env()), batch_size=64, learning_starts=args.warmup, train_freq=1,
                    gradient_steps=1, buffer_size=args.sac_steps, device="cpu", seed=0, verbose=0)
        model.learn(args.warmup)
        return rate(lambda: model.learn(trained, reset_num_timesteps=False), trained)

    off_runs = [("SAC ours (LSTM, train_freq 1, gradient_steps 1)", lambda: ours_off(SACAgent)),
                ("DDPG ours (LSTM, train_freq 1, gradient_steps 1)", lambda: ours_off(DDPGAgent))]
    if not args.skip_sb3:
        off_runs.insert(1, ("SAC stable-baselines3 MlpPolicy", sb3_sac))
    if args.two_threads:
        off_runs += [("SAC ours (LSTM), 2 threads", lambda: ours_off(SACAgent, 2)),
                     ("DDPG ours (LSTM), 2 threads", lambda: ours_off(DDPGAgent, 2))]
    settings = [("SAC ours, train_freq 4 (a quarter of the updates)", lambda: ours_off(SACAgent, train_freq=4))]

    gflops = []
    todo = {"ppo": ppo_runs, "off-policy": off_runs + settings, None: ppo_runs + off_runs + settings}[args.only]
    for rnd in range(-args.warmup_rounds, args.rounds):
        gflops.append(matmul_gflops())
        for name, fn in todo:
            value = fn()
            if rnd >= 0:
                results.setdefault(name, []).append(value)
            label = f"round {rnd + 1}" if rnd >= 0 else "warm-up (not counted)"
            print(f"  {label}: {name}: {value:.1f} samples/s", flush=True)
    gflops.append(matmul_gflops())
    peak = max(gflops) * 1e9
    # the day encoder's products on a minibatch (batch windows x W day tokens): QKV, FF in, FF out
    rows_ = ppo_params["batch_size"] * lay_ppo.window
    d_, ff_ = ppo_params["d_model"], ppo_params["dim_feedforward"]
    shaped = max(shaped_matmul_gflops([(rows_, d_, 3 * d_), (rows_, d_, ff_), (rows_, ff_, d_)]) for _ in range(3))
    heads_ = ppo_params["n_heads"]
    attn_rate = max(attention_gflops(ppo_params["batch_size"], heads_, lay_ppo.window, d_ // heads_) for _ in range(3))

    # FLOPs per env sample from the shapes
    d, ff = ppo_params["d_model"], ppo_params["dim_feedforward"]
    day_layers, asset_layers = ppo_params["day_layers"], ppo_params["asset_layers"]
    w = lay_ppo.window
    fwd_before = transformer_flops(lay_ppo, d, ff, day_layers, asset_layers, w, 1.0, False)
    fwd_roll = transformer_flops(lay_ppo, d, ff, day_layers, asset_layers, 0.0, 1.0, True)  # day rows precomputed
    fwd_after = transformer_flops(lay_ppo, d, ff, day_layers, asset_layers, counts.get("rows_per_sample", w),
                                  counts.get("windows_per_sample", 1.0), True)
    flops = {
        "PPO ours (per-day forward)": fwd_roll + epochs * 3 * fwd_after,
        "PPO ours (straightforward forward)": fwd_before + epochs * 3 * fwd_before,
    }
    flops["PPO ours (per-day), 2 threads"] = flops["PPO ours (per-day forward)"]
    # The kernel-rate ceiling: every product at the day encoder's matmul rate and the attention at the attention
    # kernel's rate, nothing else costing time (layer norms, copies, optimiser, env): samples/s no run can beat.
    attn_after = epochs * 3 * transformer_flops(lay_ppo, d, ff, day_layers, asset_layers, 0.0,
                                                counts.get("windows_per_sample", 1.0), True, attention_only=True)
    attn_after += transformer_flops(lay_ppo, d, ff, day_layers, asset_layers, 0.0, 1.0, True, attention_only=True)
    attn_before = (1 + epochs * 3) * transformer_flops(lay_ppo, d, ff, day_layers, asset_layers, w, 1.0, False,
                                                       attention_only=True)
    attn = {"PPO ours (per-day forward)": attn_after, "PPO ours (straightforward forward)": attn_before}

    def ceiling(name: str) -> float | None:
        if name not in attn:
            return None
        return 1.0 / ((flops[name] - attn[name]) / (shaped * 1e9) + attn[name] / (attn_rate * 1e9))
    lstm = lstm_flops(lay_sac, 64, 3)
    # per transition (1 update per 8 envs' step of 8 transitions): explore + (target fwd + online fwd/bwd) * 64 / 8
    per_update = lstm + 3 * lstm
    flops["SAC ours (LSTM, train_freq 1, gradient_steps 1)"] = lstm + per_update * 64 / n_envs
    flops["DDPG ours (LSTM, train_freq 1, gradient_steps 1)"] = flops["SAC ours (LSTM, train_freq 1, gradient_steps 1)"]
    flops["SAC ours (LSTM), 2 threads"] = flops["DDPG ours (LSTM), 2 threads"] = flops[
        "SAC ours (LSTM, train_freq 1, gradient_steps 1)"]
    flops["SAC ours, train_freq 4 (a quarter of the updates)"] = lstm + per_update * 64 / n_envs / 4

    rows = []
    for name, vals in results.items():
        med = statistics.median(vals)
        f = flops.get(name)
        top = ceiling(name)
        rows.append({"name": name, "samples_per_s": med, "runs": vals, "gflop_per_sample": f / 1e9 if f else None,
                     "fraction_of_flop_limit": (med * f / peak) if f else None,
                     "attention_share_of_flops": attn[name] / f if name in attn else None,
                     "kernel_rate_ceiling": top, "fraction_of_kernel_rate_ceiling": med / top if top else None})
    by = {r["name"]: r["samples_per_s"] for r in rows}
    pairs = {"PPO per-day / straightforward": ("PPO ours (per-day forward)", "PPO ours (straightforward forward)"),
             "PPO ours (per-day) / SB3": ("PPO ours (per-day forward)", "PPO stable-baselines3 MlpPolicy"),
             "PPO per-day 2 threads / 1 thread": ("PPO ours (per-day), 2 threads", "PPO ours (per-day forward)"),
             "SAC ours / SB3": ("SAC ours (LSTM, train_freq 1, gradient_steps 1)", "SAC stable-baselines3 MlpPolicy"),
             "SAC 2 threads / 1 thread": ("SAC ours (LSTM), 2 threads", "SAC ours (LSTM, train_freq 1, gradient_steps 1)"),
             "DDPG 2 threads / 1 thread": ("DDPG ours (LSTM), 2 threads",
                                           "DDPG ours (LSTM, train_freq 1, gradient_steps 1)")}
    ratios = {k: by[a] / by[b] for k, (a, b) in pairs.items() if a in by and b in by}

    print(f"\nsingle-thread float32 2048x2048 matmul: {peak / 1e9:.1f} GFLOP/s (best of the run); at the day "
          f"encoder's shapes ({rows_} x {d_} @ {d_} x {3 * d_}, {d_} x {ff_}, {ff_} x {d_}): {shaped:.1f} GFLOP/s "
          f"({shaped * 1e9 / peak:.2f} of it); attention forward + backward at ({ppo_params['batch_size']}, "
          f"{heads_}, {lay_ppo.window}, {d_ // heads_}): {attn_rate:.1f} GFLOP/s ({attn_rate * 1e9 / peak:.2f} of it); "
          f"per-day path saw {counts.get('rows_per_sample', float('nan')):.2f} distinct days and "
          f"{counts.get('windows_per_sample', float('nan')):.2f} decision days per sample")
    print(f"\n{'run':52s} {'samples/s':>10s} {'GFLOP/sample':>13s} {'of FLOP limit':>14s} {'kernel ceiling':>15s}"
          "  (limit = 1 thread's matmul rate; ceiling = products and attention at their own shapes' rates)")
    for r in rows:
        g = f"{r['gflop_per_sample']:.3f}" if r["gflop_per_sample"] else "-"
        frac = f"{r['fraction_of_flop_limit']:.2f}" if r["fraction_of_flop_limit"] else "-"
        top = (f"{r['kernel_rate_ceiling']:.0f} ({r['fraction_of_kernel_rate_ceiling']:.2f})"
               if r["kernel_rate_ceiling"] else "-")
        print(f"{r['name']:52s} {r['samples_per_s']:10.1f} {g:>13s} {frac:>14s} {top:>15s}")
    print()
    for k, v in ratios.items():
        print(f"{k:52s} {v:10.2f}x")

    result = {"settings": {"ppo_steps": steps, "sac_steps": args.sac_steps, "warmup": args.warmup,
                           "rounds": args.rounds, "warmup_rounds": args.warmup_rounds, "threads": args.threads, "n_envs": n_envs,
                           "ppo": {k: ppo_params[k] for k in ("n_steps", "batch_size", "n_epochs", "d_model")},
                           "layout_ppo": lay_ppo.to_dict(), "layout_sac": lay_sac.to_dict(),
                           "load_avg": os.getloadavg(), "device": "cpu"},
              "matmul_gflops": gflops, "day_encoder_shape_matmul_gflops": shaped,
              "day_encoder_shape_attention_gflops": attn_rate, "per_day_counts": counts, "rows": rows, "ratios": ratios}
    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=2))  # parents created
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
