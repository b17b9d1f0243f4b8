"""Saving and rebuilding agents from a run directory, without pickle.

``save_agent(agent, run_dir, record)`` writes

- ``policy.pth``: ``torch.save`` of the agent's network state dict (tensors only), and
- ``config.json``: ``{"algo": "ppo"|"sac"|"ddpg"|"forecaster", "agent": {config fields},
  "obs_layout": {"window", "n_assets", "n_features"}, "version": AGENT_FORMAT_VERSION}`` plus the
  top-level keys of ``record`` (the training layer's ``experiment`` record). Without ``record``, other
  top-level keys already in an existing ``config.json`` are kept.

``load_agent(run_dir)`` reads both back with ``torch.load(weights_only=True)`` and rebuilds the agent
through ``agents.registry``; a missing file or key, an unknown algorithm or a version mismatch raises
``ValueError`` with one sentence. Each file goes to a temporary file that is renamed into place (weights,
then config), so a reader never sees a half-written file; only a kill in the instant between the two
renames could pair new weights with the previous config.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from agents.checkpoint import atomic_torch_save, safe_torch_load
from agents.common import ObsLayout
from agents.registry import ALGOS, algorithm
from data.atomic_files import atomic_write_text

#: Bump when the saved state dict or config layout changes incompatibly.
AGENT_FORMAT_VERSION = 1
#: The keys ``save_agent`` writes into ``config.json``.
AGENT_KEYS: tuple[str, ...] = ("algo", "agent", "obs_layout", "version")


def agent_record(agent: Any) -> dict[str, Any]:
    """The ``config.json`` keys that describe ``agent``: algo, agent config, obs layout, format version."""
    return {
        "algo": agent.algo,
        "agent": dataclasses.asdict(agent.config),
        "obs_layout": agent.layout.to_dict(),
        "version": AGENT_FORMAT_VERSION,
    }


def save_agent(agent: Any, run_dir: str | os.PathLike, record: dict[str, Any] | None = None) -> None:
    """Write ``policy.pth`` and ``config.json`` under ``run_dir`` (see the module docstring)."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    cfg_path = run / "config.json"
    if record is None:
        record = {}
        if cfg_path.is_file():
            try:
                record = json.loads(cfg_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                record = {}
    full = {k: v for k, v in record.items() if k not in AGENT_KEYS}
    full.update(agent_record(agent))
    atomic_torch_save(agent.model_state(), run / "policy.pth")
    atomic_write_text(cfg_path, json.dumps(full, indent=2, sort_keys=False))


def read_agent_config(run_dir: str | os.PathLike) -> tuple[str, Any, ObsLayout]:
    """(algo, typed agent config, layout) from ``run_dir/config.json``, validated; ValueError otherwise."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"run directory '{run_dir}' has no config.json")
    try:
        record = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise ValueError(f"'{cfg_path}' is not valid JSON") from None
    if not isinstance(record, dict):
        raise ValueError(f"'{cfg_path}' must hold a JSON object")
    for key in AGENT_KEYS:
        if key not in record:
            raise ValueError(f"'{cfg_path}' is missing the key '{key}'")
    if record["version"] != AGENT_FORMAT_VERSION:
        raise ValueError(
            f"run directory '{run_dir}' was written by agent format version {record['version']}, "
            f"this code reads version {AGENT_FORMAT_VERSION}"
        )
    if record["algo"] not in ALGOS:
        raise ValueError(f"unknown algorithm '{record['algo']}' in '{cfg_path}'")
    if not isinstance(record["agent"], dict) or not isinstance(record["obs_layout"], dict):
        raise ValueError(f"'{cfg_path}' must hold mappings under 'agent' and 'obs_layout'")
    try:
        config = algorithm(record["algo"]).config_class(**record["agent"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"config.json has agent settings this version does not know ({err})") from None
    return record["algo"], config, ObsLayout.from_dict(record["obs_layout"])


def load_agent(run_dir: str | os.PathLike) -> Any:
    """Rebuild the agent saved by ``save_agent`` (weights-only load; no pickle)."""
    algo, config, layout = read_agent_config(run_dir)
    agent = algorithm(algo).build(layout, config)
    state = safe_torch_load(Path(run_dir) / "policy.pth")
    try:
        agent.load_model_state(state)
    except (RuntimeError, KeyError) as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"policy.pth does not match config.json ({first})") from None
    return agent
