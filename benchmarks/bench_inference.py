"""Benchmark 7: classifying raw text with a trained model, and the cold start of ``lt-tuning predict``.

On the committed backbone (``examples/backbone``) and the CMID test texts (2,450), a CLS-tuning
(tanh) classifier saved as ``fit`` saves it (speed does not depend on the weights' values):

* classifier: ``load_classifier(ckpt).predict_proba(texts, batch_size)``;
* hand loop: the least code doing the same work: tokenize all texts, sort by length, pad each
  batch with the tokenizer, run the module's forward under ``inference_mode``, softmax;
* pipeline: transformers' ``pipeline("text-classification")`` on the exported folder
  (``top_k=None``: every label's probability, as ``predict_proba``; ``truncation=True`` to the
  training ``max_length``), the same batch size.

The three alternate over ``--repeats`` rounds, each round on the next slice of ``--chunk`` texts
(the same slice for all three; short rounds, so that the load of other jobs changes little
within one); the figures are medians of per-round ratios of examples/s (goals: classifier /
hand loop >= 0.95, classifier / pipeline >= 1.5). Then the cold
start: ``lt-tuning predict --input`` on 5 texts in a fresh process (wall time, median of
``--cold-repeats``), and the same work timed phase by phase in a fresh process.

    python benchmarks/bench_inference.py            # defaults: about 5 minutes here
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common as C

NAME = "inference"
GOALS = {"hand_loop": 0.95, "pipeline": 1.5}
PHASES = """
import json, sys, time
start = time.perf_counter()
import lt_tuning.cli  # what the console script imports
imported = time.perf_counter()
from lt_tuning import load_classifier
classifier = load_classifier(sys.argv[1])
loaded = time.perf_counter()
texts = [line for line in open(sys.argv[2], encoding="utf-8").read().split("\\n") if line]
classifier.encode(texts)
encoded = time.perf_counter()
classifier.predict_proba(texts)
predicted = time.perf_counter()
print(json.dumps({"imports": imported - start, "loading": loaded - imported, "tokenizing": encoded - loaded,
                  "predict_proba (tokenizing + forward)": predicted - encoded}))
"""


def save_checkpoint(folder, data_dir) -> str:
    """A CLS-tuning (tanh) checkpoint on the committed backbone, saved by a Trainer as ``fit`` saves one."""
    import pytorch_lightning as pl

    from lt_tuning import ClsTuningModule, CMIDDataModule

    backbone = str(C.ROOT / "examples" / "backbone")
    dm = CMIDDataModule(data_dir=str(data_dir), model_name_or_path=backbone, input_format="cls",
                        limit_examples=32, cache_dir=str(folder / "cache"))
    model = ClsTuningModule(backbone, num_classes=dm.num_classes)
    trainer = pl.Trainer(limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.validate(model, dm, verbose=False)
    trainer.save_checkpoint(folder / "cls.ckpt")
    return str(folder / "cls.ckpt")


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=21)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=350, help="texts per round (2,450 / 350: 7 slices in turn)")
    parser.add_argument("--limit", type=int, default=None, help="texts (quick checks); default the whole test split")
    parser.add_argument("--cold-repeats", type=int, default=3)
    args = parser.parse_args()
    started, env = C.start(args)

    import torch
    from transformers import pipeline

    from lt_tuning import export_classifier, load_classifier
    from lt_tuning.data.reading import read_labelled_file

    texts = read_labelled_file(args.data_dir / "cmid" / "test.tsv", ["text"], None, None)["text_a"][: args.limit]
    with C.workdir() as work:
        ckpt = save_checkpoint(work, args.data_dir)
        classifier = load_classifier(ckpt)
        export_classifier(ckpt, work / "exported")
        classify = pipeline("text-classification", model=str(work / "exported"), top_k=None, device="cpu")
        tokenizer, module, max_length = classifier.tokenizer, classifier.module, classifier.spec["max_length"]

        slices = [texts[start : start + args.chunk] for start in range(0, len(texts), args.chunk)]
        calls = {"classifier": 0, "hand_loop": 0, "pipeline": 0}

        def round_texts(way: str) -> list[str]:
            """The slice of this round: the ``n``-th call of each way gets the same one."""
            calls[way] += 1
            return slices[(calls[way] - 1) % len(slices)]

        def hand_loop() -> None:
            chunk_texts = round_texts("hand_loop")
            ids = tokenizer(chunk_texts, truncation=True, max_length=max_length)["input_ids"]
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
            with torch.inference_mode():
                for start in range(0, len(order), args.batch_size):
                    chunk = order[start : start + args.batch_size]
                    batch = tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt")
                    module(dict(batch)).softmax(dim=-1)

        def ours() -> None:
            classifier.predict_proba(round_texts("classifier"), args.batch_size)

        def theirs() -> None:
            classify(round_texts("pipeline"), batch_size=args.batch_size, truncation=True)

        seconds = C.interleaved({"classifier": ours, "hand_loop": hand_loop, "pipeline": theirs}, args.repeats)
        ratios = {other: C.paired_ratios(seconds[other], seconds["classifier"]) for other in GOALS}
        # the same probabilities: the pipeline's, by label name, against the classifier's
        sample = texts[:64]
        ours = classifier.predict_proba(sample)
        theirs = torch.tensor([[{r["label"]: r["score"] for r in row}[label] for label in classifier.labels]
                               for row in classify(sample, truncation=True)])
        difference = float((ours - theirs).abs().max())

        (work / "five.txt").write_text("\n".join(texts[:5]) + "\n", encoding="utf-8")
        script = Path(sys.executable).with_name("lt-tuning")
        cold = []
        for _ in range(args.cold_repeats):
            start = time.perf_counter()
            subprocess.run([str(script), "predict", "--ckpt_path", ckpt, "--input", "five.txt"], cwd=work,
                           check=True, capture_output=True)
            cold.append(time.perf_counter() - start)
        phases = json.loads(subprocess.run([sys.executable, "-c", PHASES, ckpt, str(work / "five.txt")],
                                           check=True, capture_output=True, text=True).stdout)
    per_second = {name: args.chunk / statistics.median(values) for name, values in seconds.items()}
    rows = [[name, f"{per_second[name]:.0f}", f"{statistics.median(seconds[name]):.2f}",
             "1" if name == "classifier" else f"**{statistics.median(ratios[name]):.2f}x** (goal >= {GOALS[name]})"]
            for name in seconds]
    phase_rows = [[name, f"{value:.2f}"] for name, value in phases.items()]
    markdown = (
        f"### 7. Inference ({args.repeats} interleaved rounds of {args.chunk} of the {len(texts)} CMID test texts, "
        f"batch {args.batch_size}, median)\n\n" + C.markdown_table(["way", "examples/s", "seconds", "classifier speed-up"], rows)
        + f"\n\nMax |probability difference| classifier vs pipeline: {difference:.1e}. Committed backbone "
        f"(5.9M parameters), CLS-tuning (tanh), fp32, CPU, {args.threads} torch thread(s).\n\n"
        f"Cold start: `lt-tuning predict --ckpt_path CKPT --input five.txt` (5 texts) took "
        f"{statistics.median(cold):.1f} s wall (median of {args.cold_repeats}); the same work in a fresh process, "
        "phase by phase (s):\n\n" + C.markdown_table(["phase", "seconds"], phase_rows)
    )
    C.write_results(
        NAME, args, env, started, markdown,
        description="Raw-text classification: examples/s of load_classifier(...).predict_proba vs a hand loop and "
        "vs transformers' pipeline on the exported model; cold start of lt-tuning predict on 5 texts.",
        seconds={name: C.summary(values) for name, values in seconds.items()},
        examples_per_second={name: round(value, 1) for name, value in per_second.items()},
        speed_up={name: C.summary(values, 3) for name, values in ratios.items()}, goals=GOALS,
        max_abs_probability_difference=difference,
        cold_start_seconds=C.summary(cold, 2), cold_start_phases_seconds={k: round(v, 3) for k, v in phases.items()},
    )


if __name__ == "__main__":
    main()
