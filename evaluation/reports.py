"""Report files: ``metrics.json``, ``metrics.md``, a quantstats tear sheet and interactive plotly charts.

Inputs are the backtester's plain records (``evaluation.backtester.StrategyResult`` plus a JSON-safe
``report`` dict); every file is written to a temporary name in the output folder and renamed into
place, so a reader never sees half a report.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data.atomic_files import atomic_path, atomic_write_text
from evaluation.performance_metrics import (
    DIAGNOSTIC_COLUMNS,
    METRIC_COLUMNS,
    defensive_share,
    drawdown_series,
    fold_to_periods,
    volatile_days,
    weight_by_category,
)

SYNTHETIC_LABEL = "SYNTHETIC (simulated market, not real prices)"


def aggregate_rows(rows: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """Mean and sample spread (std, ddof=1) of several runs' metrics: the multi-seed row."""
    keys = list(rows[0]["metrics"])
    values = {k: np.array([row["metrics"][k] for row in rows], dtype=np.float64) for k in keys}
    mean = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in values.items()}
    spread = {k: float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else float("nan")
              for k, v in values.items()}
    cats = list(rows[0]["avg_weight_by_category"])
    by_cat = {c: float(np.mean([row["avg_weight_by_category"][c] for row in rows])) for c in cats}
    return {"name": "agent_mean", "label": label, "kind": "agent_mean", "metrics": mean, "spread": spread,
            "avg_weight_by_category": by_cat, "n_runs": len(rows)}


def allocation_insights(results: Sequence[Any], context: Any) -> dict[str, Any]:
    """Average weight by category, and hedge / stable+cash weight on the volatile days vs the rest.

    ``context`` is a ``training.rollout.MarketContext``: the volatile days are the top decile of the span's
    days by the trailing 20-day volatility of the equal-weight risky return known at that day's close, the
    same days as the ``regime_response``/``hedge_response`` diagnostics (which are the differences of the
    columns here).
    """
    cats = tuple(context.categories)
    idx = context.day_index(results[0].dates)
    volatile = volatile_days(context.volatility[idx])
    rows = []
    for r in results:
        by_cat = weight_by_category(r.weights, cats)
        hedge = by_cat.get("hedge", np.zeros(r.weights.shape[0]))
        defensive = defensive_share(r.weights, cats)
        rows.append({
            "label": r.label, "avg_by_category": {k: float(v.mean()) for k, v in by_cat.items()},
            "hedge_volatile": float(hedge[volatile].mean()),
            "hedge_other": float(hedge[~volatile].mean()) if (~volatile).any() else float("nan"),
            "defensive_volatile": float(defensive[volatile].mean()),
            "defensive_other": float(defensive[~volatile].mean()) if (~volatile).any() else float("nan"),
        })
    return {"top_fraction": 0.1, "n_volatile": int(volatile.sum()),
            "volatility_measure": "trailing 20-day volatility of the equal-weight non-stable return",
            "categories": list(dict.fromkeys(cats)) + ["cash"], "rows": rows}


def write_returns_csv(path: Path, results: Sequence[Any]) -> None:
    """``returns.csv``: one row per decision day (``date``), one column per strategy (its ``name``) holding
    the daily net simple return earned from that day's close to the next; full float precision."""
    names = [r.name for r in results]
    lines = ["date," + ",".join(names)]
    for k, d in enumerate(np.asarray(results[0].dates, dtype="datetime64[D]")):
        lines.append(f"{d}," + ",".join(repr(float(r.returns[k])) for r in results))
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_weights_csv(path: Path, result: Any, tickers: Sequence[str]) -> None:
    """``weights.csv``: one row per decision day (``date``), one column per ticker and ``CASH``: the
    post-trade weights (fraction of NAV) chosen at that day's close; full float precision (``repr``)."""
    lines = ["date," + ",".join(list(tickers) + ["CASH"])]
    for d, w in zip(np.asarray(result.dates, dtype="datetime64[D]"), np.asarray(result.weights, np.float64)):
        lines.append(f"{d}," + ",".join(repr(float(x)) for x in w))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "sci":
        return f"{value:.2e}"
    return f"{value:.3f}"


def metrics_table(rows: Sequence[dict[str, Any]],
                  columns: Sequence[tuple[str, str, str]] = METRIC_COLUMNS) -> str:
    """Markdown table, one row per strategy (``{"label", "metrics", "spread"?}``), one column per
    ``(key, label, format)`` of ``columns`` (default METRIC_COLUMNS)."""
    head = "| Strategy | " + " | ".join(label for _, label, _ in columns) + " |"
    sep = "|---|" + "|".join("---:" for _ in columns) + "|"
    lines = [head, sep]
    for row in rows:
        cells = []
        for key, _, kind in columns:
            cell = _fmt(row["metrics"].get(key), kind)
            spread = (row.get("spread") or {}).get(key)
            if spread is not None:
                cell += f" ± {_fmt(spread, kind)}"
            cells.append(cell)
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    """The human-readable report: labels, the metrics table, significance, allocation insights."""
    src = SYNTHETIC_LABEL if report["synthetic"] else f"{report['source']} (real market data)"
    lines = ["# Backtest report", ""]
    lines += [f"> **WARNING: {w}.**" for w in report.get("warnings") or []]
    if report.get("warnings"):
        lines.append("")
    lines += [f"- Data source: **{src}**"]
    if report.get("policy_format"):
        lines.append(f"- Agent policy: **{report['policy_format']}**")
    train = report.get("training_span")
    if train:
        lines.append(f"- Training span: {train['start']} .. {train['end']} (source: {train['source']})")
    lines += [
        f"- Evaluation span: {report['span']['start']} .. {report['span']['end']} "
        f"({report['span']['n_days']} decisions)",
        f"- Annualisation: **{report['periods_per_year']} periods a year** ({report['annualisation']})",
        f"- Risk-free rate for Sharpe/Sortino (excess returns): {report['risk_free']}",
        f"- Universe: {', '.join(report['tickers'])}",
        "",
        "## Metrics",
        "",
        "Returns are net of fees and slippage. Sharpe and Sortino are on excess return over the risk-free "
        "rate; max drawdown, VaR and CVaR are returns (negative = loss; VaR/CVaR historical one-day 95%); "
        "turnover is the mean daily sum of |risky weight change|. The same definitions (training.metrics) "
        "give the training run's validation.json and learning curves.",
        "",
        metrics_table(report["strategies"]),
        "",
        "## What each strategy does",
        "",
        "Active share: mean daily 0.5 * sum |w - equal weight| over the assets and cash (0 = equal weight). "
        "Regime response: stable+cash share of NAV on the volatile days (top decile of trailing 20-day "
        "volatility of the equal-weight risky return) minus that share on the other days; hedge response: "
        "the same for the hedge category. Cost drag: fees + slippage per year as a fraction of NAV.",
        "",
        metrics_table(report["strategies"], DIAGNOSTIC_COLUMNS),
        "",
    ]
    sig = report.get("significance") or []
    lines += ["## Significance", ""]
    if not sig:
        lines.append("No agent was evaluated; only benchmarks are reported.")
    for entry in sig:
        lines.append(f"- {entry['sentence']}")
        ci, diff = entry["sharpe_ci"], entry["sharpe_diff_ci"]
        lines.append(
            f"  - Sharpe {ci['estimate']:.3f}, 95% CI [{ci['low']:.3f}, {ci['high']:.3f}]; Sharpe minus "
            f"{entry['best_benchmark_label']} {diff['estimate']:.3f}, 95% CI [{diff['low']:.3f}, {diff['high']:.3f}] "
            f"(stationary bootstrap, {entry['n_boot']} resamples, mean block {entry['block']:.1f} days)"
        )
        lines.append(
            f"  - Probabilistic Sharpe ratio P(SR > 0) = {entry['psr']:.3f}; deflated Sharpe ratio = "
            f"{entry['dsr']:.3f} for {entry['n_trials']} trial(s) ({entry['trials_source']})"
        )
    lines += ["", "## Allocation insights", ""]
    ins = report.get("insights") or {}
    if ins:
        lines.append(
            f"Volatile days: the top {ins['top_fraction']:.0%} of days by {ins['volatility_measure']} "
            f"({ins['n_volatile']} days)."
        )
        lines.append("")
        cats = ins["categories"]
        lines.append("| Strategy | " + " | ".join(f"avg {c}" for c in cats)
                     + " | hedge, volatile days | hedge, other days | stable+cash, volatile | stable+cash, other |")
        lines.append("|---|" + "|".join("---:" for _ in range(len(cats) + 4)) + "|")
        for row in ins["rows"]:
            cells = [f"{100 * row['avg_by_category'][c]:.1f}%" for c in cats]
            cells += [f"{100 * row[k]:.1f}%" for k in
                      ("hedge_volatile", "hedge_other", "defensive_volatile", "defensive_other")]
            lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    notes = report.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_quantstats(path: Path, focus: Any, other: Any, other_label: str, context: Any, title: str) -> None:
    """quantstats HTML tear sheet of ``focus`` against ``other`` (strategy results on the same days).

    It gets the same per-period series as ``metrics.md`` (folded onto weekdays for 252 periods, on the same
    dates). quantstats takes one constant annual ``rf``: with a constant configured rate that is the same
    risk-free leg; with a T-bill series the tear sheet uses its span mean, annualised, and says so in its
    title (``metrics.md`` subtracts the series day by day).
    """
    import pandas as pd

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import matplotlib

    matplotlib.use("Agg")
    import quantstats as qs

    periods = context.periods
    idx = context.day_index(focus.dates)
    series = {}
    for res in (focus, other):
        r, rf, _, _ = fold_to_periods(res.dates, res.returns, context.risk_free[idx], res.turnover, res.cost,
                                      periods)
        series[res.name] = r
    dates = np.asarray(focus.dates, dtype="datetime64[D]")
    if periods == 252:  # one row per weekday group, dated by its first day
        from evaluation.performance_metrics import weekday_groups

        groups = weekday_groups(dates)
        dates = dates[np.r_[0, np.flatnonzero(np.diff(groups)) + 1]]
    pidx = pd.DatetimeIndex(dates.astype("datetime64[ns]"))
    strat = pd.Series(series[focus.name], index=pidx, name="Strategy")
    bench = pd.Series(series[other.name], index=pidx, name=other_label)
    rf_annual = float((1.0 + float(np.mean(rf))) ** periods - 1.0)
    constant = bool(np.ptp(rf) <= 1e-15)
    rf_note = ("" if constant else f" [rf: constant {rf_annual:.2%}/yr = span mean of {context.risk_free_label}; "
               "metrics.md subtracts the daily series]")
    with atomic_path(path, suffix=".html") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qs.reports.html(strat, benchmark=bench, rf=rf_annual, output=str(tmp), title=f"{focus.label} - {title}{rf_note}",
                        periods_per_year=periods, download_filename=path.name)


def write_plotly(path: Path, results: Sequence[Any], focus: Any, categories: Sequence[str],
                 tickers: Sequence[str], title: str) -> None:
    """One HTML page: equity curves, drawdowns, ``focus``'s stacked weights and category exposure.

    ``results``: strategies with ``label``, ``dates`` (T,), ``nav`` (T+1,), ``returns`` (T,), ``weights``
    (T, N+1). plotly.js is embedded once, so the page works offline.
    """
    import plotly.graph_objects as go

    def dates_of(r: Any) -> np.ndarray:
        d = np.asarray(r.dates, dtype="datetime64[D]")
        return np.append(d, d[-1] + np.timedelta64(1, "D")) if d.size else d

    equity = go.Figure()
    dd = go.Figure()
    for r in results:
        x = dates_of(r)
        equity.add_trace(go.Scatter(x=x, y=r.nav, mode="lines", name=r.label))
        dd.add_trace(go.Scatter(x=x[1:], y=100 * drawdown_series(r.returns), mode="lines", name=r.label))
    equity.update_layout(title=f"Equity curves (NAV, start = 1) - {title}", yaxis_type="log", hovermode="x unified")
    dd.update_layout(title="Drawdown (% from running peak)", hovermode="x unified")

    x = np.asarray(focus.dates, dtype="datetime64[D]")
    stacked = go.Figure()
    for i, name in enumerate(list(tickers) + ["cash"]):
        stacked.add_trace(go.Scatter(x=x, y=focus.weights[:, i], mode="lines", stackgroup="w", name=name))
    stacked.update_layout(title=f"Weights over time: {focus.label}", yaxis_range=[0, 1], hovermode="x unified")

    exposure = go.Figure()
    for cat, series in weight_by_category(focus.weights, categories).items():
        exposure.add_trace(go.Scatter(x=x, y=series, mode="lines", stackgroup="c", name=cat))
    exposure.update_layout(title=f"Exposure by category: {focus.label}", yaxis_range=[0, 1], hovermode="x unified")

    bars = go.Figure()
    cats = list(weight_by_category(focus.weights, categories))
    for cat in cats:
        bars.add_trace(go.Bar(x=[r.label for r in results],
                              y=[float(weight_by_category(r.weights, categories)[cat].mean()) for r in results],
                              name=cat))
    bars.update_layout(title="Average exposure by category, every strategy", barmode="stack")

    parts = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0))
        for i, fig in enumerate((equity, dd, stacked, exposure, bars))
    ]
    html = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Backtest charts</title></head><body>"
        f"<h1>Backtest charts - {title}</h1>" + "".join(parts) + "</body></html>"
    )
    atomic_write_text(path, html)
