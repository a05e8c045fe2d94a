"""Benchmark 6: masked-LM pretraining tokens/s, lt-tuning's module vs the standard transformers recipe.

lt-tuning: ``Trainer.fit`` of ``MaskedLMPretrainingModule`` (the vocabulary projection runs
only at the ~15% masked positions). Standard recipe: transformers' ``Trainer`` training
``BertForMaskedLM`` (projection at every position, then the loss ignores the unmasked ones),
as ``run_mlm.py`` does it. The same BERT (same initial weights), the same packed blocks of the
same corpus (the train splits of CMID, CTC and R52), masked by the same
``DataCollatorForLanguageModeling`` once up front so that both train on the very same batches,
the same AdamW, linear warmup/decay, gradient clipping and precision. The two loops run in
lockstep (one step each in turn, in two threads; who moves first alternates between repeats),
so load from other jobs falls on both alike; the figure is the median over repeats of the
ratio of steady tokens/s.

    python benchmarks/bench_pretraining.py          # defaults: about 10 minutes here
"""

from __future__ import annotations

import copy

import _common as C
import _lockstep as L

NAME = "pretraining"
GOAL = 1.5


def hf_trainer_loop(model, batches: list[dict], learning_rate: float, bf16: bool, work):
    """A lockstep loop: transformers' ``Trainer.train`` of a copy of ``model`` over ``batches``,
    timed like :func:`_common.trainer_loop` (start-up, then step start to next step start)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = copy.deepcopy(model)

    def loop(lock: L.Lockstep, name: str):
        class Turns(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                lock.end(name)
                lock.begin(name)

        lock.begin(name)
        args = TrainingArguments(
            output_dir=str(work / "hf_trainer"), use_cpu=True, bf16=bf16, max_steps=len(batches),
            per_device_train_batch_size=1,  # one item = one stored batch (collated up front)
            learning_rate=learning_rate, weight_decay=0.01, warmup_steps=int(0.06 * len(batches)),
            lr_scheduler_type="linear", max_grad_norm=1.0, logging_strategy="no", save_strategy="no",
            report_to="none", disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False,
            train_sampling_strategy="sequential",  # the stored batches in order, as the lt-tuning loop takes them
        )
        trainer = Trainer(model=model, args=args, train_dataset=batches, data_collator=lambda items: items[0],
                          callbacks=[Turns()])
        with torch.random.fork_rng():  # the Trainer seeds torch; leave the lockstep's seeding alone
            trainer.train()
        return model

    return loop


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--tasks", default="cmid,ctc,r52", help="datasets whose train split is the corpus")
    parser.add_argument("--steps", type=int, default=12, help="training steps per run")
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of tokens/s")
    parser.add_argument("--batch-size", type=int, default=32, help="the default backbone's pretraining batch")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=10000)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--precision", choices=["bf16-mixed", "32-true"], default="bf16-mixed")
    args = parser.parse_args()
    started, env = C.start(args)

    import torch

    from lt_tuning import MaskedLMCorpusDataModule, MaskedLMPretrainingModule

    with C.workdir() as work:
        corpus = MaskedLMCorpusDataModule(
            tasks=args.tasks.split(","), data_root=str(args.data_dir), vocab_size=args.vocab_size,
            max_length=args.max_length, batch_size=args.batch_size, cache_dir=str(work / "corpus"),
        )
        blocks = corpus.encode("train")
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(len(blocks), generator=generator)[: args.steps * args.batch_size].tolist()
        collate = corpus.collator(seed=0)
        batches = [collate([blocks[i] for i in order[start : start + args.batch_size]])
                   for start in range(0, len(order), args.batch_size)]
        tokens_per_batch = [int(batch["attention_mask"].sum()) for batch in batches]
        torch.manual_seed(0)
        heads = max(1, args.hidden_size // 64)
        module = MaskedLMPretrainingModule(
            corpus.vocab_size, corpus.pad_token_id, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
            num_attention_heads=heads, intermediate_size=4 * args.hidden_size, dropout=0.0, learning_rate=1e-3,
            warmup_proportion=0.06,
        )
        runs = L.lockstep_repeats(
            lambda: {
                "lt_tuning": L.trainer_loop(module, batches, precision=args.precision),
                "transformers": hf_trainer_loop(module.model, batches, 1e-3, args.precision == "bf16-mixed", work),
            },
            repeats=args.repeats, skip=args.skip,
        )
    timed = tokens_per_batch[1 + args.skip : -1]  # the steps whose times enter steps/s
    tokens_per_step = sum(timed) / len(timed)
    ours = [rate * tokens_per_step for rate in runs["steps_per_s"]["lt_tuning"]]
    theirs = [rate * tokens_per_step for rate in runs["steps_per_s"]["transformers"]]
    ratios = C.paired_ratios(ours, theirs)
    ratio = C.summary(ratios)["median"]
    last = runs["modules"]
    max_diff = max(float((a - b).detach().abs().max())
                   for a, b in zip(last["lt_tuning"].model.parameters(), last["transformers"].parameters()))
    shape = f"{args.batch_size}x{args.max_length}"
    table = C.markdown_table(
        ["model", "batch", "lt-tuning tokens/s", "transformers Trainer tokens/s", "ratio (min-max over repeats)",
         "goal", "met"],
        [[f"BERT {args.hidden_size}x{args.layers}, vocab {corpus.vocab_size:,}", shape,
          C.summary(ours, 1)["median"], C.summary(theirs, 1)["median"],
          f"**{ratio:.3f}** ({min(ratios):.3f}-{max(ratios):.3f})", f">= {GOAL}", "yes" if ratio >= GOAL else "no"]],
    )
    markdown = (
        f"### 6. Masked-LM pretraining speed ({args.tasks.upper()} train text, {args.repeats} interleaved repeats x "
        f"{args.steps} steps, median)\n\n{table}\n\nThe same BERT, the same packed {shape} blocks masked once by "
        "`DataCollatorForLanguageModeling` (15%, 80/10/10), AdamW lr 1e-3 with linear warmup and decay, clipping "
        f"at 1.0, {args.precision}, CPU, {args.threads} torch thread(s), in lockstep. lt-tuning's "
        "`MaskedLMPretrainingModule` projects to the vocabulary only at the masked positions; transformers' "
        "`Trainer` with `BertForMaskedLM` projects at all of them. Tokens/s over steps "
        f"{args.skip}..{args.steps - 2} of each run."
    )
    C.write_results(
        NAME, args, env, started, markdown,
        description="Masked-LM pretraining tokens/s: Trainer.fit of lt-tuning's MaskedLMPretrainingModule vs "
        "transformers' Trainer + BertForMaskedLM; same model, corpus, batches, optimizer, schedule, precision. "
        "Ratio = lt-tuning tokens/s / transformers tokens/s (median of per-repeat ratios).",
        tokens_per_step=tokens_per_step,
        results={
            "lt_tuning_tokens_per_s": C.summary(ours, 1),
            "transformers_tokens_per_s": C.summary(theirs, 1),
            "ratio_lt_tuning_over_transformers": C.summary(ratios),
            "startup_s": {name: C.summary(values, 2) for name, values in runs["startup_s"].items()},
            "max_abs_weight_difference_after_training": max_diff,
            "goal": GOAL,
            "goal_met": ratio >= GOAL,
        },
    )


if __name__ == "__main__":
    main()
