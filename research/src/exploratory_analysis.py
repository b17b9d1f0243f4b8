# ruff: noqa: E402
# Source of research/exploratory_analysis.ipynb (percent format); rebuild with research/build_notebooks.py.

# %% [markdown]
# # Exploratory analysis of the trading universe
#
# What the agents will trade, before any agent sees it:
#
# 1. **The universe**: tickers, the four categories (growth, hedge, traditional, stable), calendars
#    (7-day crypto vs weekday ETFs), listing dates and cost rates.
# 2. **Return distributions and tails by category**: volatility, skewness, excess kurtosis, historical
#    VaR/CVaR against the normal distribution's.
# 3. **Rolling correlations and regimes**: correlation with the reference coin, average pairwise
#    correlation, calm vs stress regimes defined from the growth index's realised volatility.
# 4. **20-day rolling Sharpe ratio per asset**.
# 5. **The features**: normalisation check (train vs test span), distributions, redundancy and a
#    next-day information coefficient.
#
# Runs on the seeded **synthetic** market by default (no network). Set `data_dir` in the parameters cell
# to a folder of yfinance-style CSVs (one `TICKER.csv` per asset) to run it on real prices; every table
# and plot title says which data it shows.

# %% [parameters]
# Parameters: the only cell to edit. Tests override these values before executing the notebook.
source = "synthetic"  # "synthetic" (seeded simulator, no network) or "csv"
data_dir = None  # folder of yfinance-style CSVs, e.g. "/work/shared/data/market"; implies source="csv"
config_path = "configs/paper.yaml"  # YAML with a `data:` section, relative to the repository root
seed = 0  # seed of the synthetic market
start = None  # ISO date overriding data.start (None: the config's)
end = None  # ISO date overriding data.end
train_end = None  # ISO date overriding data.train_end (normalisation statistics use days <= train_end)
max_assets_per_category = None  # keep only the first k tickers of each category (small runs)
sharpe_window = 20  # days in the rolling Sharpe ratio
corr_window = 60  # trading days in the rolling correlations
regime_vol_window = 30  # trading days in the realised volatility that defines calm/stress regimes
features_to_plot = ["ret_1", "rvol_21", "rsi_14", "macd_hist", "sma_50_200", "corr_ref_60"]

# %%
import sys
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.io as pio
from IPython.display import Markdown, display
from scipy import stats


def find_repo_root(here: Path) -> Path:
    """The first folder at or above ``here`` holding the project (pyproject.toml and data/market.py)."""
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "data" / "market.py").is_file():
            return folder
    raise FileNotFoundError("run this notebook from inside the drl-hedge-fund repository")


ROOT = find_repo_root(Path.cwd().resolve())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.config import DataConfig, from_mapping, load_yaml
from data.data_loader import load_market
from data.feature_engineering import build_feature_store, compute_raw_features
from data.universe import calendar_of
from training import metrics as pm

pio.renderers.default = "plotly_mimetype+notebook_connected"
pd.set_option("display.float_format", "{:.4f}".format)
pd.set_option("display.width", 160)
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
warnings.filterwarnings("ignore", category=RuntimeWarning)  # empty rolling windows before listings

# %% [markdown]
# ## Data
# The config's `data:` section gives the universe and the span; the parameters above override the
# source, seed and dates. Tickers the source lacks are dropped and reported (never silently).

# %%
config_file = Path(config_path) if Path(config_path).is_absolute() else ROOT / config_path
data_raw = dict(load_yaml(str(config_file))["data"])
if data_dir is not None:
    source = "csv"
data_raw.update(source=source, seed=int(seed), data_dir=str(data_dir or ""))
for key, value in (("start", start), ("end", end), ("train_end", train_end)):
    if value is not None:
        data_raw[key] = value
if max_assets_per_category:
    data_raw["universe"] = {c: list(t)[: int(max_assets_per_category)] for c, t in data_raw["universe"].items()}
cfg = from_mapping(DataConfig, data_raw, "data")
market = load_market(cfg, verbose=False)

SOURCE_TAG = "SYNTHETIC" if market.synthetic else market.source.upper()
DATA_LABEL = (
    f"SYNTHETIC market (seeded simulator, seed {cfg.seed}; not real prices)"
    if market.synthetic
    else f"{market.source.upper()} prices from {data_dir or cfg.data_dir}"
)
TABLES: dict[str, pd.DataFrame] = {}


def show_table(df: pd.DataFrame, title: str) -> None:
    """Display ``df`` under a title that names the data source; keep it in ``TABLES`` for the summary."""
    df.attrs["data_source"] = DATA_LABEL
    TABLES[title] = df
    display(Markdown(f"**{title}** (data: {DATA_LABEL})"))
    display(df)


print(f"data: {DATA_LABEL}")
print(f"span {market.dates[0]} .. {market.dates[-1]} ({market.n_days} calendar days), "
      f"{market.n_assets} assets, train_end {cfg.train_end}")
for note in market.notes:
    print("note:", note)

# %% [markdown]
# ## 1. The universe
# Listing date = first day with a quote inside the span (an asset quoted before the span is listed from
# its first day). Costs are the per-category rates in basis points of traded notional (the defaults of
# `data.universe` unless the config's `costs_bps` overrides them); the environment scales slippage with
# trade size (square-root rule).

# %%
universe = cfg.build_universe()
costs = {a.ticker: (a.fee_bps, a.slippage_bps) for a in universe.assets}
dates = pd.DatetimeIndex(market.dates)
close = pd.DataFrame(market.close, index=dates, columns=list(market.tickers))
listed = pd.DataFrame(market.listed, index=dates, columns=list(market.tickers))
quoted = pd.DataFrame(market.tradable, index=dates, columns=list(market.tickers))
category_of = dict(zip(market.tickers, market.categories, strict=True))
periods_of = {t: pm.PERIODS_7D if calendar_of(t) == "7d" else pm.PERIODS_WEEKDAY for t in market.tickers}

universe_table = pd.DataFrame(
    {
        "category": [category_of[t] for t in market.tickers],
        "calendar": [calendar_of(t) for t in market.tickers],
        "listed from": [listed[t].idxmax().date() for t in market.tickers],
        "quote days": [int(quoted[t].sum()) for t in market.tickers],
        "fee bps": [costs[t][0] for t in market.tickers],
        "slippage bps": [costs[t][1] for t in market.tickers],
        "last close": [float(close[t].dropna().iloc[-1]) for t in market.tickers],
    },
    index=pd.Index(market.tickers, name="ticker"),
)
show_table(universe_table, "Universe")
if market.dropped:
    print("dropped by the loader:", ", ".join(market.dropped))
show_table(
    universe_table.groupby("category", sort=False).agg(
        assets=("calendar", "size"), crypto_7d=("calendar", lambda c: int((c == "7d").sum())),
        fee_bps=("fee bps", "first"), slippage_bps=("slippage bps", "first"),
    ),
    "Assets per category",
)

# %%
CAT_COLORS = {"growth": "tab:orange", "hedge": "tab:red", "traditional": "tab:blue", "stable": "tab:green"}
fig, ax = plt.subplots(figsize=(10, 0.28 * market.n_assets + 1.2))
for k, t in enumerate(market.tickers):
    on = listed[t].to_numpy()
    first = dates[np.argmax(on)]
    ax.hlines(k, first, dates[-1], color=CAT_COLORS.get(category_of[t], "gray"), lw=6)
ax.set_yticks(range(market.n_assets), market.tickers)
ax.invert_yaxis()
ax.set_title(f"Listing timeline, coloured by category [{SOURCE_TAG}]")
handles = [plt.Line2D([], [], color=c, lw=6, label=k) for k, c in CAT_COLORS.items() if k in market.categories]
ax.legend(handles=handles, loc="lower right", fontsize=8)
plt.tight_layout()
plt.show()

# %%
growth_index = close.div(close.apply(lambda s: s.dropna().iloc[0]))
long = growth_index.reset_index(names="date").melt(id_vars="date", var_name="ticker", value_name="growth of 1")
long["category"] = long["ticker"].map(category_of)
fig = px.line(long.dropna(), x="date", y="growth of 1", color="ticker", facet_row="category", log_y=True,
              height=220 * len(set(market.categories)),
              title=f"Growth of 1 unit bought at listing (log scale) [{SOURCE_TAG}]")
fig.update_yaxes(matches=None)
fig.show()

# %% [markdown]
# ## 2. Return distributions and tails by category
# Daily log returns on each asset's own quote days (an ETF's Friday-to-Monday move is one return; the
# carried weekend closes are not zero-return observations). Annualised with 365 periods for 7-day assets
# and 252 for weekday assets. VaR/CVaR are historical, on simple returns, as returns (negative = loss),
# from `training.metrics`; "VaR99 / normal" compares the empirical 1% quantile with that
# of a normal with the same mean and standard deviation (> 1 = fatter left tail).

# %%
quote_returns: dict[str, pd.Series] = {}
for t in market.tickers:
    c = close[t][quoted[t]].dropna()
    quote_returns[t] = np.log(c).diff().dropna()

rows = []
for t, lr in quote_returns.items():
    x = lr.to_numpy()
    simple = np.expm1(x)
    sd = x.std(ddof=1)
    normal_var99 = x.mean() + sd * stats.norm.ppf(0.01)
    rows.append({
        "ticker": t, "category": category_of[t], "days": x.size,
        "ann. mean": x.mean() * periods_of[t], "ann. vol": sd * np.sqrt(periods_of[t]),
        "skew": stats.skew(x, bias=False) if sd > 0 else np.nan,
        "excess kurtosis": stats.kurtosis(x, fisher=True, bias=False) if sd > 0 else np.nan,
        "VaR95": pm.value_at_risk(simple, 0.95), "VaR99": pm.value_at_risk(simple, 0.99),
        "CVaR95": pm.conditional_value_at_risk(simple, 0.95),
        "VaR99 / normal": np.log1p(pm.value_at_risk(simple, 0.99)) / normal_var99 if sd > 0 else np.nan,
        "worst day": simple.min(), "best day": simple.max(),
        "Jarque-Bera p": stats.jarque_bera(x).pvalue if sd > 0 else np.nan,
    })
tail_table = pd.DataFrame(rows).set_index("ticker")

# Independent cross-checks: pandas' bias-corrected kurtosis and numpy's quantile give the same numbers.
for t, lr in quote_returns.items():
    if lr.std() > 0:
        assert np.isclose(tail_table.loc[t, "excess kurtosis"], lr.kurt(), rtol=1e-9, atol=1e-9), t
        assert np.isclose(tail_table.loc[t, "VaR95"], np.quantile(np.expm1(lr.to_numpy()), 0.05)), t
show_table(tail_table, "Return distribution and tails per asset (daily, quote days)")

category_tails = tail_table.groupby("category", sort=False)[
    ["ann. vol", "skew", "excess kurtosis", "VaR95", "VaR99", "CVaR95", "VaR99 / normal", "worst day"]
].median()
category_tails.insert(0, "assets", tail_table.groupby("category", sort=False).size())
show_table(category_tails, "Tails by category (median over the category's assets)")

# %%
cats = [c for c in CAT_COLORS if c in market.categories]
fig, axes = plt.subplots(2, len(cats), figsize=(3.6 * len(cats), 6.4), squeeze=False)
grid = np.linspace(-8, 8, 400)
for j, cat in enumerate(cats):
    z = np.concatenate([
        ((lr - lr.mean()) / lr.std()).to_numpy() for t, lr in quote_returns.items()
        if category_of[t] == cat and lr.std() > 0
    ] or [np.zeros(1)])
    ax = axes[0, j]
    ax.hist(z, bins=120, range=(-8, 8), density=True, color=CAT_COLORS[cat], alpha=0.6, label="standardised")
    ax.plot(grid, stats.norm.pdf(grid), "k--", lw=1, label="N(0,1)")
    if z.size > 10:
        nu, loc, scale = stats.t.fit(z)
        ax.plot(grid, stats.t.pdf(grid, nu, loc, scale), "k-", lw=1, label=f"t (nu={nu:.1f})")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1)
    ax.set_title(f"{cat} [{SOURCE_TAG}]")
    ax.legend(fontsize=7)
    stats.probplot(z, dist="norm", plot=axes[1, j])
    axes[1, j].set_title(f"{cat}: normal QQ plot")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Rolling correlations and regimes
# Correlations need synchronous returns: each calendar day's return is folded onto the last weekday on
# or before it (`training.metrics.weekday_groups`), so a Friday row holds the Friday-to-
# Monday move of every asset, crypto and ETF alike. Regimes: the growth index (equal weight of the listed
# growth assets) is in **stress** when its realised volatility over `regime_vol_window` trading days is
# above its median over the training span (days <= train_end), else **calm**.

# %%
fwd = close.shift(-1) / close - 1.0  # row t: the return from close t to close t+1 (NaN before listing)
groups = pm.weekday_groups(market.dates)
log_growth = np.log1p(fwd)
complete = log_growth.notna().groupby(groups).sum() == log_growth.groupby(groups).size().to_numpy()[:, None]
trading = np.expm1(log_growth.groupby(groups).sum(min_count=1)).where(complete)
trading.index = dates[np.unique(groups, return_index=True)[1]]
trading = trading.iloc[:-1]  # the last group holds the unknown return out of the span's last day

# Cross-check with the evaluation layer's compounding on one asset listed over the whole span.
full = [t for t in market.tickers if listed[t].all()]
if full:
    r = fwd[full[0]].to_numpy()[:-1]
    ref_comp = pm.compound_by_group(r, groups[:-1])
    assert np.allclose(ref_comp[: len(trading)], trading[full[0]].to_numpy()[: len(ref_comp)], equal_nan=True)

ref = "BTC-USD" if "BTC-USD" in market.tickers else next(
    (t for t in market.tickers if category_of[t] == "growth"), market.tickers[0])
roll_corr_ref = trading.rolling(corr_window, min_periods=corr_window).corr(trading[ref]).drop(columns=[ref])
pair_corr = trading.rolling(corr_window, min_periods=corr_window).corr()
n_tr = trading.shape[1]
off_diag = ~np.eye(n_tr, dtype=bool)
avg_pair = pd.Series(
    [np.nanmean(m[off_diag]) if np.isfinite(m[off_diag]).any() else np.nan
     for m in pair_corr.to_numpy().reshape(-1, n_tr, n_tr)],
    index=trading.index, name="average pairwise correlation",
)

growth_cols = [t for t in market.tickers if category_of[t] == "growth"] or [ref]
growth_ret = trading[growth_cols].mean(axis=1, skipna=True)
growth_vol = growth_ret.rolling(regime_vol_window, min_periods=regime_vol_window).std() * np.sqrt(252)
threshold = float(growth_vol[growth_vol.index <= pd.Timestamp(cfg.train_end)].median())
regime = pd.Series(np.where(growth_vol > threshold, "stress", "calm"), index=trading.index).where(growth_vol.notna())
print(f"stress threshold: growth-index volatility above {threshold:.1%} a year (training-span median)")

fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
for t in roll_corr_ref.columns:
    axes[0].plot(roll_corr_ref.index, roll_corr_ref[t], lw=0.9, color=CAT_COLORS.get(category_of[t], "gray"),
                 alpha=0.8, label=t)
axes[0].set_title(f"{corr_window}-day rolling correlation with {ref}, coloured by category [{SOURCE_TAG}]")
axes[0].legend(ncol=6, fontsize=6)
axes[1].plot(avg_pair.index, avg_pair, color="k", lw=1)
axes[1].set_title(f"Average pairwise {corr_window}-day correlation [{SOURCE_TAG}]")
axes[2].plot(growth_vol.index, growth_vol, color="tab:orange", lw=1)
axes[2].axhline(threshold, color="k", ls="--", lw=0.8)
axes[2].set_title(f"Growth-index realised volatility (annualised); shaded = stress [{SOURCE_TAG}]")
for ax in axes:
    ax.fill_between(regime.index, 0, 1, where=(regime == "stress").to_numpy(), transform=ax.get_xaxis_transform(),
                    color="tab:red", alpha=0.08)
plt.tight_layout()
plt.show()

# %%
regime_rows = []
for name in ("calm", "stress"):
    on = regime == name
    r = growth_ret[on].dropna()
    episodes = int(((regime == name) & (regime.shift() != name)).sum())
    regime_rows.append({
        "regime": name, "share of days": float(on.mean()), "episodes": episodes,
        "growth index ann. return": float(r.mean() * 252) if len(r) else np.nan,
        "growth index ann. vol": float(r.std() * np.sqrt(252)) if len(r) > 1 else np.nan,
        "avg pairwise corr": float(avg_pair[on].mean()),
    })
show_table(pd.DataFrame(regime_rows).set_index("regime"), "Regimes of the growth index")

corr_by_regime = {name: trading[regime == name].corr(min_periods=20) for name in ("calm", "stress")}
cat_arr = np.array([category_of[t] for t in trading.columns])
pair_rows = []
for a_i, a in enumerate(cats):
    for b in cats[a_i:]:
        sel = (cat_arr[:, None] == a) & (cat_arr[None, :] == b) & off_diag
        if not sel.any():
            continue
        calm_c = np.nanmean(corr_by_regime["calm"].to_numpy()[sel])
        stress_c = np.nanmean(corr_by_regime["stress"].to_numpy()[sel])
        pair_rows.append({"pair": f"{a} / {b}", "calm": calm_c, "stress": stress_c, "stress - calm": stress_c - calm_c})
regime_corr_table = pd.DataFrame(pair_rows).set_index("pair")
show_table(regime_corr_table, "Average correlation between categories, calm vs stress")

fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
for ax, name in zip(axes, ("calm", "stress"), strict=True):
    im = ax.imshow(corr_by_regime[name].to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(n_tr), trading.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(n_tr), trading.columns, fontsize=7)
    ax.grid(False)
    ax.set_title(f"{name} correlations [{SOURCE_TAG}]")
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

# %% [markdown]
# ## 4. 20-day rolling Sharpe ratio per asset
# On each asset's quote-day simple returns: `mean / std (ddof=1) * sqrt(periods)` over the last
# `sharpe_window` quote days, with no risk-free deduction (a raw asset Sharpe), 365 periods for 7-day
# assets and 252 for weekday assets. The last value is checked against
# `training.metrics.sharpe_ratio`.

# %%
rolling_sharpe = {}
for t, lr in quote_returns.items():
    simple = np.expm1(lr)
    mean = simple.rolling(sharpe_window).mean()
    sd = simple.rolling(sharpe_window).std()
    rolling_sharpe[t] = (mean / sd.where(sd > 1e-12) * np.sqrt(periods_of[t])).dropna()
    if len(simple) >= sharpe_window and sd.iloc[-1] > 1e-12:
        expected = pm.sharpe_ratio(simple.to_numpy()[-sharpe_window:], 0.0, periods_of[t])
        assert np.isclose(rolling_sharpe[t].iloc[-1], expected), t

rs_table = pd.DataFrame({
    t: {"category": category_of[t], "mean": s.mean(), "median": s.median(), "std": s.std(),
        "min": s.min(), "max": s.max(), "share > 0": (s > 0).mean(), "share > 2": (s > 2).mean(),
        "last": s.iloc[-1] if len(s) else np.nan}
    for t, s in rolling_sharpe.items()
}).T
show_table(rs_table, f"{sharpe_window}-day rolling Sharpe ratio per asset")

fig, axes = plt.subplots(len(cats), 1, figsize=(11, 2.6 * len(cats)), sharex=True, squeeze=False)
for ax, cat in zip(axes[:, 0], cats, strict=True):
    for t, s in rolling_sharpe.items():
        if category_of[t] == cat:
            ax.plot(s.index, s.clip(-15, 15), lw=0.8, label=t)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_title(f"{cat}: {sharpe_window}-day rolling Sharpe (clipped to +-15) [{SOURCE_TAG}]")
    ax.legend(ncol=5, fontsize=7)
plt.tight_layout()
plt.show()

monthly = pd.DataFrame({t: s.resample("MS").mean() for t, s in rolling_sharpe.items()})
fig = px.imshow(monthly.T.clip(-10, 10), aspect="auto", color_continuous_scale="RdBu", zmin=-10, zmax=10,
                labels={"x": "month", "y": "asset", "color": "Sharpe"},
                title=f"Monthly mean of the {sharpe_window}-day rolling Sharpe [{SOURCE_TAG}]")
fig.show()

# %% [markdown]
# ## 5. The features
# `data.feature_engineering` turns OHLCV into scale-free causal features per asset and day, drops the
# warm-up rows and normalises with statistics fitted on the training span only. Below: the normalised
# values' train vs test moments (train should be near 0/1; a large test drift means the test span looks
# different from the training span), raw distributions of a few features by category, their rank
# correlations, redundant pairs, and the information coefficient (Spearman correlation of the feature at
# day t with the return from t to t+1, pooled over assets; train and test spans separately).

# %%
store = build_feature_store(market, cfg.train_end, clip=cfg.clip)
names, raw = compute_raw_features(market)
t0 = int(np.searchsorted(market.dates, store.dates[0]))
raw = raw[t0:]
assert raw.shape == store.features.shape
L = store.listed
train = (store.dates <= store.train_end)[:, None] & L
test = (store.dates > store.train_end)[:, None] & L
X = store.features.astype(np.float64)
print(f"feature store: {store.n_days} days x {store.n_assets} assets x {store.n_features} features "
      f"({store.dates[0]} .. {store.dates[-1]}); {int(train.any(axis=1).sum())} train days, "
      f"{int(test.any(axis=1).sum())} test days")


def moments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not mask.any():
        return np.full(store.n_features, np.nan), np.full(store.n_features, np.nan)
    v = X[mask]
    return v.mean(axis=0), v.std(axis=0)


tr_mean, tr_std = moments(train)
te_mean, te_std = moments(test)
clipped = (np.abs(X[L]) >= cfg.clip - 1e-6).mean(axis=0)
feature_summary = pd.DataFrame({
    "family": [n.split("_")[0] for n in names], "train mean": tr_mean, "train std": tr_std,
    "test mean": te_mean, "test std": te_std, "test drift (train sd)": (te_mean - tr_mean) / np.maximum(tr_std, 1e-12),
    "share clipped": clipped,
}, index=pd.Index(names, name="feature"))
show_table(
    feature_summary.reset_index().groupby("family", sort=False)["feature"].agg(
        features="size", examples=lambda f: ", ".join(list(f)[:4]) + (" ..." if len(f) > 4 else "")),
    "Feature families",
)
show_table(feature_summary.reindex(feature_summary["test drift (train sd)"].abs().sort_values(ascending=False).index).head(12),
           "Features with the largest train-to-test drift")
print(f"largest |train mean| {np.nanmax(np.abs(tr_mean)):.3f}, train std range "
      f"{np.nanmin(tr_std):.3f} .. {np.nanmax(tr_std):.3f} (clipping at +-{cfg.clip:g} moves them off 0/1)")

# %%
plot_feats = [f for f in features_to_plot if f in names]
cat_rows = np.broadcast_to(np.array(store.categories), L.shape)
ncols = 3
nrows = max(1, -(-len(plot_feats) // ncols))
fig, axes = plt.subplots(nrows, ncols, figsize=(12, 3.2 * nrows), squeeze=False)
for ax, f in zip(axes.ravel(), plot_feats, strict=False):
    k = names.index(f)
    vals = raw[..., k]
    ok = L & np.isfinite(vals)
    lo, hi = np.nanpercentile(vals[ok], [1, 99])
    for cat in cats:
        v = vals[ok & (cat_rows == cat)]
        if v.size:
            ax.hist(np.clip(v, lo, hi), bins=60, density=True, histtype="step", color=CAT_COLORS[cat], label=cat)
    ax.set_title(f"{f} (raw) [{SOURCE_TAG}]")
    ax.legend(fontsize=7)
for ax in axes.ravel()[len(plot_feats):]:
    ax.set_visible(False)
plt.tight_layout()
plt.show()

pooled = pd.DataFrame(X[L], columns=names)
spearman_few = pooled[plot_feats].corr(method="spearman")
show_table(spearman_few, "Spearman correlation of a few normalised features (pooled over assets and days)")

ranks = pooled.rank()
rank_corr = np.corrcoef(ranks.to_numpy(), rowvar=False)
iu = np.triu_indices(len(names), 1)
pairs = pd.DataFrame({"a": np.array(names)[iu[0]], "b": np.array(names)[iu[1]], "spearman": rank_corr[iu]})
pairs = pairs.reindex(pairs["spearman"].abs().sort_values(ascending=False).index)
show_table(pairs.head(10).reset_index(drop=True), "Most redundant feature pairs (|Spearman|)")
print(f"{int((pairs['spearman'].abs() > 0.95).sum())} of {len(pairs)} feature pairs have |Spearman| > 0.95")

# %%
nxt = store.returns.copy()
has_next = L & np.vstack([L[1:], np.zeros((1, L.shape[1]), bool)])  # the return out of the last day is unknown


def info_coef(mask: np.ndarray) -> np.ndarray:
    if mask.sum() < 10:
        return np.full(len(names), np.nan)
    f_rank = pd.DataFrame(X[mask]).rank().to_numpy()
    r_rank = pd.Series(nxt[mask]).rank().to_numpy()
    f_c, r_c = f_rank - f_rank.mean(axis=0), r_rank - r_rank.mean()
    den = np.sqrt((f_c**2).sum(axis=0) * (r_c**2).sum())
    return (f_c * r_c[:, None]).sum(axis=0) / np.where(den > 0, den, np.nan)


ic = pd.DataFrame({"IC train": info_coef(train & has_next), "IC test": info_coef(test & has_next)},
                  index=pd.Index(names, name="feature"))
check_feature = plot_feats[0] if plot_feats else names[0]
k = names.index(check_feature)
mask = train & has_next
assert np.isclose(ic.loc[check_feature, "IC train"], stats.spearmanr(X[mask][:, k], nxt[mask]).statistic)
ic["same sign"] = np.sign(ic["IC train"]) == np.sign(ic["IC test"])
ic_top = ic.reindex(ic["IC train"].abs().sort_values(ascending=False).index).head(12)
show_table(ic_top, "Next-day information coefficient (Spearman), top 12 by |IC train|")
noise = 1.96 / np.sqrt(max(int(mask.sum()), 1))
print(f"|IC| above {noise:.3f} is outside a 95% band for zero correlation on {int(mask.sum())} train samples "
      f"(ignoring cross-asset dependence); {int((ic['IC train'].abs() > noise).sum())} features exceed it")

# %% [markdown]
# ## Summary
# Computed from the tables above (the numbers change with the data; nothing here is typed by hand).

# %%
med_kurt = category_tails["excess kurtosis"]
lines = [f"- Data: {DATA_LABEL}; {market.n_assets} assets, {market.dates[0]} .. {market.dates[-1]}."]
lines.append("- Median excess kurtosis by category: "
             + ", ".join(f"{c} {v:.1f}" for c, v in med_kurt.items() if np.isfinite(v)) + ".")
lines.append("- Median daily VaR99 by category: "
             + ", ".join(f"{c} {v:.2%}" for c, v in category_tails["VaR99"].items()) + ".")
if "growth / growth" in regime_corr_table.index:
    g = regime_corr_table.loc["growth / growth"]
    lines.append(f"- Growth-growth correlation: {g['calm']:.2f} calm vs {g['stress']:.2f} stress.")
if "growth / traditional" in regime_corr_table.index:
    g = regime_corr_table.loc["growth / traditional"]
    lines.append(f"- Growth-traditional correlation: {g['calm']:.2f} calm vs {g['stress']:.2f} stress.")
risky_rs = rs_table[rs_table["category"] != "stable"]["share > 0"].astype(float)
if len(risky_rs):
    lines.append(f"- Among risky assets the {sharpe_window}-day Sharpe is positive most often for {risky_rs.idxmax()} "
                 f"({risky_rs.max():.0%} of days) and least often for {risky_rs.idxmin()} ({risky_rs.min():.0%}).")
lines.append(f"- {store.n_features} features; the largest train-to-test drift is "
             f"{feature_summary['test drift (train sd)'].abs().max():.2f} train standard deviations; "
             f"the largest |IC train| is {ic['IC train'].abs().max():.3f}.")
display(Markdown("\n".join(lines)))
EDA_RESULTS = {
    "source": market.source, "n_assets": market.n_assets, "tables": sorted(TABLES),
    "categories": sorted(set(market.categories)), "n_features": store.n_features,
}
