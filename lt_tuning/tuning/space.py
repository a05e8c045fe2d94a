"""The ``tune:`` section (:class:`TuneSettings`) and its search space: Optuna distributions
from ranges and choices, a method config file as one of them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

PRUNERS = {"median": "MedianPruner", "percentile": "PercentilePruner", "hyperband": "HyperbandPruner",
           "successive_halving": "SuccessiveHalvingPruner", "threshold": "ThresholdPruner", "none": "NopPruner"}
METHOD = "method"  # the space entry that chooses among method config files


@dataclass
class TuneSettings:
    """The ``tune:`` section of a config (or ``--tune.*`` options).

    Args:
        objective: the dev metric a trial is scored by, as the module logs it (``val/f1``: macro F1).
        direction: ``maximize`` or ``minimize`` the objective.
        n_trials: trials in the study in all, over every worker and rerun (failed ones count,
            those of a killed worker do not: they are run again).
        space: ``path: {low, high[, log, step]}`` (int range where low and high are ints, else
            float) or ``path: {choices: [...]}``; ``method: {choices: [a.yaml, b.yaml]}`` chooses
            a method config file, or ``{choices: {a.yaml: {path: range}, b.yaml: {}}}`` also
            searches a method's own parameters under that method only.
        pruner: Optuna's pruner fed by each validation (``none``: no pruning).
        pruner_args: the pruner's arguments, e.g. ``{n_startup_trials: 5, n_warmup_steps: 100}``.
        enqueue: trials to run first, as ``{name: value}`` (names as in trials.csv), e.g. the default.
        storage: the study's database URL; default ``sqlite:///<output_dir>/study.db``. A
            ``postgresql://user:password@host/db`` URL lets workers on many machines share the study.
        study_name: the study's name in the storage.
        output_dir: trials' run folders, the report, and the default storage.
        heartbeat_interval: seconds between a running trial's heartbeats; a trial silent for
            twice as long is failed and run again.
    """

    objective: str = "val/f1"
    direction: Literal["maximize", "minimize"] = "maximize"
    n_trials: int = 20
    space: dict[str, Any] = field(default_factory=dict)
    pruner: Literal["median", "percentile", "hyperband", "successive_halving", "threshold", "none"] = "median"
    pruner_args: dict[str, Any] = field(default_factory=dict)
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    storage: str | None = None
    study_name: str = "lt-tuning"
    output_dir: str = "tune"
    heartbeat_interval: int = 60


class SearchSpaceError(ValueError):
    """The ``tune:`` section asks for something the run cannot do: stops the study, not a trial."""


@dataclass(frozen=True)
class SearchSpace:
    """Parameters searched in every trial (``common``) and, per method config, that method's own."""

    common: dict[str, BaseDistribution]
    methods: dict[str, dict[str, BaseDistribution]]  # method file -> its own parameters; {} without `method`

    @classmethod
    def parse(cls, space: dict[str, Any]) -> SearchSpace:
        common = {path: distribution(path, spec) for path, spec in space.items() if path != METHOD}
        methods: dict[str, dict[str, BaseDistribution]] = {}
        if METHOD in space:
            choices = space[METHOD].get("choices") if isinstance(space[METHOD], dict) else None
            if not choices:
                raise SearchSpaceError("tune.space.method needs `choices`: a list of method config files, or "
                                       "a mapping of each file to its own parameters' ranges.")
            own = choices if isinstance(choices, dict) else {choice: {} for choice in choices}
            for method, params in own.items():
                if not Path(method).is_file():
                    raise SearchSpaceError(f"tune.space.method: no method config {method!r} (from {os.getcwd()}).")
                methods[str(method)] = {path: distribution(f"{path} (under {method})", spec)
                                        for path, spec in (params or {}).items()}
        return cls(common, methods)

    def suggest(self, trial: optuna.Trial) -> tuple[str | None, dict[str, Any]]:
        """The trial's method file (None without ``method``) and its values by config path."""
        method = trial.suggest_categorical(METHOD, list(self.methods)) if self.methods else None
        own = self.methods.get(method, {}) if method else {}
        values = {path: _suggest(trial, path, dist) for path, dist in self.common.items()}
        values |= {path: _suggest(trial, param_name(path, method), dist) for path, dist in own.items()}
        return method, values

    def paths(self, method: str | None) -> list[str]:
        return [*self.common, *(self.methods.get(method, {}) if method else {})]


def param_name(path: str, method: str | None) -> str:
    """Optuna's name of a parameter: its config path; ``path@method stem`` for a method's own."""
    return f"{path}@{Path(method).stem}" if method else path


def distribution(path: str, spec: Any) -> BaseDistribution:
    """An Optuna distribution from ``{low, high[, log, step]}`` or ``{choices}``; Optuna's own
    checks (low > high, a log range through 0) name the parameter."""
    if not isinstance(spec, dict) or not ({"choices"} <= spec.keys() or {"low", "high"} <= spec.keys()):
        raise SearchSpaceError(f"tune.space[{path!r}] = {spec!r}: give {{low: ..., high: ...[, log: true]}} "
                               "or {choices: [...]}.")
    unknown = set(spec) - ({"choices"} if "choices" in spec else {"low", "high", "log", "step"})
    if unknown:
        raise SearchSpaceError(f"tune.space[{path!r}] has unknown keys {sorted(unknown)}.")
    try:
        if "choices" in spec:
            return CategoricalDistribution(list(spec["choices"]))
        integral = all(isinstance(spec[key], int) and not isinstance(spec[key], bool) for key in ("low", "high"))
        kind = IntDistribution if integral and isinstance(spec.get("step", 1), int) else FloatDistribution
        return kind(**spec)
    except (ValueError, TypeError) as error:
        raise SearchSpaceError(f"tune.space[{path!r}] = {spec!r}: {error}") from error


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    suggest = trial.suggest_int if isinstance(dist, IntDistribution) else trial.suggest_float
    return suggest(name, dist.low, dist.high, step=dist.step, log=dist.log)


def overrides(values: dict[str, Any]) -> list[str]:
    """Command-line overrides ``--path=value`` (values as YAML reads them back)."""
    return [f"--{path}={json.dumps(value)}" for path, value in values.items()]


def method_args(method: str | None) -> list[str]:
    return ["--config", method] if method else []
