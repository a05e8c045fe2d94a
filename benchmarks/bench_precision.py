"""Benchmark 5: mixed precision: ``precision="bf16-mixed"`` vs fp32 through ``Trainer.fit``.

CPU: the same ``PromptTuningModule`` copy and R52 prompt batches trained through two
``Trainer.fit`` runs, ``precision="bf16-mixed"`` and ``"32-true"``, in lockstep (one step of
each in turn, who moves first alternating between repeats); the figure is the median of the
per-repeat steady steps/s ratios bf16 / fp32. "Works" is checked too: the linear layers ran in
bfloat16, every loss is finite, and the bf16 losses track the fp32 ones.

GPU (only where ``torch.cuda.is_available()``): R52 prompt-tuning on a BERT-base-sized random
model, batch 32, max_length 256, through our DataModule (dynamic padding, length-grouped
batches) with bf16-mixed and with fp32: examples/s next to the reference's published figure
(about 30 examples/s: one V100, fp32, every batch padded to 256).

    python benchmarks/bench_precision.py            # defaults: about 2 minutes here (CPU)
"""

from __future__ import annotations

import statistics
import time

import _common as C
import _lockstep as L

NAME = "precision"
REFERENCE_EXAMPLES_PER_S = 30.0  # one V100, fp32, R52, bert-base-uncased, batch 32 padded to 256


def cpu_comparison(args, work, model_dir, results, rows) -> None:
    import pytorch_lightning as pl
    import torch

    from lt_tuning import PromptTuningModule, R52DataModule

    dm = R52DataModule(data_dir=str(args.data_dir), model_name_or_path=model_dir, max_length=args.max_length,
                       input_format="prompt", cache_dir=str(work / "cache"))
    batches = C.encoded_batches(dm, "test", "prompt", args.batch_size, args.steps)
    module = PromptTuningModule(model_dir, num_classes=dm.num_classes, verbalizer=dm.verbalizer, **C.RECIPE)
    observed: dict[str, dict] = {key: {"losses": [], "linear_dtypes": set()} for key in ("bf16", "fp32")}

    class Observe(pl.Callback):
        def __init__(self, key: str) -> None:
            self.key = key
            self.handle = None

        def on_train_start(self, trainer, pl_module):
            linear = next(m for m in pl_module.modules() if isinstance(m, torch.nn.Linear))
            self.handle = linear.register_forward_hook(
                lambda _m, _i, out: observed[self.key]["linear_dtypes"].add(str(out.dtype).replace("torch.", ""))
            )

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            observed[self.key]["losses"].append(float(outputs["loss"]))

        def on_train_end(self, trainer, pl_module):
            self.handle.remove()

    def make_loops():
        for entry in observed.values():
            entry["losses"].clear()
        return {
            "bf16": L.trainer_loop(module, batches, precision="bf16-mixed", callbacks=[Observe("bf16")]),
            "fp32": L.trainer_loop(module, batches, precision="32-true", callbacks=[Observe("fp32")]),
        }

    runs = L.lockstep_repeats(make_loops, repeats=args.repeats, skip=args.skip)
    bf16, fp32 = runs["steps_per_s"]["bf16"], runs["steps_per_s"]["fp32"]
    ratios = C.paired_ratios(bf16, fp32)
    losses_b, losses_f = observed["bf16"]["losses"], observed["fp32"]["losses"]
    finite = all(map(lambda x: x == x and abs(x) != float("inf"), losses_b))
    loss_gap = max(abs(a - b) for a, b in zip(losses_b, losses_f))
    works = finite and observed["bf16"]["linear_dtypes"] == {"bfloat16"} and loss_gap < 0.05 * max(map(abs, losses_f))
    median = statistics.median(ratios)
    results["cpu"] = {
        "model": C.model_facts(model_dir),
        "batch_shape": list(batches[0]["input_ids"].shape),
        "bf16_steps_per_s": C.summary(bf16),
        "fp32_steps_per_s": C.summary(fp32),
        "ratio_bf16_over_fp32": C.summary(ratios, 3),
        "bf16_works": works,
        "checks": {
            "linear_output_dtypes": {key: sorted(entry["linear_dtypes"]) for key, entry in observed.items()},
            "all_bf16_losses_finite": finite,
            "max_abs_loss_difference_bf16_vs_fp32": round(loss_gap, 5),
            "losses_last_run": {"bf16": [round(x, 5) for x in losses_b], "fp32": [round(x, 5) for x in losses_f]},
        },
        "cpu_has_bf16_instructions": _cpu_flags(),
    }
    rows.append([
        "CPU (this machine)", "Trainer.fit, PromptTuningModule", "x".join(map(str, batches[0]["input_ids"].shape)),
        f"{statistics.median(fp32):.3g} steps/s", f"{statistics.median(bf16):.3g} steps/s",
        f"**{median:.2f}x** ({min(ratios):.2f}-{max(ratios):.2f})", "yes" if works else "NO",
    ])


def _cpu_flags() -> list[str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile"))


def gpu_run(args, work, tokenizer_dir, results, rows) -> None:
    """R52 prompt-tuning, BERT-base-sized random model, bf16 and fp32, examples/s (GPU only)."""
    import pytorch_lightning as pl
    import torch

    from lt_tuning import PromptTuningModule, R52DataModule

    model_dir = C.build_masked_lm(
        work / "model-base", tokenizer_dir, size=C.BASE_BERT, vocab_size=C.VOCAB_BERT_BASE_UNCASED
    )
    folder = C.scratch_task(args.data_dir / "r52", work / "data" / "r52")
    figures = {}
    for precision in ("bf16-mixed", "32-true"):
        dm = R52DataModule(data_dir=str(folder), model_name_or_path=model_dir, input_format="prompt", batch_size=32,
                           max_length=256, group_by_length=True, cache_dir=str(work / "cache"))
        module = PromptTuningModule(model_dir, num_classes=dm.num_classes, **C.RECIPE)
        stamps: list[tuple[float, int]] = []

        class Clock(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                torch.cuda.synchronize()
                stamps.append((time.perf_counter(), len(batch["input_ids"])))

            def on_train_end(self, trainer, pl_module):
                torch.cuda.synchronize()
                stamps.append((time.perf_counter(), 0))

        trainer = pl.Trainer(accelerator="gpu", devices=1, precision=precision, max_steps=args.gpu_steps,
                             gradient_clip_val=1.0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                             callbacks=[Clock()])
        trainer.fit(module, datamodule=dm)
        skip = min(10, len(stamps) // 4)
        examples = sum(n for _, n in stamps[skip:-1])
        figures[precision] = examples / (stamps[-1][0] - stamps[skip][0])
    results["gpu"] = {
        "available": True,
        "device": torch.cuda.get_device_name(0),
        "model": C.model_facts(model_dir),
        "examples_per_s": {k: round(v, 1) for k, v in figures.items()},
        "reference_examples_per_s": REFERENCE_EXAMPLES_PER_S,
        "setting": "R52 (dev+test as the training epoch), batch 32, max_length 256, dynamic padding, group_by_length",
    }
    rows.append([
        f"GPU ({torch.cuda.get_device_name(0)})", "R52 prompt-tuning, BERT-base size", "32 x <=256",
        f"{figures['32-true']:.0f} examples/s", f"{figures['bf16-mixed']:.0f} examples/s",
        f"reference: {REFERENCE_EXAMPLES_PER_S:.0f} examples/s (V100, fp32)", "yes",
    ])


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--gpu-steps", type=int, default=100)
    args = parser.parse_args()
    started, env = C.start(args)

    import torch

    rows, results = [], {}
    with C.workdir() as work:
        tokenizer_dir = C.build_tokenizer(work / "tokenizer", args.data_dir)
        model_dir = C.build_masked_lm(work / "model", tokenizer_dir)
        cpu_comparison(args, work, model_dir, results, rows)
        if torch.cuda.is_available():
            gpu_run(args, work, tokenizer_dir, results, rows)
        else:
            results["gpu"] = {
                "available": False,
                "note": "No GPU machine was available for this run, so the GPU figure (R52 prompt-tuning, "
                "BERT-base-sized model, bf16, examples/s next to the reference's ~30 examples/s on a V100 in fp32) "
                "was not measured. The same command runs it on a machine with CUDA.",
                "reference_examples_per_s": REFERENCE_EXAMPLES_PER_S,
            }
            rows.append(["GPU", "R52 prompt-tuning, BERT-base size", "-", "not measured", "not measured",
                         f"no GPU available (reference: {REFERENCE_EXAMPLES_PER_S:.0f} examples/s, V100, fp32)", "-"])
    table = C.markdown_table(["device", "what", "batch", "fp32", "bf16-mixed", "ratio bf16 / fp32", "bf16 works"], rows)
    markdown = (
        f"### 5. Mixed precision ({args.repeats} lockstep repeats x {args.steps} steps, median)\n\n{table}\n\n"
        f"CPU: benchmark model, {args.threads} torch thread(s); \"works\" = the linear layers ran in bfloat16, all "
        "losses finite, bf16 losses within 5% of fp32 (see JSON). No goal was set for the CPU ratio."
    )
    C.write_results(
        NAME, args, env, started, markdown,
        description="precision='bf16-mixed' vs '32-true' through Trainer.fit (CPU, lockstep steps/s ratio); "
        "GPU examples/s next to the reference's 30 examples/s where a GPU is available.",
        results=results,
    )


if __name__ == "__main__":
    main()
