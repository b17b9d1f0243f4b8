"""The one table of algorithms: ``REGISTRY = {algo: Algorithm(AgentClass, ConfigClass, ...)}``.

Everything that dispatches on an algorithm name (training, the run directory reader, the exporter, the
tuner's search space) looks it up here; adding an algorithm is one line below. Importing this module
imports the agents (PyTorch), so layers that only need a name check import it where they need it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from agents.common import ObsLayout
from agents.ddpg_agent import DDPGAgent, DDPGConfig
from agents.forecaster import Forecaster, ForecasterConfig
from agents.ppo_agent import PPOAgent, PPOConfig
from agents.sac_agent import SACAgent, SACConfig

#: Agent config fields the training layer fills in: ``env.window``, the store's feature count, ``training.seed``.
DERIVED_FIELDS: tuple[str, ...] = ("window", "n_features", "seed")


class Agent(Protocol):
    """What every registered agent offers (``agents.io`` saves and rebuilds it through these)."""

    algo: str
    config: Any
    layout: ObsLayout

    def model_state(self) -> dict[str, Any]: ...

    def load_model_state(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Algorithm:
    """One registered algorithm.

    - ``agent_class(state_dim, action_dim, layout=..., config=ConfigClass(...))`` builds the agent;
    - ``config_class``: its frozen hyper-parameter dataclass (the YAML ``agent.<algo>`` section);
    - ``policy``: True when the agent is an allocation policy (``train``, checkpoints, ``--resume``,
      ``policy_module()`` and export); False for the return forecaster (``fit``/``predict``);
    - ``encoder``: the policy network's encoder when the algorithm fixes it (``"lstm"`` for SAC/DDPG),
      ``None`` when ``config.encoder`` chooses it (PPO).
    """

    name: str
    agent_class: type
    config_class: type
    policy: bool = True
    encoder: str | None = None

    def policy_encoder(self, config: Any) -> str:
        """The encoder of this algorithm's policy network for ``config`` (transformer, lstm or mlp)."""
        if not self.policy:
            raise ValueError(f"'{self.name}' is not an allocation policy")
        return self.encoder or str(config.encoder)

    def derived(self, config: Any, window: int, n_features: int, seed: int) -> Any:
        """``config`` with the derived fields (window, n_features, seed) it has set to these values."""
        names = {f.name for f in dataclasses.fields(self.config_class)}
        values = {"window": window, "n_features": n_features, "seed": seed}
        return dataclasses.replace(config, **{k: v for k, v in values.items() if k in names})

    def build(self, layout: ObsLayout, config: Any, device: str = "cpu") -> Any:
        """A fresh agent for ``layout`` with hyper-parameters ``config`` (an instance of ``config_class``) on
        the torch ``device`` (the allocation policies; the forecaster trains on the CPU)."""
        on_device = {"device": device} if self.policy else {}
        return self.agent_class(layout.obs_dim, layout.action_dim, layout=layout, config=config, **on_device)


REGISTRY: dict[str, Algorithm] = {
    "ppo": Algorithm("ppo", PPOAgent, PPOConfig),
    "sac": Algorithm("sac", SACAgent, SACConfig, encoder="lstm"),
    "ddpg": Algorithm("ddpg", DDPGAgent, DDPGConfig, encoder="lstm"),
    "forecaster": Algorithm("forecaster", Forecaster, ForecasterConfig, policy=False),
}
ALGOS: tuple[str, ...] = tuple(REGISTRY)


def algorithm(name: str) -> Algorithm:
    """The registry entry of ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown algorithm '{name}'; expected one of {', '.join(ALGOS)}") from None
