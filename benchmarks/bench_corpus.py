"""Benchmark 8: pretraining on a big text corpus: peak memory and time against corpus size.

For each corpus size, a text file of the CMID, CTC and R52 train texts repeated (one text a
line) is pretrained on twice, each time in a fresh Python process that builds
``MaskedLMCorpusDataModule(text_files=[file], tokenizer=examples/backbone)``, runs
``prepare_data`` and ``setup("fit")`` (read, hold out, tokenize and pack, a chunk of a million
texts at a time on ``num_proc`` processes) and a few steps of ``Trainer.fit`` of the committed
backbone: the first run with an empty cache, the second over the same file and cache.

Memory, per run: the peak resident set size (``ru_maxrss``) of the largest of the run's
processes (the tokenizing ones too), and of the main process up to the end of ``setup``; and
the peak of the anonymous memory of all its processes together (``Pss_Anon`` summed over the
process tree, sampled every 0.2 s): what they allocated. Resident memory also counts the
pages of memory-mapped Arrow files that a process has read, page cache that the kernel takes
back when memory runs short. Results are written after each corpus size.

    python benchmarks/bench_corpus.py                       # 200 MB, 1 GB, 2 GB: about 50 minutes here
    python benchmarks/bench_corpus.py --sizes-mb 200,1024   # about 20 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common as C

NAME = "corpus"
RATIO_GOAL = 1.2  # the largest corpus' peak over the smallest's
PEAK_GOAL_MB = 2048


def write_corpus(path: Path, size_mb: float, data_dir: Path) -> None:
    """``path``: the CMID, CTC and R52 train texts, one a line, repeated to ``size_mb`` MiB."""
    from lt_tuning.data.reading import read_labelled_file
    from lt_tuning.data.tasks import TASKS

    texts = []
    for task in ("cmid", "ctc", "r52"):
        columns = read_labelled_file(data_dir / task / "train.tsv", TASKS[task].text_fields, None, None)
        texts += [" ".join(text.split("\n")) for field in ("text_a", "text_b") for text in columns.get(field, [])]
    block, size = ("\n".join(texts) + "\n").encode("utf-8"), int(size_mb * 2**20)
    with path.open("wb") as handle:
        for _ in range(size // len(block)):
            handle.write(block)
        handle.write(block[: block.rfind(b"\n", 0, size % len(block)) + 1])  # whole lines


def process_tree(root: int) -> list[int]:
    """``root`` and every process under it (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += parents.get(pid, [])
    return tree


def memory_mb(pid: int, path: str = "smaps_rollup") -> dict[str, float]:
    """``Pss`` and ``Pss_Anon`` of ``pid`` (its share of the pages it shares with other processes,
    so that the sum over a process tree counts each page once), or ``VmHWM`` (``path="status"``), in MB."""
    try:
        lines = Path(f"/proc/{pid}/{path}").read_text().splitlines()
    except OSError:
        return {}
    return {key: int(value.split()[0]) / 1024 for key, value in (line.split(":", 1) for line in lines if ":" in line)
            if key in ("Pss", "Pss_Anon", "VmHWM")}


def measured_run(command: list[str]) -> dict:
    """Run ``command``; its JSON line of timings, with the peak memory of its process tree."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peaks = {"tree_pss_mb": 0.0, "tree_anon_mb": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            usage = [memory_mb(pid) for pid in process_tree(process.pid)]
            peaks["tree_pss_mb"] = max(peaks["tree_pss_mb"], sum(u.get("Pss", 0) for u in usage))
            peaks["tree_anon_mb"] = max(peaks["tree_anon_mb"], sum(u.get("Pss_Anon", 0) for u in usage))

    sampler = threading.Thread(target=sample)
    sampler.start()
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode})")
    result = json.loads(output.strip().splitlines()[-1])
    return {**result, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            **{key: round(value, 1) for key, value in peaks.items()}}


def child(corpus: str, cache: str, tokenizer: str, steps: int, num_proc: int | None, precision: str) -> None:
    """One run in this fresh process: the DataModule, ``prepare_data`` + ``setup``, ``steps`` training steps."""
    started = time.perf_counter()
    import pytorch_lightning as pl
    import torch

    from lt_tuning import MaskedLMCorpusDataModule, MaskedLMPretrainingModule

    C.quiet()
    torch.set_num_threads(1)
    imported = time.perf_counter()
    data = MaskedLMCorpusDataModule(text_files=[corpus], tokenizer=tokenizer, max_length=128, batch_size=32,
                                    num_proc=num_proc, cache_dir=cache)
    data.prepare_data()
    data.setup("fit")
    prepared = time.perf_counter()
    setup_peak = memory_mb(os.getpid(), "status")["VmHWM"]
    first_step: list[float] = []

    class FirstStep(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            first_step.append(first_step[0] if first_step else time.perf_counter())

    module = MaskedLMPretrainingModule(data.vocab_size, data.pad_token_id, model_name_or_path=tokenizer)
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, precision=precision, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[FirstStep()])
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    cache_bytes = sum(path.stat().st_size for path in Path(cache).rglob("*") if path.is_file())
    print(json.dumps({
        "texts": len(data.texts), "train_blocks": len(data.datasets["train"]), "num_proc": data.num_proc,
        "tokenized_files": len(data.tokenized("train").cache_files), "steps": trainer.global_step,
        "import_s": round(imported - started, 1), "prepare_and_setup_s": round(prepared - imported, 1),
        "to_first_step_s": round(first_step[0] - started, 1), "total_s": round(time.perf_counter() - started, 1),
        "cache_mb": round(cache_bytes / 2**20, 1), "setup_peak_rss_mb": round(setup_peak, 1),
    }))


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--sizes-mb", default="200,1024,2048", help="corpus sizes in MiB, smallest first")
    parser.add_argument("--steps", type=int, default=3, help="training steps after setup")
    parser.add_argument("--num-proc", type=int, default=None, help="tokenizing processes (default: one per core)")
    parser.add_argument("--precision", default="bf16-mixed", help="of the training steps (the backbone's recipe)")
    parser.add_argument("--tokenizer", default=str(C.ROOT / "examples" / "backbone"),
                        help="tokenizer and starting model (the committed backbone)")
    parser.add_argument("--work-dir", default=None, help="corpora and caches (default: a temporary folder)")
    parser.add_argument("--child", nargs=2, metavar=("CORPUS", "CACHE"), help=argparse.SUPPRESS)  # a run, here
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.tokenizer, args.steps, args.num_proc, args.precision)
    started, env = C.start(args)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="lt_bench_corpus_"))
    work.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    try:
        for size in [float(size) for size in args.sizes_mb.split(",")]:
            corpus, cache = work / f"corpus-{size:g}MB.txt", work / f"cache-{size:g}MB"
            write_corpus(corpus, size, args.data_dir)
            for run in ("first", "second"):
                command = [sys.executable, __file__, "--child", str(corpus), str(cache), "--tokenizer", args.tokenizer,
                           "--steps", str(args.steps), "--precision", args.precision]
                result = measured_run(command + (["--num-proc", str(args.num_proc)] if args.num_proc else []))
                runs.append({"size_mb": round(corpus.stat().st_size / 2**20, 1), "run": run, **result})
                print(json.dumps(runs[-1]), flush=True)
            shutil.rmtree(cache)
            corpus.unlink()
            write(runs, args, env, started)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def write(runs: list[dict], args: argparse.Namespace, env: dict, started: float) -> None:
    """The results so far: ``corpus.json`` and ``corpus.md``."""
    first = [run for run in runs if run["run"] == "first"]
    ratio = {key: round(first[-1][key] / first[0][key], 2) for key in ("setup_peak_rss_mb", "peak_rss_mb", "tree_anon_mb")}
    met = ratio["peak_rss_mb"] <= RATIO_GOAL and first[-1]["peak_rss_mb"] < PEAK_GOAL_MB
    table = C.markdown_table(
        ["corpus", "texts", "run", "peak RSS to the end of setup (MB)", "peak RSS, any process (MB)",
         "peak anonymous memory, all processes (MB)", "to first step (s)", "prepare + setup (s)",
         "tokenized Arrow files (chunks x processes)", "cache on disk (MB)"],
        [[f"{run['size_mb']:,g} MB", run["texts"], run["run"], run["setup_peak_rss_mb"], run["peak_rss_mb"],
          run["tree_anon_mb"], run["to_first_step_s"], run["prepare_and_setup_s"], run["tokenized_files"],
          run["cache_mb"]] for run in runs],
    )
    markdown = (
        f"### 8. Pretraining corpus: memory and time against corpus size\n\n{table}\n\n"
        f"Largest over smallest corpus, first runs: peak RSS **{ratio['peak_rss_mb']}x** (main process to the end "
        f"of setup: {ratio['setup_peak_rss_mb']}x), peak anonymous memory **{ratio['tree_anon_mb']}x**; goal: peak "
        f"RSS <= {RATIO_GOAL}x and under {PEAK_GOAL_MB:,} MB: {'met' if met else 'not met'}. Each run is a fresh "
        "process: `MaskedLMCorpusDataModule(text_files=[corpus], tokenizer=examples/backbone, max_length=128, "
        f"batch_size=32)`, `prepare_data`, `setup(\"fit\")`, then {args.steps} step(s) of `Trainer.fit` of the "
        f"committed backbone ({args.precision}, 1 torch thread); the second run finds the first one's cache. The "
        "corpus: the CMID, CTC and R52 train texts repeated, one a line. Peak RSS: `ru_maxrss`, of the largest of "
        "the run's processes; it counts the pages of memory-mapped Arrow files that a process has read, page cache "
        "that the kernel takes back when memory runs short. Anonymous memory: `Pss_Anon` summed over the run's "
        "processes (sampled every 0.2 s), what they allocated."
    )
    C.write_results(
        NAME, args, env, started, markdown,
        description="Peak memory and time of MaskedLMCorpusDataModule on text corpora of growing size, "
        "first run (empty cache) and second run (cached), each in a fresh process.",
        results={"runs": runs, "first_run_ratio_largest_over_smallest": ratio, "ratio_goal": RATIO_GOAL,
                 "peak_goal_mb": PEAK_GOAL_MB, "goal_met": met},
    )


if __name__ == "__main__":
    main()
