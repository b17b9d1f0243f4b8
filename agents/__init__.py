"""The agents layer: allocation policies (PPO with a Transformer/LSTM/MLP encoder, SAC and DDPG with an LSTM
encoder) and the return forecaster, over flat observation arrays (they never import ``environments``).

Quick start (the paper's usage; gymnasium's five-value step)::

    from agents import PPOAgent
    from environments import CryptoHedgeFundEnv

    env = CryptoHedgeFundEnv(prices, features)
    agent = PPOAgent(env.observation_space.shape[0], env.action_space.shape[0])
    state, _ = env.reset(seed=0)
    action = agent.get_action(state)                 # weights (N + 1,), cash last
    state, reward, terminated, truncated, info = env.step(action)

Names are imported on first use (PEP 562), so ``import agents`` stays cheap; ``agents.registry.REGISTRY``
maps each algorithm name to its agent and config classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "PPOAgent": "agents.ppo_agent", "PPOConfig": "agents.ppo_agent",
    "SACAgent": "agents.sac_agent", "SACConfig": "agents.sac_agent",
    "DDPGAgent": "agents.ddpg_agent", "DDPGConfig": "agents.ddpg_agent",
    "Forecaster": "agents.forecaster", "ForecasterConfig": "agents.forecaster",
    "ObsLayout": "agents.common",
    "REGISTRY": "agents.registry", "ALGOS": "agents.registry", "algorithm": "agents.registry",
    "save_agent": "agents.io", "load_agent": "agents.io", "load_checkpoint": "agents.checkpoint",
}
__all__ = [
    "ALGOS", "DDPGAgent", "DDPGConfig", "Forecaster", "ForecasterConfig", "ObsLayout", "PPOAgent",
    "PPOConfig", "REGISTRY", "SACAgent", "SACConfig", "algorithm", "load_agent", "load_checkpoint",
    "save_agent",
]

if TYPE_CHECKING:
    from agents.checkpoint import load_checkpoint
    from agents.common import ObsLayout
    from agents.ddpg_agent import DDPGAgent, DDPGConfig
    from agents.forecaster import Forecaster, ForecasterConfig
    from agents.io import load_agent, save_agent
    from agents.ppo_agent import PPOAgent, PPOConfig
    from agents.registry import ALGOS, REGISTRY, algorithm
    from agents.sac_agent import SACAgent, SACConfig


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'agents' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
