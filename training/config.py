"""The experiment configuration: one YAML file, four frozen sections, command-line overrides applied first.

A config YAML has the sections ``data`` (``data.config.DataConfig``), ``env``
(``environments.config.EnvConfig``), ``agent`` (hyper-parameters per algorithm: ``{ppo: {...}, sac: {...}}``,
each built into the agent layer's frozen config dataclass from ``agents.registry``) and ``training``
(``TrainingConfig`` below).
``evaluation`` and ``deployment`` sections belong to later layers and are carried through untouched.

Overrides (``--seed 3``, ``--set env.window=20``) are applied to the raw mapping *before* the frozen
dataclasses are built, so a config is never mutated after parsing. Every problem (unknown or missing key,
wrong type, impossible value) raises ``data.market.DataError`` with one sentence.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.portfolio_gradient import PortfolioGradientConfig
from agents.registry import ALGOS, DERIVED_FIELDS, algorithm
from data.atomic_files import atomic_write_text
from data.config import DataConfig, from_mapping, load_yaml, to_mapping
from data.market import DataError
from environments.config import EnvConfig, env_section

SECTIONS: tuple[str, ...] = ("data", "env", "agent", "training")
PASSTHROUGH_SECTIONS: tuple[str, ...] = ("evaluation", "deployment")
CONFIG_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "quickstart.yaml"


@dataclass(frozen=True)
class TrainingConfig:
    """How to train: algorithm, budget, seeds, checkpoints, validation span and walk-forward folds.

    - ``algo``: one of ``ppo``, ``sac``, ``ddpg``, ``forecaster``.
    - ``total_timesteps``: env steps summed over the ``n_envs`` parallel portfolios.
    - ``n_envs``: portfolios stepped together by the batched env (each starts at a random day).
    - ``checkpoint_every``: env steps between checkpoints (0: only at the end).
    - ``eval_every``: env steps between validation evaluations; these feed TensorBoard and the Optuna
      pruner (0: only at the end).
    - ``val_end``: last validation day (ISO); ``""`` means ``data.end``. Validation starts the day after
      ``data.train_end``; with ``data.train_end`` = ``data.end`` (a final fit) there is none.
    - ``val_years``: walk-forward validation years (fold k trains on ``[data.start, Dec 31 of year-1]`` and
      validates on the year); ``seeds``: the seeds a multi-seed run fans out over.
    - ``torch_threads``: intra-op threads for torch (1 keeps runs bit-reproducible and CI-friendly).
    - ``warm_start``: optional ``agents.portfolio_gradient.PortfolioGradientConfig`` mapping (PPO only):
      before PPO's first update, its actor is trained by gradient ascent on the exact daily log growth net
      of costs of its weights on the training span (``steps``, ``learning_rate``, ``risk_aversion``,
      ``downside``, ``sharpe``, ``turnover_penalty``, ``holdout_days``...; its ``seed`` is replaced by ``training.seed``). Absent = off.
    """

    algo: str = "ppo"
    total_timesteps: int = 20_000
    seed: int = 0
    n_envs: int = 4
    checkpoint_every: int = 0
    eval_every: int = 0
    val_end: str = ""
    val_years: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    torch_threads: int = 1
    warm_start: PortfolioGradientConfig | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment. ``agent`` maps each algorithm named in the YAML to its frozen config dataclass
    (``agents.registry.REGISTRY[algo].config_class``); the derived fields (window, n_features, seed) keep
    their defaults there and are filled in by ``agent_config_for``."""

    data: DataConfig
    env: EnvConfig
    agent: dict[str, Any]
    training: TrainingConfig
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def algo(self) -> str:
        return self.training.algo

    @property
    def agent_config(self) -> Any:
        """The configured algorithm's hyper-parameters (the class defaults when the YAML has no section)."""
        return self.agent.get(self.algo) or algorithm(self.algo).config_class()

    def agent_config_for(self, n_features: int) -> Any:
        """``agent_config`` with window = ``env.window``, n_features = the store's, seed = ``training.seed``."""
        return algorithm(self.algo).derived(self.agent_config, self.env.window, n_features, self.training.seed)

    @property
    def val_start(self) -> str:
        """The first validation day: the day after ``data.train_end`` (ISO)."""
        return str(np.datetime64(self.data.train_end, "D") + np.timedelta64(1, "D"))

    @property
    def val_end(self) -> str:
        return self.training.val_end or self.data.end

    @property
    def validates(self) -> bool:
        """False for a final fit: ``data.train_end == data.end`` trains on every day and leaves no validation span
        (judge the run with the backtester on later data)."""
        return np.datetime64(self.data.train_end, "D") != np.datetime64(self.data.end, "D")


def costs_of(cfg: ExperimentConfig) -> dict[str, tuple[float, float]]:
    """Per-category (fee, slippage) bps overrides from ``data.costs_bps``."""
    return {k: (float(v[0]), float(v[1])) for k, v in cfg.data.costs_bps.items()}


def parse_set_option(item: str) -> tuple[str, Any]:
    """``"env.window=20"`` -> ``("env.window", 20)``; the value is parsed as YAML (numbers, lists, bools)."""
    import yaml

    if "=" not in item:
        raise DataError(f"--set expects SECTION.KEY=VALUE, got '{item}'")
    key, raw = item.split("=", 1)
    key = key.strip()
    if "." not in key:
        raise DataError(f"--set key '{key}' must name a section and a key, e.g. training.seed")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise DataError(f"--set value for '{key}' is not valid YAML: {raw!r}") from None
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``raw`` with each dotted key in ``overrides`` set (``None`` values are skipped).

    ``{"training.seed": 3, "agent.ppo.lr": 1e-4}``; intermediate mappings are created when missing.
    """
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        if value is None:
            continue
        parts = dotted.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                raise DataError(f"cannot override '{dotted}': '{'.'.join(parts[: i + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _check_date(value: str, where: str) -> np.datetime64:
    try:
        return np.datetime64(value, "D")
    except ValueError:
        raise DataError(f"{where} must be an ISO date like 2022-12-31, got {value!r}") from None


def validate_agent_params(algo: str, params: dict[str, Any]) -> Any:
    """Build the agent's config dataclass from ``params`` (unknown algorithm, key or wrong type -> DataError)."""
    if algo not in ALGOS:
        raise DataError(f"unknown algorithm '{algo}'; expected one of {', '.join(ALGOS)}")
    for key in DERIVED_FIELDS:
        if key in params:
            raise DataError(f"agent.{algo}.{key} is set from the env/training sections; remove it from the agent section")
    try:
        return from_mapping(algorithm(algo).config_class, params, f"agent.{algo}")
    except DataError:
        raise
    except (TypeError, ValueError) as err:
        raise DataError(f"agent.{algo} is invalid: {err}") from None


def from_raw(raw: dict[str, Any], where: str = "config") -> ExperimentConfig:
    """Build and validate an ``ExperimentConfig`` from a raw mapping (already overridden)."""
    unknown = sorted(set(raw) - set(SECTIONS) - set(PASSTHROUGH_SECTIONS))
    if unknown:
        raise DataError(
            f"unknown section '{unknown[0]}' in {where}; allowed sections are "
            f"{', '.join(SECTIONS + PASSTHROUGH_SECTIONS)}"
        )
    for section in SECTIONS:
        if section not in raw:
            raise DataError(f"{where} has no '{section}' section")
        if raw[section] is None:
            raw = {**raw, section: {}}
        if not isinstance(raw[section], dict):
            raise DataError(f"section '{section}' of {where} must be a mapping")
    data = from_mapping(DataConfig, raw["data"], "data")
    if not data.universe:
        raise DataError(f"{where} is missing the key 'data.universe'")
    env = from_mapping(EnvConfig, env_section(raw["env"]), "env")
    try:
        training = from_mapping(TrainingConfig, raw["training"], "training")
    except ValueError as err:  # a config dataclass's own range check (e.g. training.warm_start.steps)
        raise DataError(str(err)) from None
    agent_raw = raw["agent"]
    for algo, params in agent_raw.items():
        if algo not in ALGOS:
            raise DataError(f"unknown algorithm '{algo}' in the agent section; expected one of {', '.join(ALGOS)}")
        if params is not None and not isinstance(params, dict):
            raise DataError(f"agent.{algo} must be a mapping of hyper-parameters")
    if training.algo not in ALGOS:
        raise DataError(f"unknown algorithm '{training.algo}'; expected one of {', '.join(ALGOS)}")
    if training.warm_start is not None and training.algo != "ppo":
        raise DataError(f"training.warm_start pre-trains PPO's actor; it does not apply to '{training.algo}'")
    agent = {algo: validate_agent_params(algo, dict(params or {})) for algo, params in agent_raw.items()}
    start = _check_date(data.start, "data.start")
    train_end = _check_date(data.train_end, "data.train_end")
    end = _check_date(data.end, "data.end")
    if not start < train_end <= end:
        raise DataError("dates must satisfy data.start < data.train_end <= data.end")
    if training.val_end:
        val_end = _check_date(training.val_end, "training.val_end")
        if val_end <= train_end or val_end > end:
            raise DataError("training.val_end must fall after data.train_end and on or before data.end")
    if training.total_timesteps <= 0:
        raise DataError(f"training.total_timesteps must be positive, got {training.total_timesteps}")
    if training.n_envs <= 0:
        raise DataError(f"training.n_envs must be positive, got {training.n_envs}")
    if training.checkpoint_every < 0 or training.eval_every < 0:
        raise DataError("training.checkpoint_every and training.eval_every must be >= 0")
    if not training.seeds:
        raise DataError("training.seeds must list at least one seed")
    extra = {k: copy.deepcopy(raw[k]) for k in PASSTHROUGH_SECTIONS if k in raw}
    cfg = ExperimentConfig(data=data, env=env, agent=agent, training=training, extra=extra)
    if not cfg.validates:  # a final fit: every day is training, nothing is left to validate on
        if training.algo == "forecaster":
            raise DataError("the forecaster is scored on the validation span; set data.train_end before data.end")
        if training.eval_every:
            raise DataError("training.eval_every needs a validation span; a final fit (data.train_end = data.end) "
                            "has none: set it to 0")
    return cfg


def load_experiment(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read the YAML at ``path`` (default ``configs/quickstart.yaml``), apply ``overrides``, validate.

    A run directory's ``config.json`` is accepted too (its ``experiment`` entry is used), so a run can be
    retrained or resumed from its own record.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if path.suffix == ".json":
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"config file '{path}' does not exist") from None
        except json.JSONDecodeError:
            raise DataError(f"config file '{path}' is not valid JSON") from None
        raw = loaded.get("experiment", loaded) if isinstance(loaded, dict) else None
        if not isinstance(raw, dict):
            raise DataError(f"config file '{path}' must hold a mapping of sections")
    else:
        raw = load_yaml(str(path))
    return from_raw(apply_overrides(raw, overrides or {}), where=f"config file '{path}'")


def to_raw(cfg: ExperimentConfig) -> dict[str, Any]:
    """The inverse of ``from_raw``: a plain mapping (YAML/JSON-safe) that ``from_raw`` rebuilds exactly."""
    out: dict[str, Any] = {
        "data": to_mapping(cfg.data),
        "env": to_mapping(cfg.env),
        "agent": {algo: {k: v for k, v in to_mapping(c).items() if k not in DERIVED_FIELDS}
                  for algo, c in cfg.agent.items()},
        "training": to_mapping(cfg.training),
    }
    out.update(copy.deepcopy(cfg.extra))
    return out


def write_yaml(cfg: ExperimentConfig, path: str | Path, header: str = "") -> None:
    """Write ``cfg`` as a YAML file ``train.py --config`` accepts (temp file + rename)."""
    import yaml

    text = yaml.safe_dump(to_raw(cfg), sort_keys=False, default_flow_style=False)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    atomic_write_text(path, text)
