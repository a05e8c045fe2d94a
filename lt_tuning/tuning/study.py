"""One worker of a study: runs trials until the study has ``n_trials``, then writes the report."""

from __future__ import annotations

import difflib
import math
import os
import socket
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lt_tuning.commands.lightning import build_cli
from lt_tuning.tuning.space import PRUNERS, SearchSpace, SearchSpaceError, TuneSettings, method_args, overrides
from lt_tuning.tuning.report import write_report
from lt_tuning.tuning.storage import open_storage
from lt_tuning.tuning.trial import TrialFailed, TuneCLI, parse_config, trial_overrides


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
        # A first heartbeat before anything else: Optuna's comes from a thread that may not have run
        # yet, and a trial with none is never stale, so a worker killed now would leave it running forever.
        self.study._storage.record_heartbeat(trial._trial_id)
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

def tune(args: list[str]) -> optuna.Study:
    """``lt-tuning tune args``: this process as one worker of the study; returns the study."""
    return Tuner(args).run()
