"""Benchmark 1: training-step overhead of ``Trainer.fit`` through our modules vs a hand loop.

The same model (a copy of the same initial weights for each run), the same stored batches,
the same optimizer, schedule, loss and gradient clipping: once through ``Trainer.fit`` with
our ``PromptTuningModule`` / ``ClsTuningModule``, once in a hand-written PyTorch loop. The
two run in lockstep (two threads taking turns, one training step each; who moves first
alternates between repeats), so load from other jobs falls on both alike. Steps/s is the
steady rate from step ``--skip`` on (start-up is reported separately); the figure is the
median over repeats of the ratio Trainer steps/s / hand-loop steps/s.

    python benchmarks/bench_train_step.py            # defaults: about 3-4 minutes here
"""

from __future__ import annotations

import argparse
import copy
import statistics

import _common as C
import _lockstep as L

NAME = "train_step"
GOAL = 0.97


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=7)
    parser.add_argument("--task", default="cmid", help="dataset whose batches are used")
    parser.add_argument("--steps", type=int, default=14, help="training steps per run")
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of steps/s")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64, help="CMID's max_length in the study is 64")
    parser.add_argument("--modules", default="prompt,cls", help="comma list of prompt, cls")
    args = parser.parse_args()
    started, env = C.start(args)

    from lt_tuning import ClsTuningModule, PromptTuningModule
    from lt_tuning.data import tasks as task_modules

    datamodule_class = {spec_cls.spec.name: spec_cls for spec_cls in vars(task_modules).values()
                        if isinstance(spec_cls, type) and hasattr(spec_cls, "spec")}[args.task]
    rows, results = [], {}
    with C.workdir() as work:
        tokenizer = C.build_tokenizer(work / "tokenizer", args.data_dir)
        model_dir = C.build_masked_lm(work / "model", tokenizer)
        for kind in args.modules.split(","):
            fmt = "prompt" if kind == "prompt" else "cls"
            dm = datamodule_class(data_dir=str(args.data_dir), model_name_or_path=model_dir, max_length=args.max_length,
                                  input_format=fmt, cache_dir=str(work / "cache"))
            split = "train" if dm.split_path("train").exists() else "test"
            batches = C.encoded_batches(dm, split, fmt, args.batch_size, args.steps)
            if kind == "prompt":
                module = PromptTuningModule(model_dir, num_classes=dm.num_classes, verbalizer=dm.verbalizer,
                                            **C.RECIPE)
            else:
                module = ClsTuningModule(model_dir, num_classes=dm.num_classes, activation="tanh", **C.RECIPE)
            runs = L.lockstep_repeats(
                lambda module=module, batches=batches: {
                    "trainer": L.trainer_loop(module, batches), "hand": hand_loop(module, batches),
                },
                repeats=args.repeats, skip=args.skip,
            )
            trainer_rate, hand_rate = runs["steps_per_s"]["trainer"], runs["steps_per_s"]["hand"]
            ratios = C.paired_ratios(trainer_rate, hand_rate)
            step_ratios = [h / t for rep_t, rep_h in zip(runs["step_s"]["trainer"], runs["step_s"]["hand"])
                           for t, h in zip(rep_t, rep_h)]
            startup_extra = [t - h for t, h in zip(runs["startup_s"]["trainer"], runs["startup_s"]["hand"])]
            # The same computation: both copies end with the same weights (dropout seeded alike).
            last_t, last_h = runs["modules"]["trainer"], runs["modules"]["hand"]
            max_diff = max(
                float((a - b).detach().abs().max()) for a, b in zip(last_t.parameters(), last_h.parameters())
            )
            label = {"prompt": "PromptTuningModule", "cls": "ClsTuningModule (tanh)"}[kind]
            ratio = C.summary(ratios)["median"]
            results[kind] = {
                "module": label,
                "batch_shape": list(batches[0]["input_ids"].shape),
                "timed_steps_per_run": args.steps - 1 - args.skip,
                "trainer_steps_per_s": C.summary(trainer_rate),
                "hand_loop_steps_per_s": C.summary(hand_rate),
                "ratio_trainer_over_hand": C.summary(ratios),
                "ratio_per_step_pairs": {"median": round(statistics.median(step_ratios), 4), "pairs": len(step_ratios)},
                "trainer_extra_startup_s": C.summary(startup_extra, 3),
                "max_abs_weight_difference_after_training": max_diff,
                "goal": GOAL,
                "goal_met": ratio >= GOAL,
            }
            rows.append([
                label, "x".join(map(str, batches[0]["input_ids"].shape)),
                C.summary(trainer_rate)["median"], C.summary(hand_rate)["median"],
                f"**{ratio:.3f}** ({min(ratios):.3f}-{max(ratios):.3f})",
                f"{statistics.median(step_ratios):.3f}", f"{statistics.median(startup_extra):.2f}",
                f">= {GOAL}", "yes" if ratio >= GOAL else "no",
            ])
        facts = C.model_facts(model_dir)
    table = C.markdown_table(
        ["module", "batch", "Trainer.fit steps/s", "hand loop steps/s", "ratio (min-max over repeats)",
         "median per-step ratio", "one-off extra start-up of Trainer.fit (s)", "goal", "met"], rows)
    markdown = (
        f"### 1. Training step overhead ({args.task.upper()} batches, {args.repeats} interleaved repeats x "
        f"{args.steps} steps, median)\n\n{table}\n\nModel: BERT masked LM, random weights, hidden "
        f"{facts['hidden_size']}, {facts['num_layers']} layers, vocab {facts['vocab_size']:,}; AdamW + linear warmup, "
        f"clip 1.0, fp32, CPU, {args.threads} torch thread(s). The two loops run in lockstep (one step of one, "
        "then one step of the other, in two threads; which one moves first alternates between repeats). "
        f"Steps/s over steps {args.skip}..{args.steps - 2} of each run (the last step, which also closes the fit, "
        "is not timed); per-step ratio = hand-loop step time / Trainer step time, median over all step pairs."
    )
    C.write_results(
        NAME, args, env, started, markdown,
        description="Trainer.fit through lt-tuning modules vs a hand-written PyTorch loop; same model, batches, "
        "optimizer, schedule, clipping. Ratio = Trainer steps/s / hand-loop steps/s (median of per-repeat ratios).",
        trainer_settings="accelerator=cpu, precision=32-true, gradient_clip_val=1.0, logger=False, "
        "enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0",
        model=facts,
        results=results,
    )


def hand_loop(template_module, batches: list[dict], autocast_bf16: bool = False):
    """A lockstep loop doing the same steps by hand: the same model copy, batches, optimizer,
    schedule, loss and clipping as :func:`trainer_loop`, with nothing else around them; timed
    the same way (start-up, then step start to next step start, last step untimed)."""
    import torch

    from lt_tuning.models import classification_loss
    from lt_tuning.models.base import adamw_with_warmup

    module = copy.deepcopy(template_module)

    def loop(lock: L.Lockstep, name: str):
        lock.begin(name)
        hp = argparse.Namespace(**C.RECIPE)
        schedule = adamw_with_warmup(module, hp.learning_rate, hp.weight_decay, hp.warmup_proportion,
                                     total_steps=len(batches), eps=module.hparams.adam_epsilon)  # the module's own
        optimizer, scheduler = schedule["optimizer"], schedule["lr_scheduler"]["scheduler"]
        module.train()
        for batch in L.batch_loader(batches):
            lock.end(name)
            lock.begin(name)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
                logits = module(batch)
            loss = classification_loss(logits, batch["labels"], hp.loss, hp.focal_gamma)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
        return module

    return loop


if __name__ == "__main__":
    main()
