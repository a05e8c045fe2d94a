"""Search a method and its settings for your data: each trial one ``lt-tuning fit``, on Optuna.

``tune(args)`` is ``lt-tuning tune args``: the arguments of ``fit`` plus a ``tune:`` section
(:class:`TuneSettings`). Every trial is the CLI's own ``fit`` (:func:`~lt_tuning.commands.lightning.build_cli`)
with the trial's values as overrides and without the test; each validation reports the objective
to Optuna, whose pruner may stop the trial. The study lives in a database (SQLite in the output
folder by default, PostgreSQL for many machines): any number of workers run the same command,
a rerun resumes, and a killed worker's trial (stale heartbeat) is run again. When no trial is
left, the worker that finished last writes the report (:func:`write_report`): ``best.yaml``,
the best trial's test, ``trials.csv``/``trials.md`` and Optuna's figures.
"""

from __future__ import annotations

import csv
import difflib
import fcntl
import json
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from pytorch_lightning import Callback, LightningModule, Trainer

from lt_tuning.commands.lightning import LTTuningCLI, build_cli
from lt_tuning.io import atomic_write_json, atomic_write_text

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


class TrialFailed(Exception):
    """A trial's fit raised (or gave no finite dev metric): that trial fails, the study goes on."""


# --- the search space ---------------------------------------------------------------------


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


# --- the CLI of a trial -------------------------------------------------------------------


class TuneCLI(LTTuningCLI):
    """The ``lt-tuning`` CLI that also reads a ``tune:`` section; with ``trial``, its fit reports to it."""

    def __init__(self, *args: Any, trial: optuna.Trial | None = None, **kwargs: Any) -> None:
        self.trial = trial
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(TuneSettings, "tune")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if self.trial is not None:
            settings = self.config[self.subcommand].tune
            trainer.callbacks.append(OptunaTrialReport(self.trial, settings.objective))
        return trainer


class ParsedConfig(TuneCLI):
    """Only parses the arguments (``run=False``): the config a trial would get, with no model built."""

    model_optional = False

    def init_parser(self, **kwargs: Any) -> Any:
        return super().init_parser(**{**kwargs, "prog": "lt-tuning tune", "description": __doc__.split("\n\n")[0]})

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        if self.model_optional:  # the `tune:` section alone, before a method config gives the model
            parser.set_defaults({"model": {"class_path": "lt_tuning.models.base.LongTailedClassifier"}})

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def parse_config(args: list[str], model_optional: bool = False) -> Any:
    """The parsed config (a jsonargparse Namespace) of ``fit`` on ``args``, without building
    anything; ``model_optional``: also where no model is given (to read the ``tune:`` section)."""
    cli_class = type("ParsedTuneSection", (ParsedConfig,), {"model_optional": True}) if model_optional else ParsedConfig
    return build_cli(args, run=False, cli_class=cli_class).config


class OptunaTrialReport(Callback):
    """Reports each validation's objective to the trial and prunes a hopeless one; fails on a
    non-finite training loss; refuses an objective the module does not log (after the sanity
    check, before any training step)."""

    def __init__(self, trial: optuna.Trial, objective: str) -> None:
        self.trial, self.objective = trial, objective

    def _value(self, trainer: Trainer) -> float:
        metrics = trainer.callback_metrics
        if self.objective not in metrics:
            logged = sorted(name for name in metrics if not name.startswith("train/")) or "nothing (no dev split?)"
            raise SearchSpaceError(f"tune.objective={self.objective!r} is not logged by the module; it logs: "
                                   f"{logged}. Set --tune.objective to one of them.")
        return float(metrics[self.objective])

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._value(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise FloatingPointError(f"the training loss is {float(loss)} at step {trainer.global_step}")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = self._value(trainer)
        self.trial.report(value, step=trainer.global_step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.objective}={value:.4f} at step {trainer.global_step}")


# --- storage ------------------------------------------------------------------------------


def _parsed_url(url: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError:
        return None


def masked(url: str) -> str:
    """``url`` with its password shown as ``***``."""
    parsed = _parsed_url(url)
    return parsed.render_as_string(hide_password=True) if parsed is not None else url


def _serialize_sqlite(engine: Any) -> None:
    """Every SQLite transaction ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe): SQLite ignores Optuna's
    ``SELECT ... FOR UPDATE``, so two workers could both take the same waiting trial (a retry, an
    enqueued one) between reading and writing it; serialized, the second sees it taken."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners are not reused


def open_storage(url: str, heartbeat_interval: int) -> optuna.storages.RDBStorage:
    """The study database, with heartbeats: a trial silent for two intervals is failed and
    enqueued again (up to 3 times). Refuses an unreachable URL, the password masked."""
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
            if url.startswith("sqlite"):
                _serialize_sqlite(storage.engine)
            return storage
        except (SQLAlchemyError, ImportError) as error:  # Optuna raises ImportError for a missing driver
            # Workers started together race to create the tables: the loser retries.
            if attempt < 2 and (isinstance(error, IntegrityError) or "already exists" in str(error)):
                time.sleep(1 + attempt)
                continue
            failure = error
            break
    reason = str(failure).splitlines()[0]
    password = getattr(_parsed_url(url), "password", None)
    if password:
        reason = reason.replace(password, "***")
    hint = " Install the driver: pip install 'lt-tuning[postgres]'." if isinstance(failure, ImportError) else ""
    raise ValueError(f"cannot reach the study storage {masked(url)}: {reason}.{hint}") from None


# --- the study ----------------------------------------------------------------------------


def counts_against_budget(trial: FrozenTrial) -> bool:
    """Finished, running or queued trials, and those that failed by their own error; not a killed
    worker's (it is run again) nor a surplus one (never run)."""
    if trial.state == TrialState.FAIL:
        return "error" in trial.user_attrs
    return True


class Tuner:
    """One worker of a study: runs trials until the study has ``n_trials``, then reports."""

    def __init__(self, args: list[str]) -> None:
        self.args = list(args)
        self.settings: TuneSettings = parse_config(self.args, model_optional=True).tune
        self.output_dir = Path(self.settings.output_dir)
        self.space = SearchSpace.parse(self.settings.space)
        self.config = self.check_paths()  # the user's config (with the first method): best.yaml's bookkeeping
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.storage_url = self.settings.storage or f"sqlite:///{(self.output_dir / 'study.db').resolve()}"
        storage = open_storage(self.storage_url, self.settings.heartbeat_interval)
        pruner = getattr(optuna.pruners, PRUNERS[self.settings.pruner])(**self.settings.pruner_args)
        self.study = optuna.create_study(storage=storage, study_name=self.settings.study_name, pruner=pruner,
                                         direction=self.settings.direction, load_if_exists=True)
        for params in self.settings.enqueue:
            self.study.enqueue_trial(params, skip_if_exists=True)

    def check_paths(self) -> Any:
        """Every searched path is one the config has (under each method that searches it): else
        name it with the close matches. Also checks each method config parses with the arguments;
        returns the first one's config."""
        configs = [parse_config([*method_args(method), *self.args]) for method in self.space.methods or [None]]
        for method, config in zip(self.space.methods or [None], configs):
            known = set(config.keys()) - {"config"}
            for path in self.space.paths(method):
                if path not in known:
                    close = difflib.get_close_matches(path, sorted(known), n=3, cutoff=0.8)
                    where = f" with {method}" if method else ""
                    raise SearchSpaceError(f"tune.space: the config{where} has no parameter {path!r}"
                                           + (f"; close matches: {close}" if close else "") + ".")
        return configs[0]

    def run(self) -> optuna.Study:
        """Trials until the study has ``n_trials`` and none is running (a stale one is run
        again here), then the report, once."""
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            states = {trial.state for trial in trials}
            if sum(map(counts_against_budget, trials)) < self.settings.n_trials or TrialState.WAITING in states:
                self.study.optimize(self.objective, n_trials=1, catch=(TrialFailed,))
            elif TrialState.RUNNING in states:  # another worker's, or a killed one's until its heartbeat is stale
                time.sleep(min(self.settings.heartbeat_interval, 10))
            else:
                break
        write_report(self)
        return self.study

    def objective(self, trial: optuna.Trial) -> float:
        earlier = [t for t in self.study.get_trials(deepcopy=False) if t.number < trial.number]
        if sum(map(counts_against_budget, earlier)) >= self.settings.n_trials:
            trial.set_user_attr("surplus", True)  # another worker took the last trial at the same moment
            raise TrialFailed(f"the study already has {self.settings.n_trials} trials")
        method, values = self.space.suggest(trial)
        run_dir = self.output_dir / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            cli = build_cli(["fit", *method_args(method), *self.args, *overrides(values),
                             *trial_overrides(self.settings, run_dir)], cli_class=partial(TuneCLI, trial=trial))
        except (optuna.TrialPruned, SearchSpaceError):
            raise
        except (Exception, SystemExit) as error:  # a jsonargparse rejection exits
            trial.set_user_attr("error", " ".join(f"{type(error).__name__}: {error}".split())[:400])  # one line
            raise TrialFailed(str(error)) from error
        callback = cli.trainer.checkpoint_callback
        score = callback.best_model_score if callback else None
        if score is None or not math.isfinite(float(score)):
            trial.set_user_attr("error", f"no finite {self.settings.objective} (best checkpoint score {score})")
            raise TrialFailed(trial.user_attrs["error"])
        trial.set_user_attr("log_dir", str(cli.trainer.log_dir))
        trial.set_user_attr("best_checkpoint", str(callback.best_model_path))
        return float(score)


def trial_overrides(settings: TuneSettings, run_dir: Path) -> list[str]:
    """What a trial changes in ``fit``: its own folder, no test, no last.ckpt (a rerun starts
    afresh), and the best checkpoint (and early stopping) by the objective."""
    mode = "max" if settings.direction == "maximize" else "min"
    return ["--test_after_fit=false", f"--trainer.default_root_dir={run_dir}", "--last_checkpoint.save_last=false",
            f"--checkpoint.monitor={settings.objective}", f"--checkpoint.mode={mode}",
            f"--early_stopping.monitor={settings.objective}", f"--early_stopping.mode={mode}"]


# Keys of trial_overrides that best.yaml gives back their user's value (the rest define "best").
BOOKKEEPING = ("test_after_fit", "trainer.default_root_dir", "last_checkpoint.save_last")


def tune(args: list[str]) -> optuna.Study:
    """``lt-tuning tune args``: this process as one worker of the study; returns the study."""
    return Tuner(args).run()


# --- the report ---------------------------------------------------------------------------


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial (surplus ones left out): number, state, value, minutes, values by config path."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("surplus"):
            continue
        minutes = ((trial.datetime_complete - trial.datetime_start).total_seconds() / 60
                   if trial.datetime_complete and trial.datetime_start else None)
        row = {"number": trial.number, "state": trial.state.name, "value": trial.value,
               "minutes": None if minutes is None else round(minutes, 2)}
        row |= {name.split("@")[0]: value for name, value in trial.params.items()}
        row |= {key: trial.user_attrs.get(key) for key in ("worker", "run_dir", "error")}
        rows.append(row)
    return rows


@dataclass
class _Lock:
    path: Path

    def __enter__(self) -> None:
        self.handle = open(self.path, "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: Any) -> None:
        self.handle.close()


def write_report(tuner: Tuner) -> None:
    """Write the output folder's report (one worker at a time; the best trial tested once)."""
    out = tuner.output_dir
    with _Lock(out / ".report.lock"):
        rows = trial_rows(tuner.study)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with open(out / "trials.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
        completed = [t for t in tuner.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        best = tuner.study.best_trial if completed else None
        test = best_trial_test(tuner, best) if best else None
        atomic_write_text(out / "trials.md", trials_markdown(tuner, rows, best, test))
        write_figures(tuner.study, out, len(completed))


def best_config(tuner: Tuner, trial: FrozenTrial) -> dict[str, Any]:
    """The trial's complete ``fit`` config, its bookkeeping put back to the user's values."""
    config = yaml.safe_load((Path(trial.user_attrs["log_dir"]) / "config.yaml").read_text(encoding="utf-8"))
    config.pop("tune", None)
    for key in BOOKKEEPING:
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = tuner.config[key]
    return config


def best_trial_test(tuner: Tuner, best: FrozenTrial) -> dict[str, Any] | None:
    """best.yaml, and the test of the best trial's best checkpoint (once: kept in best_test.json)."""
    out = tuner.output_dir
    config = best_config(tuner, best)
    atomic_write_text(out / "best.yaml", f"# trial {best.number}: {tuner.settings.objective}={best.value}\n"
                      + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    summary_path = out / "best_test.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if summary["trial"] == best.number:
            return summary
    checkpoint = best.user_attrs["best_checkpoint"]
    if not Path(checkpoint).is_file():
        warnings.warn(f"The best trial's checkpoint {checkpoint} is not on this machine ({best.user_attrs['worker']}): "
                      f"test it there: lt-tuning test --config {out / 'best.yaml'} --ckpt_path {checkpoint}")
        return None
    cli = build_cli(["test", "--config", str(out / "best.yaml"), f"--ckpt_path={checkpoint}",
                     f"--trainer.default_root_dir={out / 'best_test'}"])
    metrics = {key: value for key, value in cli.model.last_test_metrics.items() if isinstance(value, float)}
    summary = {"trial": best.number, "checkpoint": checkpoint, "log_dir": str(cli.trainer.log_dir), "metrics": metrics}
    atomic_write_json(summary_path, summary)
    return summary


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "\\|")


def trials_markdown(tuner: Tuner, rows: list[dict[str, Any]], best: FrozenTrial | None,
                    test: dict[str, Any] | None) -> str:
    settings = tuner.settings
    columns = [key for key in dict.fromkeys(k for row in rows for k in row) if key not in ("run_dir", "error")]
    header = columns[:2] + [f"{settings.objective} (dev)"] + columns[3:]
    lines = [f"# Study {settings.study_name!r}: {settings.direction} {settings.objective}", "",
             f"Storage: `{masked(tuner.storage_url)}`; {len(rows)} trials.", ""]
    if best is not None:
        lines.append(f"Best: trial {best.number}, {settings.objective} = {best.value:.4f} (`best.yaml`).")
    if test is not None:
        lines.append("Its test: " + ", ".join(f"{key} {value:.4f}" for key, value in test["metrics"].items()) + ".")
    if rows:
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cell(row.get(key)) for key in columns) + " |" for row in rows]
    failed = [row for row in rows if row.get("error")]
    if failed:
        lines += ["", "Failed trials:", ""] + [f"- {row['number']}: {row['error']}" for row in failed]
    return "\n".join(lines) + "\n"


def write_figures(study: optuna.Study, out: Path, completed: int) -> None:
    """Optuna's optimization history and (from 2 finished trials) parameter importances, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    from lt_tuning.plots import save_figure

    figures = {"optimization_history.png": plots.plot_optimization_history}
    if completed >= 2 and study.best_trial.params:
        figures["param_importances.png"] = plots.plot_param_importances
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot in figures.items():
            axes = plot(study)
            save_figure(axes.figure, out / name)
            matplotlib.pyplot.close(axes.figure)
