# ruff: noqa: E402
# Source of research/ablation_studies.ipynb (percent format); rebuild with research/build_notebooks.py.

# %% [markdown]
# # Ablation studies
#
# Which design choices matter, measured out of sample on the validation span (the days after
# `data.train_end`), with the same environment, costs and seeds for every variant:
#
# 1. **Reward**: log return vs differential Sharpe ratio (`dsr`) vs risk-adjusted reward, PPO-Transformer.
# 2. **Algorithm**: PPO vs SAC vs DDPG: learning curves, convergence speed, final metrics.
# 3. **Encoder**: Transformer vs LSTM vs MLP, all trained with PPO (`agent.ppo.encoder`), so the algorithm,
#    reward, costs, steps and seeds are held fixed and only the network differs.
# 4. **Transaction-cost sensitivity**: `env.cost_scale` 0, 1, 2, 5 (0 = frictionless), PPO-Transformer,
#    next to an equal-weight benchmark stepped through the same environment.
#
# Every run goes through `training.train.run_training` (the function behind `python training/train.py`),
# so a variant here is exactly what the command line would train. Final metrics are each run's
# `validation.json`, computed by the one metrics module `training.metrics` (the backtester's too: Sharpe
# and Sortino of the excess return over the T-bill leg, max drawdown and CVaR as returns, negative = loss)
# with the diagnostics `active_share` and `regime_response`. Runs on the **synthetic** market by default; set
# `data_dir` to a CSV folder for real prices. Every table names its data source.
#
# The default sizes below take roughly 20-40 minutes on 2 CPU cores; the test suite runs this notebook
# with tiny sizes only to prove that it executes.

# %% [parameters]
# Parameters: the only cell to edit. Tests override these values before executing the notebook.
source = "synthetic"  # "synthetic" (seeded simulator, no network) or "csv"
data_dir = None  # folder of yfinance-style CSVs, e.g. "/work/shared/data/market"; implies source="csv"
config_path = "configs/quickstart.yaml"  # experiment YAML (data/env/agent/training), relative to the repo root
max_assets_per_category = None  # keep only the first k tickers of each category (small runs)
val_end = None  # last validation day (None: data.end)
total_timesteps = 8192  # env steps per run, summed over the n_envs parallel portfolios
n_envs = 4  # portfolios stepped together during training
seeds = [0, 1, 2]  # every variant is trained once per seed
window = 10  # days of features in an observation
episode_length = 120  # decisions per training episode
n_evals = 8  # validation evaluations along each run (the validation learning curves)
rewards = ["log_return", "dsr", "risk_adjusted"]
algos = ["ppo", "sac", "ddpg"]
cost_scales = [0.0, 1.0, 2.0, 5.0]
encoders = ["transformer", "lstm", "mlp"]  # PPO encoders compared in section 3
baseline = {"algo": "ppo", "encoder": "transformer", "reward": "log_return", "cost_scale": 1.0}  # shared
agent_overrides = {  # per-algorithm hyper-parameters on top of the config's agent section
    "sac": {"learning_starts": 512, "hidden": 32, "lstm_layers": 1, "buffer_size": 50_000},
    "ddpg": {"learning_starts": 512, "hidden": 32, "lstm_layers": 1, "buffer_size": 50_000},
}
n_boot = 1000  # stationary-bootstrap resamples for the Sharpe-difference intervals
run_dir = None  # folder for the run directories (None: a temporary folder deleted at the end)

# %%
import dataclasses
import io
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Image, Markdown, display


def find_repo_root(here: Path) -> Path:
    """The first folder at or above ``here`` holding the project (pyproject.toml and data/market.py)."""
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "data" / "market.py").is_file():
            return folder
    raise FileNotFoundError("run this notebook from inside the drl-hedge-fund repository")


ROOT = find_repo_root(Path.cwd().resolve())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.common import ObsLayout
from evaluation.backtester import run_benchmarks
from evaluation.benchmarks import EvaluationConfig
from evaluation.significance import sharpe_difference_interval
from training import metrics as pm
from training.config import load_experiment
from training.rollout import MarketContext, strategy_metrics
from training.train import build_store, evaluate_policy, make_agent, run_training

torch.set_num_threads(1)
pd.set_option("display.float_format", "{:.4f}".format)
pd.set_option("display.width", 160)
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
warnings.filterwarnings("ignore", category=UserWarning)

# %% [markdown]
# ## Data, spans and the shared configuration

# %%
config_file = Path(config_path) if Path(config_path).is_absolute() else ROOT / config_path
if data_dir is not None:
    source = "csv"
eval_every = max(int(total_timesteps) // max(int(n_evals), 1), 1)
base_overrides = {
    "data.source": source, "data.data_dir": str(data_dir or ""), "training.val_end": val_end,
    "training.total_timesteps": int(total_timesteps), "training.n_envs": int(n_envs),
    "training.checkpoint_every": 0, "training.eval_every": eval_every,
    "env.window": int(window), "env.episode_length": int(episode_length),
}
base_cfg = load_experiment(config_file, base_overrides)
if max_assets_per_category:
    universe = {c: list(t)[: int(max_assets_per_category)] for c, t in base_cfg.data.universe.items()}
    base_overrides["data.universe"] = universe
    base_cfg = load_experiment(config_file, base_overrides)
store = build_store(base_cfg, source, data_dir)

SOURCE_TAG = "SYNTHETIC" if store.synthetic else store.source.upper()
DATA_LABEL = (
    f"SYNTHETIC market (seeded simulator, seed {base_cfg.data.seed}; not real prices)"
    if store.synthetic
    else f"{store.source.upper()} prices from {data_dir or base_cfg.data.data_dir}"
)
TABLES: dict[str, pd.DataFrame] = {}


def show_figure(fig) -> None:
    """Display ``fig`` as a PNG and close it. ``training.curves.plot_curves`` (called by every run) switches
    matplotlib to the Agg backend, after which ``plt.show()`` would display nothing in a notebook."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buf.getvalue()))


def show_table(df: pd.DataFrame, title: str) -> None:
    """Display ``df`` under a title that names the data source; keep it in ``TABLES``."""
    df.attrs["data_source"] = DATA_LABEL
    TABLES[title] = df
    display(Markdown(f"**{title}** (data: {DATA_LABEL})"))
    display(df)


print(f"data: {DATA_LABEL}")
print(f"assets: {', '.join(store.tickers)}")
print(f"training span: {store.dates[0]} .. {base_cfg.data.train_end}; validation span: "
      f"{base_cfg.val_start} .. {base_cfg.val_end}")
print(f"{total_timesteps} env steps per run, {n_envs} envs, window {window}, seeds {list(seeds)}, "
      f"validation every {eval_every} steps")

# %% [markdown]
# ## The runs
# `run_variant(algo, reward, cost_scale, seed, encoder)` trains one variant into its own run directory and
# caches the result, so a variant shared by several studies (the baseline) is trained once. `encoder`
# applies to PPO only (SAC and DDPG always use the LSTM extractor); left out, it is the baseline's. Each record holds the
# validation learning curve (step 0 = the untrained network, then every `eval_every` steps), the
# per-episode training curve (`curves.csv`) and the validation return series. Figures show, left to
# right: the validation Sharpe along training (mean over seeds, band = min..max), the Sharpe ratio of the
# training episodes (paired across variants: the same seed trains every variant on the same episode
# spans, so the shared ups and downs are the market), and the validation NAV of the seed ensemble.

# %%
RUN_ROOT = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="ablation_"))
RUN_ROOT.mkdir(parents=True, exist_ok=True)
RUNS: dict[tuple[str, str, str, float, int], dict] = {}  # (algo, encoder, reward, cost_scale, seed)
context = MarketContext.from_store(store, base_cfg.data)  # risk-free leg, periods a year, volatile days
rf_store, rf_label, PERIODS = context.risk_free, context.risk_free_label, context.periods
date_index = {str(d): i for i, d in enumerate(store.dates.astype("datetime64[D]"))}


FIXED_ENCODER = {"sac": "lstm", "ddpg": "lstm"}  # SAC and DDPG have only the LSTM extractor


def encoder_of(algo: str, encoder: str | None = None) -> str:
    """The encoder a variant uses: SAC/DDPG's fixed LSTM, else ``encoder`` or the baseline's."""
    return FIXED_ENCODER.get(algo) or encoder or baseline.get("encoder", "transformer")


def experiment(algo: str, encoder: str, reward: str, cost_scale: float, seed: int):
    """The experiment config of one variant: the base config with the variant's five knobs set."""
    overrides = dict(base_overrides)
    overrides.update({"training.algo": algo, "env.reward": reward, "env.cost_scale": float(cost_scale),
                      "training.seed": int(seed)})
    params = dict(agent_overrides.get(algo, {}))
    if algo in ("sac", "ddpg"):
        params.setdefault("log_interval", eval_every)  # off-policy callbacks (and evaluations) follow it
    if algo == "ppo":
        params["encoder"] = encoder
    for key, value in params.items():
        overrides[f"agent.{algo}.{key}"] = value
    return load_experiment(config_file, overrides)


def run_variant(algo: str, reward: str, cost_scale: float, seed: int, encoder: str | None = None) -> dict:
    key = (algo, encoder_of(algo, encoder), reward, float(cost_scale), int(seed))
    if key in RUNS:
        return RUNS[key]
    cfg = experiment(*key)
    layout = ObsLayout(cfg.env.window, store.n_assets, store.n_features)
    untrained = evaluate_policy(make_agent(cfg, layout).policy_module(), store, cfg, cfg.val_start, cfg.val_end)
    evals = [{"step": 0, "sharpe": untrained["sharpe"], "total_return": untrained["total_return"]}]

    def on_eval(step: int, val: dict) -> None:
        evals.append({"step": int(step), "sharpe": val["sharpe"], "total_return": val["total_return"]})

    out = RUN_ROOT / f"{algo}_{key[1]}_{reward}_cost{cost_scale:g}_seed{seed}"
    t0 = time.perf_counter()
    final = run_training(cfg, out, store=store, progress=False, on_eval=on_eval)
    wall = time.perf_counter() - t0
    evals.append({"step": int(final["global_step"]), "sharpe": final["sharpe"], "total_return": final["total_return"]})
    val = pd.read_csv(out / "validation_returns.csv")
    r, rf = val["net_return"].to_numpy(), val["risk_free"].to_numpy()
    summary = final  # validation.json: training.metrics over the validation span, as the backtester reports it
    RUNS[key] = {
        "algo": algo, "encoder": key[1], "reward": reward, "cost_scale": float(cost_scale), "seed": int(seed),
        "final": final, "summary": summary, "evals": pd.DataFrame(evals), "curves": pd.read_csv(out / "curves.csv"),
        "returns": r, "risk_free": rf, "dates": val["date"].to_numpy(), "wall_s": wall, "dir": out,
    }
    print(f"{algo}-{key[1]}/{reward}/cost x{cost_scale:g}/seed {seed}: {final['global_step']} steps in {wall:.1f} s, "
          f"validation Sharpe {summary['sharpe']:.2f}, total return {summary['total_return']:.1%}")
    return RUNS[key]


METRICS = [("sharpe", "Sharpe"), ("sortino", "Sortino"), ("annual_return", "ann. return"),
           ("annual_volatility", "ann. vol"), ("max_drawdown", "max DD"), ("cvar_95", "CVaR95"),
           ("active_share", "active share"), ("regime_response", "regime resp."), ("cost_drag", "cost drag/yr")]


WITH_SD = ("Sharpe", "ann. return")  # metrics whose spread over seeds is shown


def variant_row(label: str, runs: list[dict]) -> dict:
    """Mean over seeds of the validation metrics of one variant (and the seeds' sd for ``WITH_SD``)."""
    row: dict = {"variant": label, "seeds": len(runs)}
    for key, name in METRICS:
        vals = np.array([r["summary"][key] for r in runs])
        row[name] = vals.mean()
        if name in WITH_SD:
            row[f"{name} sd"] = vals.std(ddof=1) if len(vals) > 1 else np.nan
    row["turnover/day"] = np.mean([r["final"]["turnover"] for r in runs])
    row["train s"] = np.mean([r["wall_s"] for r in runs])
    return row


def runs_of(algo: str, reward: str, cost_scale: float, encoder: str | None = None) -> list[dict]:
    return [run_variant(algo, reward, cost_scale, s, encoder) for s in seeds]


def plot_validation_curves(groups: dict[str, list[dict]], title: str, ax) -> None:
    """Mean (line) and min-max over seeds (band) of the validation Sharpe against env steps."""
    for label, runs in groups.items():
        curves = pd.concat([r["evals"].set_index("step")["sharpe"].rename(r["seed"]) for r in runs], axis=1)
        curves = curves.groupby(level=0).last().sort_index()
        line = ax.plot(curves.index, curves.mean(axis=1), marker="o", ms=3, label=label)[0]
        ax.fill_between(curves.index, curves.min(axis=1), curves.max(axis=1), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("env steps")
    ax.set_ylabel("validation Sharpe")
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot_training_curves(groups: dict[str, list[dict]], title: str, ax) -> None:
    """Mean Sharpe ratio (reward-agnostic) of the training episodes that ended at each env step.

    The curves are paired: with the same seed every variant is trained on the same episode spans, so the
    common ups and downs are the market and the gap between two lines at one step is the variant's effect.
    """
    for label, runs in groups.items():
        ep = pd.concat([r["curves"] for r in runs])
        if len(ep):
            per_step = ep.groupby("timestep")["sharpe"].mean()
            ax.plot(per_step.index, per_step.to_numpy(), marker="o", ms=3, label=label)
    ax.set_xlabel("env steps")
    ax.set_ylabel("training-episode Sharpe (mean)")
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot_equity(groups: dict[str, list[dict]], title: str, ax, extra: dict[str, tuple] | None = None) -> None:
    """Validation NAV of each variant's seed-averaged daily return (an equal-weight ensemble over seeds)."""
    for label, runs in groups.items():
        r = np.mean([x["returns"] for x in runs], axis=0)
        ax.plot(pd.to_datetime(runs[0]["dates"]), pm.equity_curve(r), label=label)
    for label, (dates, r) in (extra or {}).items():
        ax.plot(pd.to_datetime(dates), pm.equity_curve(r), "k--", lw=1, label=label)
    ax.set_ylabel("NAV (start = 1)")
    ax.tick_params(axis="x", labelrotation=30)
    ax.set_title(title)
    ax.legend(fontsize=8)


# %% [markdown]
# ## Reference: the equal-weight benchmark on the validation span
# Rebalanced equal weights (`evaluation.benchmarks`), stepped through the same environment with the same
# costs, once per cost scale, so the agents' numbers have a yardstick.

# %%
eval_cfg = EvaluationConfig(benchmarks=["equal_weight"])
BENCH: dict[float, dict] = {}
for c in sorted(set(cost_scales) | {baseline["cost_scale"]}):
    env_cfg = dataclasses.replace(base_cfg.env, cost_scale=float(c))
    res = run_benchmarks(store, env_cfg, eval_cfg, rf_store, base_cfg.val_start, base_cfg.val_end,
                         {k: tuple(v) for k, v in base_cfg.data.costs_bps.items()}, names=["equal_weight"])[0]
    days = np.array([date_index[str(d)] for d in res.dates])
    BENCH[float(c)] = {"dates": res.dates.astype(str), "returns": res.returns, "risk_free": rf_store[days],
                       "summary": strategy_metrics(res, context),
                       "costs": float(np.sum(res.cost * res.nav[:-1]))}
bench_rows = pd.DataFrame({f"cost x{c:g}": {name: b["summary"][key] for key, name in METRICS}
                           for c, b in BENCH.items()}).T
show_table(bench_rows, "Equal-weight benchmark on the validation span")

# %% [markdown]
# ## 1. Reward ablation (PPO-Transformer)
# The three rewards of `environments.rewards` / `EnvConfig.reward`: `log_return` = log NAV growth net of
# costs; `dsr` = Moody & Saffell's differential Sharpe ratio; `risk_adjusted` = `return_weight * log_return -
# vol_penalty * vol20 - drawdown_penalty * drawdown - cost_penalty * cost`. Rewards are in different units, so runs are compared on
# the validation metrics and on the Sharpe ratio of their training episodes, not on the reward itself.

# %%
reward_runs = {r: runs_of(baseline["algo"], r, baseline["cost_scale"]) for r in rewards}
reward_table = pd.DataFrame([variant_row(r, runs) for r, runs in reward_runs.items()]).set_index("variant")
show_table(reward_table, f"Reward ablation: {baseline['algo'].upper()}, cost x{baseline['cost_scale']:g}, "
           "validation span, mean and sd over seeds")

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
plot_validation_curves(reward_runs, f"Validation Sharpe by reward [{SOURCE_TAG}]", axes[0])
plot_training_curves(reward_runs, f"Training episodes by reward [{SOURCE_TAG}]", axes[1])
plot_equity(reward_runs, f"Validation NAV by reward [{SOURCE_TAG}]", axes[2],
            {"equal weight": (BENCH[baseline["cost_scale"]]["dates"], BENCH[baseline["cost_scale"]]["returns"])})
plt.tight_layout()
show_figure(fig)

# %% [markdown]
# ## 2. Algorithm ablation: PPO vs SAC vs DDPG
# Same reward (`log_return`), costs and seeds. **Convergence speed** is read off the validation learning
# curve (step 0 = the untrained network): `steps to 90%` is the first evaluation at which the validation
# Sharpe has covered 90% of its total change from step 0 to the end (empty when it did not improve);
# `mean curve Sharpe` is the average over the curve's evaluations (an area under the learning curve).
# `steps/s` counts env steps per second of training wall time, updates included.

# %%
algo_runs = {a: runs_of(a, baseline["reward"], baseline["cost_scale"]) for a in algos}
algo_table = pd.DataFrame([variant_row(a.upper(), runs) for a, runs in algo_runs.items()]).set_index("variant")
show_table(algo_table, f"Algorithm ablation: reward {baseline['reward']}, cost x{baseline['cost_scale']:g}, "
           "validation span, mean and sd over seeds")


def steps_to_fraction(curve: pd.DataFrame, fraction: float = 0.9) -> float:
    """First step at which the validation Sharpe covered ``fraction`` of its change (NaN if it fell)."""
    s = curve.groupby("step")["sharpe"].last().sort_index()
    gain = s.iloc[-1] - s.iloc[0]
    if not gain > 0:
        return np.nan
    hit = s[s >= s.iloc[0] + fraction * gain]
    return float(hit.index[0])


conv_rows = []
for a, runs in algo_runs.items():
    conv_rows.append({
        "algorithm": a.upper(),
        "Sharpe at step 0": np.mean([r["evals"]["sharpe"].iloc[0] for r in runs]),
        "final Sharpe": np.mean([r["summary"]["sharpe"] for r in runs]),
        "steps to 90%": np.nanmean([steps_to_fraction(r["evals"]) for r in runs])
        if any(np.isfinite(steps_to_fraction(r["evals"])) for r in runs) else np.nan,
        "improved seeds": sum(np.isfinite(steps_to_fraction(r["evals"])) for r in runs),
        "mean curve Sharpe": np.mean([r["evals"]["sharpe"].mean() for r in runs]),
        "steps/s": np.mean([r["final"]["global_step"] / max(r["final"]["train_seconds"], 1e-9) for r in runs]),
        "train s": np.mean([r["wall_s"] for r in runs]),
    })
convergence_table = pd.DataFrame(conv_rows).set_index("algorithm")
show_table(convergence_table, "Convergence speed (validation learning curves, mean over seeds)")

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
plot_validation_curves({a.upper(): r for a, r in algo_runs.items()},
                       f"Validation Sharpe by algorithm [{SOURCE_TAG}]", axes[0])
plot_training_curves({a.upper(): r for a, r in algo_runs.items()},
                     f"Training episodes by algorithm [{SOURCE_TAG}]", axes[1])
plot_equity({a.upper(): r for a, r in algo_runs.items()}, f"Validation NAV by algorithm [{SOURCE_TAG}]", axes[2],
            {"equal weight": (BENCH[baseline["cost_scale"]]["dates"], BENCH[baseline["cost_scale"]]["returns"])})
plt.tight_layout()
show_figure(fig)

# %% [markdown]
# ## 3. Encoder ablation: Transformer vs LSTM vs MLP, all with PPO
# `agent.ppo.encoder` swaps the network and nothing else: the same PPO update, the same logistic-normal
# action distribution over the simplex, reward, costs, steps and seeds (`agents/ppo_encoders.py`).
# **Transformer**: attention over the window's days, then over the assets (the first paper's policy).
# **LSTM**: the second paper's extractor (FC + LSTM layers over each asset's window, shared across assets).
# **MLP**: each asset's window flattened through dense layers (no recurrence, no attention). The three share
# the latent width `d_model` of the config. The table adds what depends on the encoder alone: the deployed
# policy's parameter count and its forward latency (ms for a batch of 64 observations).

# %%
from agents.io import load_agent
from agents.ppo_encoders import ENCODERS

unknown = [e for e in encoders if e not in ENCODERS]
if unknown:
    raise ValueError(f"unknown encoder '{unknown[0]}'; PPO offers {', '.join(ENCODERS)}")
ENCODER_LABEL = {"transformer": "Transformer", "lstm": "LSTM", "mlp": "MLP"}


def policy_cost(run: dict, batch: int = 64, repeats: int = 5) -> tuple[int, float]:
    """(parameters, ms per forward of ``batch`` observations) of the run's deployed policy module."""
    module = load_agent(run["dir"]).policy_module().eval()
    n_params = sum(p.numel() for p in module.parameters())
    layout = ObsLayout(int(window), store.n_assets, store.n_features)
    obs = torch.zeros(batch, layout.obs_dim)
    obs[:, layout.feature_dim + store.n_assets] = 1.0  # all cash
    obs[:, layout.feature_dim + store.n_assets + 1:] = 1.0  # every asset tradable
    with torch.no_grad():
        module(obs)
        t0 = time.perf_counter()
        for _ in range(repeats):
            module(obs)
    return n_params, (time.perf_counter() - t0) / repeats * 1e3


encoder_runs = {f"{ENCODER_LABEL[e]} (PPO)": runs_of("ppo", baseline["reward"], baseline["cost_scale"], e)
                for e in encoders}
enc_rows = []
for label, runs in encoder_runs.items():
    n_params, ms = policy_cost(runs[0])
    row = variant_row(label, runs)
    improved = [steps_to_fraction(r["evals"]) for r in runs]
    enc_rows.append({"encoder (algorithm)": label, "policy parameters": n_params, "ms per 64 obs": ms,
                     "Sharpe": row["Sharpe"], "Sharpe sd": row["Sharpe sd"], "max DD": row["max DD"],
                     "turnover/day": row["turnover/day"],
                     "steps to 90%": np.nanmean(improved) if np.isfinite(improved).any() else np.nan,
                     "mean curve Sharpe": np.mean([r["evals"]["sharpe"].mean() for r in runs]),
                     "train s": row["train s"]})
encoder_table = pd.DataFrame(enc_rows).set_index("encoder (algorithm)")
show_table(encoder_table, f"Encoder ablation: PPO, reward {baseline['reward']}, cost x{baseline['cost_scale']:g}, "
           "validation span, mean and sd over seeds")

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
plot_validation_curves(encoder_runs, f"Validation Sharpe by encoder (PPO) [{SOURCE_TAG}]", axes[0])
plot_training_curves(encoder_runs, f"Training episodes by encoder (PPO) [{SOURCE_TAG}]", axes[1])
plot_equity(encoder_runs, f"Validation NAV by encoder (PPO) [{SOURCE_TAG}]", axes[2],
            {"equal weight": (BENCH[baseline["cost_scale"]]["dates"], BENCH[baseline["cost_scale"]]["returns"])})
plt.tight_layout()
show_figure(fig)

# %% [markdown]
# ## 4. Transaction-cost sensitivity
# `env.cost_scale` multiplies every fee and slippage rate (per-category defaults of `data.universe`), in
# training and in validation alike: a model trained with costs x5 is evaluated with costs x5. The
# equal-weight benchmark runs under the same scale. `turnover/day` is the mean daily sum of absolute risky
# weight changes; `costs (NAV)` the fees and slippage paid over the validation span as a fraction of the
# initial NAV.

# %%
cost_runs = {c: runs_of(baseline["algo"], baseline["reward"], c) for c in cost_scales}
cost_rows = []
for c, runs in cost_runs.items():
    row = variant_row(f"cost x{c:g}", runs)
    b = BENCH[float(c)]
    row["EW Sharpe"] = b["summary"]["sharpe"]
    row["EW turnover/day"] = b["summary"]["turnover"]
    row["EW costs (NAV)"] = b["costs"]
    cost_rows.append(row)
cost_table = pd.DataFrame(cost_rows).set_index("variant")
show_table(cost_table, f"Cost sensitivity: {baseline['algo'].upper()}, reward {baseline['reward']}, "
           "validation span, mean and sd over seeds (EW = equal weight)")

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
xs = np.array(list(cost_runs))
axes[0].errorbar(xs, cost_table["Sharpe"], yerr=cost_table["Sharpe sd"].fillna(0), marker="o", capsize=3,
                 label=baseline["algo"].upper())
axes[0].plot(xs, cost_table["EW Sharpe"], "k--", marker="s", label="equal weight")
axes[0].set_xlabel("cost scale")
axes[0].set_ylabel("validation Sharpe")
axes[0].set_title(f"Sharpe vs cost scale [{SOURCE_TAG}]")
axes[0].legend(fontsize=8)
axes[1].plot(xs, cost_table["turnover/day"], marker="o", label=baseline["algo"].upper())
axes[1].plot(xs, cost_table["EW turnover/day"], "k--", marker="s", label="equal weight")
axes[1].set_xlabel("cost scale")
axes[1].set_title(f"Turnover vs cost scale [{SOURCE_TAG}]")
axes[1].legend(fontsize=8)
plot_validation_curves({f"x{c:g}": r for c, r in cost_runs.items()},
                       f"Validation Sharpe by cost scale [{SOURCE_TAG}]", axes[2])
plt.tight_layout()
show_figure(fig)

# %% [markdown]
# ## Summary: every variant against the baseline
# Each variant's daily validation returns are averaged over seeds (an equal-weight ensemble of its seeds)
# and compared with the baseline's on the same days: the Sharpe difference of the excess returns with a
# 95% paired stationary-bootstrap interval (`evaluation.significance`). An interval that contains 0 means
# the data cannot tell the two apart. (Cost-scale variants are evaluated under different costs, so for
# them the difference mixes the model with the cost level.)

# %%
base_key = (baseline["algo"], encoder_of(baseline["algo"]), baseline["reward"], float(baseline["cost_scale"]))


def ensemble(algo: str, encoder: str, reward: str, cost_scale: float) -> tuple[np.ndarray, np.ndarray]:
    runs = runs_of(algo, reward, cost_scale, encoder)  # cached: trains only a missing baseline
    return np.mean([r["returns"] for r in runs], axis=0), runs[0]["risk_free"]


base_r, base_rf = ensemble(*base_key)
rows = []
for study, keys in (
    ("reward", [(baseline["algo"], base_key[1], r, baseline["cost_scale"]) for r in rewards]),
    ("algorithm", [(a, encoder_of(a), baseline["reward"], baseline["cost_scale"]) for a in algos]),
    ("encoder", [("ppo", e, baseline["reward"], baseline["cost_scale"]) for e in encoders]),
    ("cost", [(baseline["algo"], base_key[1], baseline["reward"], c) for c in cost_scales]),
):
    for algo, enc, reward, c in keys:
        r, rf = ensemble(algo, enc, reward, c)
        iv = sharpe_difference_interval(r - rf, base_r - base_rf, PERIODS, 0.95, int(n_boot), seed=0)
        rows.append({"study": study, "variant": f"{algo.upper()}-{ENCODER_LABEL[enc]} / {reward} / cost x{c:g}",
                     "ensemble Sharpe": pm.sharpe_ratio(r, rf, PERIODS), "diff vs baseline": iv.estimate,
                     "95% low": iv.low, "95% high": iv.high,
                     "significant": bool(iv.excludes_zero) if (algo, enc, reward, float(c)) != base_key else False})
summary_table = pd.DataFrame(rows).set_index(["study", "variant"])
show_table(summary_table, "All variants vs the baseline (seed-ensemble Sharpe difference, paired bootstrap)")

n_runs = len(RUNS)
total_wall = sum(r["wall_s"] for r in RUNS.values())
display(Markdown(
    f"- Data: {DATA_LABEL}; validation {base_cfg.val_start} .. {base_cfg.val_end}; {n_runs} training runs, "
    f"{total_wall / 60:.1f} min of training.\n"
    f"- Best reward by mean Sharpe: **{reward_table['Sharpe'].idxmax()}**; best algorithm: "
    f"**{algo_table['Sharpe'].idxmax()}**; best encoder (all PPO): **{encoder_table['Sharpe'].idxmax()}**; "
    f"Sharpe at cost x{min(cost_scales):g} vs x{max(cost_scales):g}: "
    f"{cost_table['Sharpe'].iloc[0]:.2f} vs {cost_table['Sharpe'].iloc[-1]:.2f}.\n"
    f"- {int(summary_table['significant'].sum())} of {len(summary_table)} variants differ from the baseline "
    f"with 95% confidence (small budgets and few seeds make most differences noise; read the intervals)."
))
ABLATION_RESULTS = {
    "source": store.source, "synthetic": bool(store.synthetic), "tables": sorted(TABLES),
    "reward_rows": list(reward_table.index), "algo_rows": list(algo_table.index),
    "encoder_rows": list(encoder_table.index), "cost_rows": list(cost_table.index), "n_runs": n_runs,
}
if run_dir is None:
    shutil.rmtree(RUN_ROOT, ignore_errors=True)
