"""Risk layer, drift statistics and model registry: hand-computed cases plus hypothesis invariants."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from deployment.drift import DriftConfig, DriftMonitor, DriftReference, ks, psi
from deployment.registry import ModelRegistry, RegistryError
from deployment.risk import AuditLog, RiskConfig, apply_risk, enforce_compliance

TICKERS = ("BTC-USD", "ETH-USD", "UVXY", "SPY", "BIL")
CATS = ("growth", "growth", "hedge", "traditional", "stable")
CFG = RiskConfig(max_asset_weight=0.4, category_caps={"growth": 0.6, "hedge": 0.2, "traditional": 0.5},
                 breaker_portfolio_move=0.1, breaker_asset_move=0.25, breaker_scale=0.5)


def test_feasible_allocation_passes_untouched():
    w = np.array([0.2, 0.2, 0.1, 0.3, 0.1, 0.1])
    res = apply_risk(w, CATS, TICKERS, CFG, asset_returns=np.zeros(5), current_weights=w)
    assert res.interventions == () and not res.breaker_tripped
    np.testing.assert_allclose(res.weights, w, atol=1e-12)


def test_asset_and_category_caps_hand_computed():
    # BTC 0.5 -> 0.4 (asset cap, +0.1 cash); growth 0.4+0.3 = 0.7 > 0.6 -> scaled by 6/7 (+0.1 cash).
    w = np.array([0.5, 0.3, 0.0, 0.1, 0.0, 0.1])
    res = apply_risk(w, CATS, TICKERS, CFG)
    np.testing.assert_allclose(res.weights, [0.4 * 6 / 7, 0.3 * 6 / 7, 0.0, 0.1, 0.0, 0.3], atol=1e-12)
    rules = [(i.rule, i.target) for i in res.interventions]
    assert rules == [("asset_cap", "BTC-USD"), ("category_cap", "growth")]


def test_breaker_on_asset_move_halves_risky_exposure():
    w = np.array([0.3, 0.1, 0.1, 0.2, 0.2, 0.1])
    r = np.array([-0.30, 0.0, 0.0, 0.0, 0.0])  # BTC fell 30 % in one day
    res = apply_risk(w, CATS, TICKERS, CFG, asset_returns=r, current_weights=None)
    assert res.breaker_tripped
    # risky = BTC, ETH, UVXY, SPY (0.7) -> 0.35; BIL (stable) untouched; cash 0.1 + 0.35.
    np.testing.assert_allclose(res.weights, [0.15, 0.05, 0.05, 0.1, 0.2, 0.45], atol=1e-12)
    assert "BTC-USD moved -30.00%" in res.interventions[0].reason


def test_breaker_on_portfolio_move():
    cur = np.array([0.4, 0.4, 0.0, 0.0, 0.0, 0.2])
    r = np.array([-0.15, -0.15, 0.0, 0.0, 0.0])  # portfolio -12 %, each asset within 25 %
    w = np.array([0.2, 0.2, 0.0, 0.2, 0.2, 0.2])
    res = apply_risk(w, CATS, TICKERS, CFG, asset_returns=r, current_weights=cur)
    assert res.breaker_tripped and "portfolio moved -12.00%" in res.interventions[0].reason
    assert not apply_risk(w, CATS, TICKERS, CFG, asset_returns=r * 0.5, current_weights=cur).breaker_tripped


def test_long_only_and_margin():
    w = np.array([0.6, -0.2, 0.0, 0.3, 0.0, 0.3])
    res = apply_risk(w, CATS, TICKERS, RiskConfig(max_asset_weight=1.0, category_caps={}))
    assert res.interventions[0].rule == "long_only"
    np.testing.assert_allclose(res.weights, np.array([0.6, 0, 0, 0.3, 0, 0.3]) / 1.2, atol=1e-12)
    margin = RiskConfig(max_asset_weight=1.0, category_caps={}, allow_margin=True, max_gross=0.9)
    res = apply_risk(w, CATS, TICKERS, margin)
    assert [i.rule for i in res.interventions] == ["gross_cap"]
    assert np.abs(res.weights[:-1]).sum() == pytest.approx(0.9) and res.weights.sum() == pytest.approx(1.0)
    assert res.weights[1] < 0  # the short survives with margin on


def test_all_zero_or_nan_goes_to_cash():
    res = apply_risk(np.array([np.nan, 0, 0, 0, 0, 0.0]), CATS, TICKERS, CFG)
    np.testing.assert_array_equal(res.weights, [0, 0, 0, 0, 0, 1.0])
    assert {i.rule for i in res.interventions} == {"finite", "sum_to_one"}


@settings(max_examples=200, deadline=None)
@given(
    raw=st.lists(st.floats(-1.0, 5.0, allow_nan=False), min_size=6, max_size=6),
    moves=st.lists(st.floats(-0.6, 0.6, allow_nan=False), min_size=5, max_size=5),
)
def test_compliance_invariants(raw, moves):
    res = apply_risk(np.array(raw), CATS, TICKERS, CFG, asset_returns=np.array(moves),
                     current_weights=np.full(6, 1 / 6))
    w = res.weights
    assert w.sum() == pytest.approx(1.0, abs=1e-9)
    assert (w >= 0).all() and (w[:-1] <= CFG.max_asset_weight + 1e-9).all()
    cats = np.array(CATS)
    for cat, cap in CFG.category_caps.items():
        assert w[:-1][cats == cat].sum() <= cap + 1e-9
    # idempotent: a compliant allocation passes a second time untouched
    again, acts = enforce_compliance(w, CATS, TICKERS, CFG)
    assert acts == [] and np.allclose(again, w, atol=1e-12)


def test_audit_log_lines(tmp_path):
    log = AuditLog(tmp_path / "audit" / "log.jsonl")
    res = apply_risk(np.array([0.9, 0, 0, 0, 0, 0.1]), CATS, TICKERS, CFG)
    log.record("r1", "v1", res.interventions, variant="v1")
    log.record("r2", "v1", ())  # nothing to audit
    lines = (tmp_path / "audit" / "log.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["interventions"][0]["rule"] == "asset_cap"


def test_risk_config_rejects_nonsense():
    with pytest.raises(ValueError, match="breaker_scale"):
        RiskConfig(breaker_scale=1.5)


# -- drift ------------------------------------------------------------------------------------------------

def test_psi_hand_computed():
    # 2 bins split at 0 under N(0,1); sample 80 % above 0 -> (0.8-0.5)ln(1.6) + (0.2-0.5)ln(0.4).
    x = np.array([1.0] * 80 + [-1.0] * 20)[:, None]
    expected = 0.3 * np.log(1.6) + (-0.3) * np.log(0.4)
    got = psi(x, DriftReference.standard_normal(1, q=1000), n_bins=2)
    assert got[0] == pytest.approx(expected, rel=1e-9)


def test_ks_matches_scipy_ks_2samp():
    rng = np.random.default_rng(0)
    ref_sample = rng.standard_normal((3000, 2))
    ref = DriftReference.from_sample(ref_sample, q=200)
    x = rng.standard_normal((500, 2)) + np.array([0.0, 0.8])
    stat, p = ks(x, ref)
    for f in range(2):
        want = stats.ks_2samp(x[:, f], ref.quantiles[f], method="asymp")
        assert stat[f] == pytest.approx(want.statistic, abs=1e-12)
        assert p[f] == pytest.approx(want.pvalue, rel=0.05, abs=1e-12)
    assert stat[1] > 0.25 > stat[0]


def test_reference_with_ties_gives_no_drift_on_itself():
    rng = np.random.default_rng(1)
    sample = np.where(rng.random((4000, 1)) < 0.6, 0.0, rng.standard_normal((4000, 1)))
    ref = DriftReference.from_sample(sample[:2000])
    assert psi(sample[2000:], ref)[0] < 0.05  # a N(0,1) reference would call this drift
    assert psi(sample[2000:], DriftReference.standard_normal(1))[0] > 0.25


def test_drift_monitor_persists_then_triggers_once(tmp_path):
    req = tmp_path / "retrain" / "request.json"
    marker = tmp_path / "cmd_ran"
    cfg = DriftConfig(min_rows=50, buffer_rows=200, check_every=1, min_interval_s=0.0, persist_checks=3, background=False,
                      retrain_request_file=str(req), retrain_command=f"touch {marker}")
    mon = DriftMonitor(("a", "b"), cfg)
    rng = np.random.default_rng(0)
    for _ in range(10):
        mon.observe(rng.standard_normal((20, 2)))
    assert mon.metrics()["drift_retrain_recommended"] == 0.0 and not req.exists()
    reports = [mon.observe(rng.standard_normal((200, 2)) + [3.0, 0.0]) for _ in range(3)]
    assert [r.consecutive for r in reports] == [1, 2, 3] and reports[-1].retrain_recommended
    payload = json.loads(req.read_text())
    assert payload["worst_feature"] == "a" and mon.metrics()["drift_retrain_triggered"] == 1.0
    for _ in range(50):
        if marker.exists():
            break
        import time
        time.sleep(0.02)
    assert marker.exists()
    req.unlink()
    mon.observe(rng.standard_normal((200, 2)) + [3.0, 0.0])
    assert not req.exists()  # fires once


# -- registry -------------------------------------------------------------------------------------------

def test_registry_activate_rollback_ab(tmp_path):
    for v in ("e1", "e2", "e3"):
        (tmp_path / v).mkdir()
    reg = ModelRegistry(tmp_path / "reg")
    reg.register("v1", tmp_path / "e1")
    reg.register("v2", tmp_path / "e2")
    reg.register("v3", tmp_path / "e3")
    assert reg.active == "v1"
    reg.activate("v2")
    reg.activate("v3")
    assert reg.rollback() == "v2" and reg.rollback() == "v1"
    with pytest.raises(RegistryError, match="no previous version"):
        reg.rollback()
    reg.set_ab({"v1": 3, "v2": 1})
    rng = np.random.default_rng(0)
    picks = [reg.choose(u) for u in rng.random(4000)]
    assert picks.count("v1") / 4000 == pytest.approx(0.75, abs=0.03)
    again = ModelRegistry(tmp_path / "reg")  # persisted
    assert again.active == "v1" and again.ab == {"v1": 0.75, "v2": 0.25}
    with pytest.raises(RegistryError, match="unknown model version 'v9'"):
        reg.activate("v9")
    with pytest.raises(RegistryError, match="positive"):
        reg.set_ab({"v1": 1, "v2": -1})
    with pytest.raises(RegistryError, match="does not exist"):
        reg.register("v4", tmp_path / "missing")


def test_reference_round_trip_keeps_ties_in_their_bin():
    # A normalised feature that is often exactly c = (0 - mean) / std, not a round number.
    rng = np.random.default_rng(2)
    c = np.float32(-0.123456789)
    sample = np.where(rng.random((3000, 1)) < 0.5, c, rng.standard_normal((3000, 1))).astype(np.float32)
    ref = DriftReference.from_dict(json.loads(json.dumps(DriftReference.from_sample(sample[:2000]).to_dict())), 1)
    assert psi(sample[2000:], ref)[0] < 0.05


def test_hold_closed_keeps_current_weight_of_closed_assets():
    from deployment.deployed_fund import hold_closed

    policy = np.array([0.5, 0.3, 0.0, 0.2])  # asset 2 closed: the policy gave it 0
    current = np.array([0.1, 0.1, 0.4, 0.4])
    got = hold_closed(policy, current, np.array([True, True, False]))
    np.testing.assert_allclose(got, [0.3, 0.18, 0.4, 0.12])  # 60 % of NAV shared 5:3:2
    np.testing.assert_allclose(hold_closed(policy, current, np.ones(3, bool)), policy)


def test_rounding_residual_never_makes_cash_negative():
    """Found by hypothesis: full-invested weights whose float sum lands a hair above 1 left cash at -2e-16."""
    res = apply_risk(np.array([2.3607638368400243, 2.4626074949950114, 1.91015625, 2.25, 1.0, 0.0]), CATS, TICKERS,
                     CFG, asset_returns=np.zeros(5), current_weights=np.full(6, 1 / 6))
    assert (res.weights >= 0).all() and res.weights.sum() == pytest.approx(1.0, abs=1e-12)
