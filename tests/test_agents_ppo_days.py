"""PPO's per-day forward and index rollout buffer: same function as the straightforward forward, same training.

``forward_days`` computes the market-only part once per distinct day and gathers it; the day encoder's
last layer runs for the latest token only. Both must equal the straightforward per-window forward
(``forward_reference``) to 1e-6 on the same weights and inputs, and same-seed runs stay bit-identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_agents_ppo import first_minibatch_ratios
from test_agents_realenv import WINDOW, N, _env

from agents.common import ObsLayout
from agents.ppo_agent import PPOAgent
from agents.ppo_encoders import LSTMActorCritic, MLPActorCritic
from agents.rollout_buffer import RolloutBatch, RolloutBuffer
from agents.transformer_encoder import TransformerActorCritic

torch.set_num_threads(1)


def day_inputs(layout: ObsLayout, t_days: int, b: int, seed: int):
    """A feature array (T, N, F), decision days (B,) with repeats, weights, masks and the rebuilt obs."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(t_days, layout.n_assets, layout.n_features, generator=gen)
    days = torch.randint(layout.window - 1, t_days, (b,), generator=gen)
    days[1] = days[0]  # two portfolios on the same day
    weights = torch.softmax(torch.randn(b, layout.action_dim, generator=gen), -1)
    masks = (torch.rand(b, layout.n_assets, generator=gen) > 0.3).float()
    windows = features[days[:, None] + torch.arange(1 - layout.window, 1)]
    obs = torch.cat([windows.reshape(b, -1), weights, masks], dim=1)
    return features, days, weights, masks, obs


@pytest.mark.parametrize(("day_layers", "mode"), [(1, "train"), (2, "train"), (3, "eval")])
def test_per_day_forward_equals_the_straightforward_forward(day_layers, mode):
    layout = ObsLayout(7, 4, 3)
    torch.manual_seed(day_layers)
    net = getattr(TransformerActorCritic(layout, d_model=16, n_heads=4, day_layers=day_layers), mode)()
    features, days, weights, masks, obs = day_inputs(layout, 50, 24, seed=day_layers)
    ref = net.forward_reference(obs)
    with torch.no_grad():
        rows = net.day_rows(features)
    outputs = {
        "forward (last-token day encoder)": net(obs),
        "forward_days": net.forward_days(features, days, weights, masks),
        "forward_days with the rollout's day rows": net.forward_days(features, days, weights, masks, day_rows=rows),
    }
    for name, out in outputs.items():
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    # the gradients of the PPO loss follow the same function
    grads = []
    for out in (ref, outputs["forward_days"]):
        net.zero_grad()
        (out[0].square().sum() + out[1].sum()).backward(retain_graph=True)
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cls", [LSTMActorCritic, MLPActorCritic])
def test_per_day_forward_of_the_lstm_and_mlp_encoders(cls):
    layout = ObsLayout(5, 3, 2)
    torch.manual_seed(0)
    net = cls(layout, 8)
    features, days, weights, masks, obs = day_inputs(layout, 30, 12, seed=1)
    for a, b in zip(net.forward_days(features, days, weights, masks), net(obs)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_rollout_buffer_yields_every_sample_once_per_epoch_as_named_tuples():
    layout = ObsLayout(2, 2, 1)
    buf = RolloutBuffer(3, 2, layout, indexed=True)
    rng = np.random.default_rng(0)
    for t in range(3):
        obs = layout.join_numpy(np.zeros((2, 2, 2, 1)), np.full((2, 3), t / 3), np.ones((2, 2)))
        buf.add(obs, np.array([10 + t, 20 + t]), np.zeros((2, 2)), np.zeros(2), np.array([1.0, 2.0]),
                np.ones(2), np.zeros(2))
    assert buf.full
    buf.compute_returns_and_advantage(np.zeros(2), gamma=1.0, lam=1.0)
    np.testing.assert_allclose(buf.returns[:, 0], [3.0, 2.0, 1.0])  # undiscounted reward-to-go
    batches = list(buf.get(4, rng))
    assert [len(b.days) for b in batches] == [4, 2] and isinstance(batches[0], RolloutBatch)
    assert batches[0].observations is None and batches[0].masks.shape == (4, 2)
    assert sorted(torch.cat([b.days for b in batches]).tolist()) == [10, 11, 12, 20, 21, 22]
    with pytest.raises(RuntimeError, match="full"):
        buf.add(obs, np.zeros(2, np.int64), np.zeros((2, 2)), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2))


CFG = dict(window=WINDOW, d_model=16, n_heads=2, dim_feedforward=32, day_layers=2, n_steps=16, batch_size=16,
           n_epochs=2, seed=3)


def test_same_seed_runs_on_the_index_rollout_are_bit_identical():
    agents = [PPOAgent(_env(4).obs_dim, N + 1, **CFG) for _ in range(2)]
    for agent in agents:
        agent.train(_env(4), 128)
    for (name, pa), pb in zip(agents[0].net.state_dict().items(), agents[1].net.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_per_day_training_follows_the_straightforward_training():
    """Same maths: a short run on the per-day path ends where the straightforward path ends (float noise)."""
    fast = PPOAgent(_env(4).obs_dim, N + 1, **CFG)
    slow = PPOAgent(_env(4).obs_dim, N + 1, per_day_market=False, **CFG)
    ratios = first_minibatch_ratios(fast)
    fast.train(_env(4), 64)
    slow.train(_env(4), 64)
    torch.testing.assert_close(ratios[0], torch.ones_like(ratios[0]), atol=1e-6, rtol=0)
    for (name, pa), pb in zip(fast.net.state_dict().items(), slow.net.state_dict().values()):
        torch.testing.assert_close(pa, pb, atol=1e-4, rtol=1e-4, msg=name)
