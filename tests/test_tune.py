"""``lt-tuning tune``: real worker processes on real storage (SQLite; PostgreSQL where a server
can start), a killed worker's trial run again, pruning, failures, best.yaml, bad input."""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pytest
import pytorch_lightning as pl
import yaml

from conftest import ROOT, SHARED_DATA, require_split
from lt_tuning.cli import main
from lt_tuning.commands.lightning import build_cli
from lt_tuning.tuning import open_storage

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
METHODS = ROOT / "examples" / "methods"


def tiny_args(tmp_path: Path, model_dir: str, cache: Path, **tune: object) -> list[str]:
    """The tiny model on 32 CMID examples a split, 2 steps a trial with a validation after each;
    a ``tune:`` section in a config file, as a user writes it."""
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({"tune": {"output_dir": str(tmp_path / "out"), "heartbeat_interval": 1, **tune}}))
    return ["--config", str(config), "--data=lt_tuning.CMIDDataModule", f"--data.data_dir={SHARED_DATA}",
            f"--data.model_name_or_path={model_dir}", "--data.limit_examples=32", "--data.batch_size=8",
            f"--data.cache_dir={cache}", "--trainer.max_steps=2", "--trainer.val_check_interval=1",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--plots.enabled=false"]


GAMMA = {"model.init_args.focal_gamma": {"low": 0.5, "high": 2.0}}  # searched under CLS-tuning only
SEARCH = {"method": {"choices": {str(METHODS / "prompt_tuning.yaml"): {}, str(METHODS / "cls_tuning_tanh.yaml"): GAMMA}},
          "model.init_args.learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}


def start_worker(args: list[str], folder: Path) -> subprocess.Popen:
    """The installed ``lt-tuning tune`` in a fresh process, run from another folder (with this
    folder importable, for :class:`Gate`)."""
    script = Path(sys.executable).with_name("lt-tuning")
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(Path(__file__).parent)]))
    return subprocess.Popen([str(script), "tune", *args], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=open(folder / f"worker-{time.monotonic_ns()}.log", "w"),
                            env={**os.environ, "PYTHONPATH": path})


class Gate(pl.Callback):
    """Holds each trial at its training start until ``path`` exists: a test opens it once every
    worker holds a trial, so that each takes part whatever the machine's speed."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        while not self.path.exists():
            time.sleep(0.05)


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@functools.cache
def storage_at(url: str) -> optuna.storages.RDBStorage:
    """One connection per study (opening one costs about half a second of CPU, polled here 10
    times a second); the library's opener, which retries while a worker is creating the tables."""
    return open_storage(url, 60)


def trials_of(storage: str, worker: subprocess.Popen | None = None) -> list[optuna.trial.FrozenTrial]:
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        return []  # the worker has not created it yet
    try:
        trials = optuna.load_study(study_name="lt-tuning", storage=storage_at(storage)).get_trials()
    except KeyError:  # the study is not created yet
        return []
    mark = f"{socket.gethostname()}:{worker.pid}" if worker else None
    return [t for t in trials if mark is None or t.user_attrs.get("worker") == mark]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenized")


def test_two_workers_share_a_study_a_killed_workers_trial_is_run_again_and_best_yaml_refits(tmp_path, tiny_bert_dir,
                                                                                            cache):
    """Worker A (a fresh process) and worker B (this one) on the default SQLite storage: A is
    SIGKILLed in a trial; B runs it again once its heartbeat is stale, finishes the 6 trials
    and reports. A rerun (resume) then runs nothing. best.yaml refits to the best dev F1."""
    require_split("cmid", "dev")
    args = tiny_args(tmp_path, tiny_bert_dir, cache, n_trials=6, space=SEARCH, pruner="none")
    storage = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    worker_a = start_worker([*args, f"--trainer.default_root_dir={tmp_path / 'user'}"], tmp_path)
    wait_for(lambda: any(t.state == optuna.trial.TrialState.COMPLETE for t in trials_of(storage, worker_a)),
             "worker A's first finished trial")

    killed: list[int] = []

    def kill_a_in_its_next_trial() -> None:
        wait_for(lambda: any(t.state == optuna.trial.TrialState.RUNNING for t in trials_of(storage, worker_a)),
                 "worker A's next trial")
        [running] = [t for t in trials_of(storage, worker_a) if t.state == optuna.trial.TrialState.RUNNING]
        os.kill(worker_a.pid, signal.SIGKILL)
        killed.append(running.number)

    killer = threading.Thread(target=kill_a_in_its_next_trial)
    killer.start()
    main(["tune", *args, f"--trainer.default_root_dir={tmp_path / 'user'}"])  # worker B, until the study is done
    killer.join()
    assert worker_a.wait() == -signal.SIGKILL

    trials = trials_of(storage)
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 6 and len({t.number for t in finished}) == 6
    workers = {f"{socket.gethostname()}:{pid}" for pid in (worker_a.pid, os.getpid())}
    assert {t.user_attrs["worker"] for t in finished} == workers
    [stale] = [t for t in trials if t.number == killed[0]]
    assert stale.state == optuna.trial.TrialState.FAIL and "error" not in stale.user_attrs
    [rerun] = [t for t in finished if t.system_attrs.get("failed_trial") == killed[0]]  # run again once, same values
    assert rerun.params == stale.params and rerun.user_attrs["worker"].endswith(f":{os.getpid()}")
    assert len(trials) == 7  # 6 finished + the killed one: nothing finished twice

    main(["tune", *args, f"--trainer.default_root_dir={tmp_path / 'user'}"])  # the resume: nothing left to run
    assert len(trials_of(storage)) == 7

    out = tmp_path / "out"
    rows = list(csv.DictReader(open(out / "trials.csv", encoding="utf-8")))
    assert [int(row["number"]) for row in rows] == [t.number for t in trials]
    assert {row["state"] for row in rows} == {"COMPLETE", "FAIL"}
    assert (out / "optimization_history.png").stat().st_size > 1000 and (out / "param_importances.png").is_file()
    best = max((t for t in finished if t.value is not None), key=lambda t: t.value)
    assert f"Best: trial {best.number}, val/f1 = {best.value:.4f}" in (out / "trials.md").read_text(encoding="utf-8")

    # The test split: only the best trial's test, once, after the search.
    tested = sorted(out.rglob("test_metrics.json"))
    assert [path.relative_to(out).parts[0] for path in tested] == ["best_test"]
    summary = json.loads((out / "best_test.json").read_text(encoding="utf-8"))
    assert summary["trial"] == best.number and 0.0 <= summary["metrics"]["test/f1"] <= 1.0

    # best.yaml: the complete config; `lt-tuning fit --config best.yaml` gets the same dev F1.
    config = yaml.safe_load((out / "best.yaml").read_text(encoding="utf-8"))
    assert "tune" not in config and config["test_after_fit"] is True
    assert config["trainer"]["default_root_dir"] == str(tmp_path / "user")  # the user's, not the trial's folder
    assert config["model"]["init_args"]["learning_rate"] == best.params["model.init_args.learning_rate"]
    refit = build_cli(["fit", "--config", str(out / "best.yaml")])
    assert refit.trainer.checkpoint_callback.best_model_score.item() == best.value


def test_a_hopeless_trial_is_pruned_and_failing_ones_fail_while_the_study_goes_on(tmp_path, tiny_bert_dir, cache):
    """Designed trials (enqueued): post-hoc logit adjustment with tau -1000 predicts the most
    frequent class (the same dev accuracy whatever the model), +1000 a class with no training
    example (a lower one): the median pruner stops it at its first validation. A learning rate
    of 1e30 makes the loss infinite (failed), a class-balanced beta of 1 the model rejects (failed)."""
    require_split("cmid", "dev")
    tau, lr = "model.init_args.logit_adjustment_tau", "model.init_args.learning_rate"
    beta = "model.init_args.class_balanced_beta"
    space = {tau: {"choices": [-1000.0, 1000.0]}, lr: {"choices": [1.0e-3, 2.0e-3, 1.0e30]},
             beta: {"choices": [None, 1.0]}}
    enqueue = [{tau: -1000.0, lr: 1.0e-3, beta: None}, {tau: -1000.0, lr: 2.0e-3, beta: None},
               {tau: 1000.0, lr: 1.0e-3, beta: None}, {tau: -1000.0, lr: 1.0e30, beta: None},
               {tau: -1000.0, lr: 1.0e-3, beta: 1.0}]
    args = tiny_args(tmp_path, tiny_bert_dir, cache, n_trials=5, space=space, enqueue=enqueue, objective="val/acc",
                     pruner_args={"n_startup_trials": 2})
    main(["tune", "--config", str(METHODS / "prompt_tuning.yaml"), *args, "--model.init_args.logit_adjustment=posthoc"])
    trials = trials_of(f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "FAIL"]
    assert trials[0].value == trials[1].value > trials[2].value  # the majority class's share of dev, then less
    assert trials[2].last_step == 1  # stopped at its first validation, of 2
    assert trials[3].user_attrs["error"].startswith("FloatingPointError: the training loss is ")
    assert "class-balanced beta must be in [0, 1), got 1.0" in trials[4].user_attrs["error"]
    [line] = [line for line in (tmp_path / "out" / "trials.md").read_text(encoding="utf-8").splitlines()
              if line.startswith("- 4: ")]
    assert "class-balanced beta must be in [0, 1), got 1.0" in line


@pytest.mark.parametrize(("tune", "message"), [
    ({"space": {"model.init_args.learning_rte": {"low": 1e-4, "high": 1e-3}}},
     r"tune\.space: the config has no parameter 'model\.init_args\.learning_rte'; "
     r"close matches: \['model\.init_args\.learning_rate'\]"),
    ({"space": {"method": {"choices": {str(METHODS / "cls_tuning_focal.yaml"): {"model.init_args.gamma": GAMMA[
        "model.init_args.focal_gamma"]}}}}},
     r"tune\.space: the config with .*cls_tuning_focal\.yaml has no parameter 'model\.init_args\.gamma'; "
     r"close matches: \['model\.init_args\.focal_gamma'"),
    ({"space": {"model.init_args.learning_rate": {"low": 1e-2, "high": 1e-3}}},
     r"tune\.space\['model\.init_args\.learning_rate'\] = .*: `low <= high` must hold, "
     r"but got \(low=0\.01, high=0\.001\)"),
    ({"space": {"model.init_args.warmup_proportion": {"low": 0.0, "high": 0.2, "log": True}}},
     r"tune\.space\['model\.init_args\.warmup_proportion'\] = .*: `low > 0` must hold for `log=True`"),
    ({"storage": "postgresql://lt:s3cret@127.0.0.1:9/study"},
     r"cannot reach the study storage postgresql://lt:\*\*\*@127\.0\.0\.1:9/study: \(psycopg\.OperationalError\)"),
], ids=["unknown path", "unknown path under a method", "low > high", "log range through 0", "unreachable storage"])
def test_bad_input_is_refused_before_any_training(tune, message, tmp_path, tiny_bert_dir, cache):
    args = tiny_args(tmp_path, tiny_bert_dir, cache, **tune)
    with pytest.raises(SystemExit, match=f"^error: {message}") as refused:
        main(["tune", "--config", str(METHODS / "prompt_tuning.yaml"), *args])
    assert "s3cret" not in str(refused.value)
    assert not (tmp_path / "out" / "trials").exists()


def test_an_objective_the_module_does_not_log_is_named_with_those_it_does(tmp_path, tiny_bert_dir, cache):
    require_split("cmid", "dev")
    args = tiny_args(tmp_path, tiny_bert_dir, cache, objective="val/macro_f1")
    with pytest.raises(SystemExit, match=r"^error: tune\.objective='val/macro_f1' is not logged by the module; it logs: "
                                         r"\['val/acc', 'val/f1', .*'val/head_f1', .*'val/tail_f1'.*\]"):
        main(["tune", "--config", str(METHODS / "prompt_tuning.yaml"), *args])
    assert not list((tmp_path / "out").rglob("*.ckpt"))  # refused at the sanity check, before a training step


POSTGRES = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def postgres_url() -> str:
    """A throwaway PostgreSQL server on a unix socket in a temporary folder (run as the
    ``postgres`` user where this runs as root); skipped, with the reason, where none can start."""
    if not (POSTGRES / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {POSTGRES}")
    folder = Path(tempfile.mkdtemp(prefix="lt-pg-"))  # not under pytest's folder, which only its owner may enter
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=60)

    try:
        init = run(str(POSTGRES / "initdb"), "-D", f"{folder}/data", "-A", "trust", "-U", "lt")
        start = run(str(POSTGRES / "pg_ctl"), "-D", f"{folder}/data", "-l", f"{folder}/log", "-w", "start",
                    "-o", f"-k {folder} -c listen_addresses='' -c fsync=off") if init.returncode == 0 else init
        if start.returncode != 0:
            pytest.skip(f"no PostgreSQL server could start: {(start.stderr or start.stdout).strip()[-300:]}")
        yield f"postgresql://lt@/postgres?host={folder}"
        run(str(POSTGRES / "pg_ctl"), "-D", f"{folder}/data", "-m", "immediate", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_on_a_postgresql_server_share_one_study(tmp_path, tiny_bert_dir, cache, postgres_url):
    """Worker A (a fresh process) and B (this one): the gate holds each trial until both hold one."""
    require_split("cmid", "dev")
    args = tiny_args(tmp_path, tiny_bert_dir, cache, n_trials=3, space=SEARCH, storage=postgres_url)
    (tmp_path / "gate.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "test_tune.Gate", "init_args": {"path": str(tmp_path / "open")}}]}}))
    args += ["--config", str(tmp_path / "gate.yaml")]
    worker_a = start_worker(args, tmp_path)

    def open_when_both_hold_a_trial() -> None:
        running = lambda: {t.user_attrs.get("worker") for t in trials_of(postgres_url)  # noqa: E731
                           if t.state == optuna.trial.TrialState.RUNNING}
        wait_for(lambda: len(running()) == 2, "a trial held by each worker")
        (tmp_path / "open").touch()

    opener = threading.Thread(target=open_when_both_hold_a_trial)
    opener.start()
    main(["tune", *args])
    opener.join()
    assert worker_a.wait(timeout=120) == 0
    finished = [t for t in trials_of(postgres_url) if t.state in FINISHED]
    assert sorted(t.number for t in finished) == [0, 1, 2]
    assert {t.user_attrs["worker"].split(":")[1] for t in finished} == {str(worker_a.pid), str(os.getpid())}
    assert "Storage: `postgresql://lt@/postgres?host=" in (tmp_path / "out" / "trials.md").read_text(encoding="utf-8")
