"""``lt-tuning`` on 2 CPU processes (DDP over gloo), run as a user runs it: the console script, a
fresh process, another folder. Each result equals the 1-process one of the same checkpoint."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHARED_DATA, require_split
from lt_tuning.callbacks import PlotWriter
from lt_tuning.cli import main
from lt_tuning.data.loaders import train_loader

# 101 examples a split, evaluated 10 a batch: the processes get 51 and 50 (6 and 5 batches).
DATA = ["--data.init_args.limit_examples=101", "--data.init_args.batch_size=8", "--data.init_args.eval_batch_size=10"]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TWO = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]


def cmid_args(model_dir: str, method: str, cache: Path) -> list[str]:
    return ["--config", str(ROOT / "examples/data/cmid.yaml"), "--config", str(ROOT / f"examples/methods/{method}.yaml"),
            f"--data.init_args.data_dir={SHARED_DATA}", f"--data.init_args.model_name_or_path={model_dir}",
            f"--data.init_args.cache_dir={cache}", *DATA, *QUIET]


def run_two_processes(folder: Path, subcommand: str, args: list[str]) -> subprocess.CompletedProcess:
    """``lt-tuning <subcommand> ... --trainer.devices 2`` in ``folder``; a hang fails after 240 s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = Path(sys.executable).with_name("lt-tuning")  # the console script installed beside this interpreter
    result = subprocess.run([str(script), subcommand, *args, *TWO], cwd=folder, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    assert "sync_dist=True" not in result.stderr  # the metrics are reduced already: no advice that does not apply
    # nothing a user cannot act on: Lightning's tips for a cloud service, its warning of two argument sources
    assert "💡" not in result.stdout + result.stderr and "sys.argv" not in result.stderr
    return result


def metrics_files(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.rglob("test_metrics.json"))]


def one_process_test_metrics(folder: Path, args: list[str], monkeypatch) -> dict:
    monkeypatch.chdir(folder)
    main(["test", *args, f"--trainer.default_root_dir={folder}", "--plots.enabled=false"])
    [metrics] = metrics_files(folder)
    return metrics


@pytest.fixture(scope="module")
def fitted_on_two(tmp_path_factory, tiny_bert_dir) -> dict:
    """``lt-tuning fit`` with ``group_by_length`` and bf16-mixed on 2 processes, testing its best
    checkpoint on 2: its output, metrics, log folder and best checkpoint."""
    require_split("cmid", "train")
    folder = tmp_path_factory.mktemp("two")
    args = cmid_args(tiny_bert_dir, "prompt_tuning", folder / "cache")
    fit = run_two_processes(folder, "fit", [*args, "--data.init_args.group_by_length=true",
                                            "--trainer.precision=bf16-mixed", "--trainer.max_steps=4",
                                            "--trainer.val_check_interval=2", "--model.init_args.learning_rate=0.01"])
    [metrics] = metrics_files(folder)
    [log_dir] = [path.parent for path in folder.rglob("test_metrics.json")]
    [best] = log_dir.glob("checkpoints/best-step=*.ckpt")
    return {"stdout": fit.stdout, "metrics": metrics, "log_dir": log_dir, "best": best, "args": args}


@pytest.mark.slow
def test_two_processes_fit_and_test_as_one_process(fitted_on_two, tmp_path, monkeypatch):
    """The metrics are printed once, written once (with the plots), and equal a 1-process test
    of the same checkpoint."""
    fitted, log_dir = dict(fitted_on_two["metrics"]), fitted_on_two["log_dir"]
    assert fitted_on_two["stdout"].count("test/tail_f1") == 1
    assert sorted(path.name for path in log_dir.glob("*.png")) == sorted([*PlotWriter.FILES, PlotWriter.CONFUSION_FILE])
    assert 0 < fitted["test/acc"] < 1  # a result that can tell the processes' shares apart
    evaluation = [*fitted_on_two["args"], f"--ckpt_path={fitted_on_two['best']}", "--trainer.precision=bf16-mixed"]
    alone = one_process_test_metrics(tmp_path, evaluation, monkeypatch)
    # counts-based metrics exactly; the calibration errors (float sums, in another order) to rounding
    ece = [key for key in fitted if key.endswith("ece")]
    assert ece and {key: fitted.pop(key) for key in ece} == pytest.approx({key: alone.pop(key) for key in ece}, rel=1e-5)
    assert fitted == alone


def test_training_loader_without_grouping_gives_each_process_its_share():
    """Without length grouping, N processes train on a ``DistributedSampler``'s shares (the
    grouped sampler has its own test in test_data.py)."""
    dataset = list(range(11))
    shares = [list(train_loader(dataset, 2, False, seed=7, world_size=2, rank=rank).sampler) for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 6 and set(shares[0] + shares[1]) == set(range(11))


UNSEEDED_FIT_THEN_PREDICT = """
import json, sys
import pytorch_lightning as pl, torch
from lt_tuning import CMIDDataModule, PromptTuningModule, TextClassificationDataModule
from lt_tuning.callbacks import PredictionWriter

class Record(pl.LightningModule):
    # trains nothing: records which examples each process's batches hold, epoch by epoch
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.seen = []
    def training_step(self, batch, batch_idx):
        self.seen.append([self.current_epoch, batch["index"].tolist()])
        return (self.weight ** 2).sum()
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)
    def on_train_end(self):
        with open(f"seen{self.global_rank}.json", "w") as file:
            json.dump(self.seen, file)

data, tokenizer, checkpoint, cmid, cache, predictions = sys.argv[1:]
dm = TextClassificationDataModule(model_name_or_path=tokenizer, train_file=data, labels=["a", "b"],
                                  verbalizer={"a": "a", "b": "b"}, input_format="cls", batch_size=2)
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     callbacks=[PredictionWriter(output_file=predictions)])
trainer.fit(Record(), datamodule=dm)
# then the same processes predict the CMID test split with a trained checkpoint
model = PromptTuningModule.load_from_checkpoint(checkpoint, map_location="cpu")
cmid = CMIDDataModule(data_dir=cmid, model_name_or_path=tokenizer, limit_examples=101, batch_size=8,
                      eval_batch_size=10, cache_dir=cache, input_format=model.input_format)
trainer.predict(model, datamodule=cmid, return_predictions=False)
"""


def test_two_processes_from_python_unseeded_see_each_example_once_an_epoch_then_predict_as_one(
        fitted_on_two, tmp_path, tiny_bert_dir):
    """No ``seed_everything``: the processes still draw one order and split it (they used to draw
    one each, so that some examples were trained on twice an epoch and others never). Then the
    same 2 processes predict with the fitted checkpoint: the file holds each example once, in
    input order, and equals `lt-tuning predict` on 1 process."""
    rows = "".join(f"{'头' * n}\t{'ab'[n % 2]}\n" for n in range(1, 17))
    (tmp_path / "train.tsv").write_text(f"text\tlabel\n{rows}", encoding="utf-8")
    (tmp_path / "fit.py").write_text(UNSEEDED_FIT_THEN_PREDICT, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "PL_GLOBAL_SEED"}
    best = fitted_on_two["best"]
    result = subprocess.run([sys.executable, "fit.py", str(tmp_path / "train.tsv"), tiny_bert_dir, str(best),
                             str(SHARED_DATA / "cmid"), str(tmp_path / "cache"), str(tmp_path / "two.tsv")],
                            cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    seen = [json.loads((tmp_path / f"seen{rank}.json").read_text()) for rank in (0, 1)]
    for epoch in (0, 1):
        shares = [sorted(i for e, batch in rank for i in batch if e == epoch) for rank in seen]
        assert len(shares[0]) == len(shares[1]) == 8
        assert sorted(shares[0] + shares[1]) == list(range(16))  # every example once: no overlap, none left out

    assert result.stdout.count("Wrote 101 predictions") == 1
    main(["predict", *fitted_on_two["args"], f"--ckpt_path={best}", f"--prediction_writer.output_file={tmp_path / 'one.tsv'}"])
    rows = list(csv.reader((tmp_path / "two.tsv").open(encoding="utf-8"), delimiter="\t"))
    test_texts = [line.split("\t")[0] for line in (SHARED_DATA / "cmid/test.tsv").read_text("utf-8").splitlines()[1:102]]
    assert [row[0] for row in rows[1:]] == test_texts  # every example once, in input order
    assert (tmp_path / "two.tsv").read_text(encoding="utf-8") == (tmp_path / "one.tsv").read_text(encoding="utf-8")
