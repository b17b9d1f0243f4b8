"""/metrics through prometheus-client: a collector reading the server's counters at scrape time.

Series (all prefixed ``fund_``): ``http_requests_total{route,status}``, ``variant_requests_total{version}``,
``ab_weight{version}``, ``active_version{version}``, ``risk_interventions_total{rule}``,
``circuit_breaker_trips_total``, ``allocate_latency_ms`` (histogram, server side), the drift gauges
per version (``drift_psi_max`` ... and ``drift_feature_psi{version,feature}``), realised performance
per version (``performance_*``), ``market_date_seconds`` (the state's latest day, Unix seconds),
``market_bars_total`` and ``uptime_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 250, 1000)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DRIFT_KEYS = ("drift_psi_max", "drift_ks_max", "drift_consecutive_checks", "drift_retrain_recommended",
              "drift_retrain_triggered", "drift_checks_total", "drift_buffer_rows")
PERF_KEYS = ("days", "cumulative_return", "equal_weight_cumulative_return", "excess_cumulative_return", "win_rate")


class ServingCollector:
    """A prometheus-client custom collector over a ``ServingApp`` (duck-typed: counters under ``lock``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        app = self.app
        with app.lock:
            status_counts = sorted(app.status_counts.items())
            versions = list(app.versions.items())
            requests = {k: vs.requests for k, vs in versions}
            interventions = sorted(app.interventions.items())
            trips, buckets = app.breaker_trips, list(app.latency_buckets)
            lat_count, lat_sum = app.latency_count, app.latency_sum_ms
            bars = app.bars_accepted
        c = CounterMetricFamily("fund_http_requests", "HTTP requests by route and status", labels=["route", "status"])
        for (route, status), n in status_counts:
            c.add_metric([route, str(status)], n)
        yield c
        c = CounterMetricFamily("fund_variant_requests", "Allocations served per model version", labels=["version"])
        for k, n in requests.items():
            c.add_metric([k], n)
        yield c
        g = GaugeMetricFamily("fund_ab_weight", "Configured A/B traffic share per version", labels=["version"])
        for k, w in (app.registry.ab or {}).items():
            g.add_metric([k], w)
        yield g
        g = GaugeMetricFamily("fund_active_version", "1 for the active version", labels=["version"])
        for k in requests:
            g.add_metric([k], float(k == app.registry.active))
        yield g
        c = CounterMetricFamily("fund_risk_interventions", "Risk-layer interventions by rule", labels=["rule"])
        for k, n in interventions:
            c.add_metric([k], n)
        yield c
        yield CounterMetricFamily("fund_circuit_breaker_trips", "Allocations scaled down by the breaker", value=trips)
        cum = [(str(b), float(n)) for b, n in zip(LATENCY_BUCKETS_MS, buckets)] + [("+Inf", float(lat_count))]
        yield HistogramMetricFamily("fund_allocate_latency_ms", "Server-side /v1/allocate latency (ms)",
                                    buckets=cum, sum_value=lat_sum)
        for key in DRIFT_KEYS:
            g = GaugeMetricFamily(f"fund_{key}", f"Feature drift: {key.replace('_', ' ')}", labels=["version"])
            for k, vs in versions:
                g.add_metric([k], float(vs.drift.metrics()[key]))
            yield g
        g = GaugeMetricFamily("fund_drift_feature_psi", "PSI of each feature at the last drift check",
                              labels=["version", "feature"])
        for k, vs in versions:
            for f, p, _ in vs.drift.per_feature():
                g.add_metric([k, f], float(p))
        yield g
        for key in PERF_KEYS:
            g = GaugeMetricFamily(f"fund_performance_{key}", f"Realised {key.replace('_', ' ')} (simple returns)",
                                  labels=["version"])
            for k, vs in versions:
                g.add_metric([k], float(vs.perf.summary()[key]))
            yield g
        if app.market is not None:
            day = app.market.snapshot.date
            yield GaugeMetricFamily("fund_market_date_seconds", "Latest day of the market state (Unix seconds)",
                                    value=float((day - np.datetime64("1970-01-01", "D")).astype(int)) * 86400.0)
        yield CounterMetricFamily("fund_market_bars", "Days of bars accepted by POST /v1/bars", value=bars)
        yield GaugeMetricFamily("fund_uptime_seconds", "Seconds since start", value=time.time() - app.started)


def metrics_registry(app: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServingCollector(app))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
