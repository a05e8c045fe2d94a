"""Benchmark 7: classifying raw text with a trained model (PyTorch, ONNX fp32 and int8), and cold starts.

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
hand loop >= 0.95, classifier / pipeline >= 1.5).

Then ONNX, on ``--trained-ckpt`` (a trained CMID checkpoint; default the CLS one above, whose
random weights make the agreement and F1 figures meaningless): the checkpoint exported by
``lt-tuning export --format onnx`` (fp32) and ``--quantize int8``, against the PyTorch classifier
in interleaved rounds at 1 thread and at all threads (goals: fp32 >= 1.3x, int8 >= 2x the
examples/s of PyTorch eager); int8's argmax agreement with fp32 and the test macro F1 of both on
the whole CMID test set (goals: >= 99%, within 0.5 points); the files' sizes.

Last, cold starts: ``lt-tuning classify`` on 5 texts in a fresh process, from the ONNX folder and
from the checkpoint (wall time, median of ``--cold-repeats``), and the same work timed phase by
phase in a fresh process.

    python benchmarks/bench_inference.py --trained-ckpt CKPT   # defaults: about 8 minutes here
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
ONNX_GOALS = {"onnx_fp32": 1.3, "onnx_int8": 2.0, "int8_argmax_agreement": 0.99, "int8_f1_points_below_fp32": 0.5}
PHASES = """
import importlib, json, sys, time
start = time.perf_counter()
import lt_tuning.cli  # what the console script imports, and the runtime's modules: ONNX Runtime or torch
from pathlib import Path
from lt_tuning.settings import ClassifierSettings
onnx = Path(sys.argv[1]).is_dir() and ClassifierSettings.load(sys.argv[1]).format == "onnx"
importlib.import_module("lt_tuning.onnx_runtime" if onnx else "lt_tuning.inference")
imported = time.perf_counter()
from lt_tuning import load_classifier
classifier = load_classifier(sys.argv[1])
loaded = time.perf_counter()
texts = [line for line in open(sys.argv[2], encoding="utf-8").read().split("\\n") if line]
classifier.encode(texts)
encoded = time.perf_counter()
classifier.predict_proba(texts)
predicted = time.perf_counter()
print(json.dumps({"imports (lt_tuning.cli, the runtime)": imported - start, "loading": loaded - imported, "tokenizing": encoded - loaded,
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


def cold_start(model: Path | str, work: Path, repeats: int) -> list[float]:
    """Wall seconds of ``lt-tuning classify`` on ``five.txt`` in a fresh process, ``repeats`` times."""
    script = Path(sys.executable).with_name("lt-tuning")
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([str(script), "classify", "--ckpt_path", str(model), "--input", "five.txt"], cwd=work,
                       check=True, capture_output=True)
        seconds.append(time.perf_counter() - start)
    return seconds


def onnx_part(args, ckpt: Path | str, work: Path) -> dict:
    """PyTorch eager vs ONNX fp32 vs ONNX int8 on the CMID test texts: speed at 1 and all threads,
    int8's agreement and macro F1 on the whole test set, file sizes."""
    import os

    import numpy as np
    import torch

    from lt_tuning import export_classifier, load_classifier
    from lt_tuning.metrics import MacroF1
    from lt_tuning.data.reading import read_labelled_file
    from lt_tuning.onnx_runtime import OnnxClassifier

    pytorch = load_classifier(ckpt, "cpu")
    label2idx = {label: index for index, label in enumerate(pytorch.labels)}
    test = read_labelled_file(args.data_dir / "cmid" / "test.tsv", ["text"], "label", label2idx)
    texts, gold = test["text_a"][: args.limit], test["label"][: args.limit]
    for name, quantize in (("onnx_fp32", None), ("onnx_int8", "int8")):
        export_classifier(ckpt, work / name, format="onnx", quantize=quantize)
    slices = [texts[start : start + args.chunk] for start in range(0, len(texts), args.chunk)]
    threads_all = os.cpu_count() or 1
    speed, rows = {}, []
    for threads in sorted({1, threads_all}):
        sessions = {name: OnnxClassifier.load(work / name, threads=threads) for name in ("onnx_fp32", "onnx_int8")}
        calls = dict.fromkeys(["pytorch", *sessions], 0)

        def way(name: str):
            def run() -> None:
                torch.set_num_threads(threads)
                calls[name] += 1
                chunk = slices[(calls[name] - 1) % len(slices)]
                (pytorch if name == "pytorch" else sessions[name]).predict_proba(chunk, args.batch_size)
            return run

        seconds = C.interleaved({name: way(name) for name in calls}, args.onnx_repeats)
        torch.set_num_threads(args.threads)
        ratios = {name: C.paired_ratios(seconds["pytorch"], seconds[name]) for name in sessions}
        speed[threads] = {"seconds": {name: C.summary(values) for name, values in seconds.items()},
                          "speed_up": {name: C.summary(values, 3) for name, values in ratios.items()}}
        for name in calls:
            ratio = "1" if name == "pytorch" else f"**{statistics.median(ratios[name]):.2f}x** (goal >= {ONNX_GOALS[name]})"
            rows.append([threads, name, f"{args.chunk / statistics.median(seconds[name]):.0f}", ratio])
    probs = {"pytorch": pytorch.predict_proba(texts, args.batch_size, as_numpy=True)}
    for name in ("onnx_fp32", "onnx_int8"):
        probs[name] = OnnxClassifier.load(work / name).predict_proba(texts, args.batch_size)
    predicted = {name: value.argmax(axis=1) for name, value in probs.items()}
    f1 = {name: 100 * MacroF1(len(pytorch.labels))(torch.from_numpy(value), torch.tensor(gold)).item()
          for name, value in predicted.items()}
    agreement = float((predicted["onnx_int8"] == predicted["onnx_fp32"]).mean())
    fp32_difference = float(np.abs(probs["onnx_fp32"] - probs["pytorch"]).max())
    sizes = {"checkpoint": Path(ckpt).stat().st_size,
             **{name: (work / name / "model.onnx").stat().st_size for name in ("onnx_fp32", "onnx_int8")}}
    size_rows = [[name, f"{size / 2**20:.1f}"] for name, size in sizes.items()]
    markdown = (
        f"#### ONNX Runtime vs PyTorch eager ({Path(ckpt).name}, {args.onnx_repeats} interleaved rounds of "
        f"{args.chunk} CMID test texts per thread count, batch {args.batch_size}, median)\n\n"
        + C.markdown_table(["threads", "way", "examples/s", "speed-up over PyTorch"], rows)
        + f"\n\nOn all {len(texts)} CMID test texts: max |probability difference| ONNX fp32 vs PyTorch "
        f"{fp32_difference:.1e}; int8 argmax agreement with fp32 **{100 * agreement:.2f}%** (goal >= 99%); "
        f"test macro F1 PyTorch {f1['pytorch']:.2f}, ONNX fp32 {f1['onnx_fp32']:.2f}, int8 **{f1['onnx_int8']:.2f}** "
        "(goal: within 0.5 points of fp32).\n\nFile sizes (MiB):\n\n" + C.markdown_table(["file", "MiB"], size_rows)
    )
    return {"markdown": markdown, "checkpoint": str(ckpt), "speed_by_threads": speed, "texts": len(texts),
            "max_abs_probability_difference_fp32": fp32_difference, "int8_argmax_agreement": agreement,
            "test_macro_f1": {name: round(value, 3) for name, value in f1.items()}, "file_bytes": sizes}


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=21)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=350, help="texts per round (2,450 / 350: 7 slices in turn)")
    parser.add_argument("--limit", type=int, default=None, help="texts (quick checks); default the whole test split")
    parser.add_argument("--cold-repeats", type=int, default=3)
    parser.add_argument("--trained-ckpt", help="a trained CMID checkpoint for the ONNX part")
    parser.add_argument("--onnx-repeats", type=int, default=7, help="interleaved rounds per thread count (ONNX)")
    args = parser.parse_args()
    started, env = C.start(args)

    import torch
    from transformers import pipeline

    from lt_tuning import export_classifier, load_classifier
    from lt_tuning.metrics import MacroF1
    from lt_tuning.data.reading import read_labelled_file

    texts = read_labelled_file(args.data_dir / "cmid" / "test.tsv", ["text"], None, None)["text_a"][: args.limit]
    with C.workdir() as work:
        ckpt = save_checkpoint(work, args.data_dir)
        classifier = load_classifier(ckpt)
        export_classifier(ckpt, work / "exported")
        classify = pipeline("text-classification", model=str(work / "exported"), top_k=None, device="cpu")
        tokenizer, module, max_length = classifier.tokenizer, classifier.module, classifier.settings.max_length

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

        onnx = onnx_part(args, args.trained_ckpt or ckpt, work)
        (work / "five.txt").write_text("\n".join(texts[:5]) + "\n", encoding="utf-8")
        cold, phases = {}, {}
        for source, model in (("ONNX folder", work / "onnx_fp32"), ("checkpoint", args.trained_ckpt or ckpt)):
            cold[source] = cold_start(model, work, args.cold_repeats)
            phases[source] = json.loads(subprocess.run([sys.executable, "-c", PHASES, str(model), str(work / "five.txt")],
                                                       check=True, capture_output=True, text=True).stdout)
    per_second = {name: args.chunk / statistics.median(values) for name, values in seconds.items()}
    rows = [[name, f"{per_second[name]:.0f}", f"{statistics.median(seconds[name]):.2f}",
             "1" if name == "classifier" else f"**{statistics.median(ratios[name]):.2f}x** (goal >= {GOALS[name]})"]
            for name in seconds]
    phase_rows = [[name, *(f"{phases[source][name]:.2f}" for source in phases)] for name in phases["checkpoint"]]
    phase_rows.append(["**wall, `lt-tuning classify` (median)**", *(f"**{statistics.median(cold[s]):.2f}**" for s in cold)])
    markdown = (
        f"### 7. Inference ({args.repeats} interleaved rounds of {args.chunk} of the {len(texts)} CMID test texts, "
        f"batch {args.batch_size}, median)\n\n" + C.markdown_table(["way", "examples/s", "seconds", "classifier speed-up"], rows)
        + f"\n\nMax |probability difference| classifier vs pipeline: {difference:.1e}. Committed backbone "
        f"(5.9M parameters), CLS-tuning (tanh), fp32, CPU, {args.threads} torch thread(s).\n\n"
        + "\n\n" + onnx["markdown"] + "\n\n"
        f"Cold start: `lt-tuning classify --ckpt_path PATH --input five.txt` (5 texts), wall time (median of "
        f"{args.cold_repeats}), and the same work in a fresh process, phase by phase (s):\n\n"
        + C.markdown_table(["phase", *cold], phase_rows)
    )
    C.write_results(
        NAME, args, env, started, markdown,
        description="Raw-text classification: examples/s of load_classifier(...).predict_proba vs a hand loop and "
        "vs transformers' pipeline on the exported model; ONNX fp32/int8 vs PyTorch eager; cold starts of "
        "lt-tuning classify on 5 texts from an ONNX folder and from a checkpoint.",
        seconds={name: C.summary(values) for name, values in seconds.items()},
        examples_per_second={name: round(value, 1) for name, value in per_second.items()},
        speed_up={name: C.summary(values, 3) for name, values in ratios.items()}, goals=GOALS,
        max_abs_probability_difference=difference,
        cold_start_seconds={source: C.summary(values, 2) for source, values in cold.items()},
        cold_start_phases_seconds={source: {k: round(v, 3) for k, v in values.items()} for source, values in phases.items()},
        onnx={key: value for key, value in onnx.items() if key != "markdown"}, onnx_goals=ONNX_GOALS,
        commit=subprocess.run(["git", "rev-parse", "HEAD"], cwd=C.ROOT, capture_output=True, text=True).stdout.strip(),
    )


if __name__ == "__main__":
    main()
