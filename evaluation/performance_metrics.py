"""The evaluation layer's name for the one metrics module, ``training.metrics`` (defined there, below both
training and evaluation in the layer order, so that training's validation can use it too).

Every function and constant is re-exported unchanged; see ``training.metrics`` for the conventions
(shapes, units, signs: max drawdown, VaR and CVaR are returns, negative = loss).
"""

from training.metrics import (  # noqa: F401 - re-exports
    DIAGNOSTIC_COLUMNS,
    METRIC_COLUMNS,
    PERIODS_7D,
    PERIODS_WEEKDAY,
    REGIME_TOP_FRACTION,
    REGIME_WINDOW,
    active_share,
    annualised_return,
    annualised_volatility,
    average_weight,
    average_weight_by_category,
    calmar_ratio,
    compound_by_group,
    conditional_value_at_risk,
    cost_drag,
    defensive_share,
    diagnostics,
    drawdown_series,
    equal_weight_risky_return,
    equal_weights,
    equity_curve,
    excess_returns,
    final_value,
    fold_to_periods,
    hedge_response,
    hit_rate,
    max_drawdown,
    mean_log_return,
    periods_per_year,
    regime_response,
    risk_free_daily,
    sharpe_ratio,
    sharpe_ratio_rows,
    sortino_ratio,
    std,
    summarize,
    total_return,
    trailing_volatility,
    value_at_risk,
    volatile_days,
    weekday_groups,
    weight_by_category,
)

__all__ = [name for name in dir() if not name.startswith("_")]
