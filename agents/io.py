"""Saving and rebuilding agents from a run directory, without pickle.

``save_agent(agent, run_dir)`` writes

- ``policy.pth``: ``torch.save`` of the agent's network state dict (tensors only), and
- ``config.json``: ``{"algo": "ppo"|"sac"|"ddpg"|"forecaster", "agent": {config fields},
  "obs_layout": {"window", "n_assets", "n_features"}, "version": AGENT_FORMAT_VERSION}``.
  Other top-level keys already in an existing ``config.json`` (the training layer's ``experiment`` record)
  are kept.

``load_agent(run_dir)`` reads both back with ``torch.load(weights_only=True)`` and rebuilds the agent;
a missing file or key, an unknown algorithm or a version mismatch raises ``ValueError`` with one sentence.
Writes go to a temporary file that is renamed into place.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from agents.common import ObsLayout

#: Bump when the saved state dict or config layout changes incompatibly.
AGENT_FORMAT_VERSION = 1
ALGOS = ("ppo", "sac", "ddpg", "forecaster")


def agent_class(algo: str) -> Any:
    """The agent class for ``algo`` (ppo, sac, ddpg, forecaster), imported lazily; unknown -> ValueError."""
    if algo == "ppo":
        from agents.ppo_agent import PPOAgent

        return PPOAgent
    if algo == "sac":
        from agents.sac_agent import SACAgent

        return SACAgent
    if algo == "ddpg":
        from agents.ddpg_agent import DDPGAgent

        return DDPGAgent
    if algo == "forecaster":
        from agents.forecaster import Forecaster

        return Forecaster
    raise ValueError(f"unknown algorithm '{algo}'; expected one of {', '.join(ALGOS)}")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through an in-memory buffer, written to a temp file in the same folder, then renamed.

    The buffer matters: ``torch.save`` names the zip archive's root folder after the file it writes, so
    saving straight to a randomly named temp file made identical state dicts differ in bytes. A buffer
    always gets the same root, so the same weights give the same file bit for bit.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getvalue())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` (tensors, dicts, lists, numbers, strings; never pickled objects)."""
    if not Path(path).is_file():
        raise ValueError(f"'{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise ValueError(f"'{path}' is not a readable weights-only torch file ({type(err).__name__})") from None


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def save_agent(agent: Any, run_dir: str | os.PathLike) -> None:
    """Write ``policy.pth`` and (merge into) ``config.json`` under ``run_dir`` (see the module docstring)."""
    import dataclasses

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(agent.model_state(), run / "policy.pth")
    cfg_path = run / "config.json"
    record: dict[str, Any] = {}
    if cfg_path.is_file():
        try:
            record = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            record = {}
    record.update({
        "algo": agent.algo,
        "agent": dataclasses.asdict(agent.config),
        "obs_layout": agent.layout.to_dict(),
        "version": AGENT_FORMAT_VERSION,
    })
    _atomic_write_text(cfg_path, json.dumps(record, indent=2, sort_keys=False))


def read_agent_config(run_dir: str | os.PathLike) -> tuple[str, dict[str, Any], ObsLayout]:
    """(algo, agent config mapping, layout) from ``run_dir/config.json``, validated; ValueError otherwise."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"run directory '{run_dir}' has no config.json")
    try:
        record = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise ValueError(f"'{cfg_path}' is not valid JSON") from None
    if not isinstance(record, dict):
        raise ValueError(f"'{cfg_path}' must hold a JSON object")
    for key in ("algo", "agent", "obs_layout", "version"):
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
    return record["algo"], record["agent"], ObsLayout.from_dict(record["obs_layout"])


def load_agent(run_dir: str | os.PathLike) -> Any:
    """Rebuild the agent saved by ``save_agent`` (weights-only load; no pickle)."""
    algo, params, layout = read_agent_config(run_dir)
    cls = agent_class(algo)
    try:
        agent = cls(layout.obs_dim, layout.action_dim, layout=layout, **params)
    except TypeError as err:
        raise ValueError(f"config.json has agent settings this version does not know ({err})") from None
    state = safe_torch_load(Path(run_dir) / "policy.pth")
    try:
        agent.load_model_state(state)
    except (RuntimeError, KeyError) as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"policy.pth does not match config.json ({first})") from None
    return agent
