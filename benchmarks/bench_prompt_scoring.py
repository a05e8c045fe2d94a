"""Benchmark 4: prompt scoring: vocabulary projection at the [MASK] position only vs everywhere.

``PromptTuningModule`` runs the MLM head (transform + projection onto the vocabulary) on the
[MASK] hidden state only. The usual masked-LM way, ``AutoModelForMaskedLM(...).logits``, runs
it at every position and then picks the [MASK] row. Both score the same verbalizer logits
(checked); the figure is the forward+backward time ratio (all positions / [MASK] only) on the
same R52 prompt batches, the two alternating batch by batch (order flipped every round),
median of the per-round ratios. Three model shapes: the benchmark model with the trained
vocabulary, the same with bert-base-uncased's 30,522-row vocabulary, and BERT-base's shape.

    python benchmarks/bench_prompt_scoring.py            # defaults: about 2-3 minutes here
"""

from __future__ import annotations

import statistics
import time

import _common as C

NAME = "prompt_scoring"


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16, help="batch of the small models")
    parser.add_argument("--base-batch-size", type=int, default=4, help="batch of the BERT-base-shaped model")
    parser.add_argument("--configs", default="small,small_v30k,base")
    args = parser.parse_args()
    started, env = C.start(args)

    import torch
    import torch.nn.functional as F

    from lt_tuning import PromptTuningModule, R52DataModule

    configs = {
        "small": (C.SMALL_BERT, None, args.batch_size),
        "small_v30k": (C.SMALL_BERT, C.VOCAB_BERT_BASE_UNCASED, args.batch_size),
        "base": (C.BASE_BERT, C.VOCAB_BERT_BASE_UNCASED, args.base_batch_size),
    }
    rows, results = [], {}
    with C.workdir() as work:
        tokenizer_dir = C.build_tokenizer(work / "tokenizer", args.data_dir)
        for name in args.configs.split(","):
            size, vocab, batch_size = configs[name]
            model_dir = C.build_masked_lm(work / f"model-{name}", tokenizer_dir, size=size, vocab_size=vocab)
            dm = R52DataModule(data_dir=str(args.data_dir), model_name_or_path=model_dir, max_length=args.max_length,
                               input_format="prompt", cache_dir=str(work / "cache"))
            batches = C.encoded_batches(dm, "test", "prompt", batch_size, 4)
            module = PromptTuningModule(model_dir, num_classes=dm.num_classes, verbalizer=dm.verbalizer, **C.RECIPE)
            verbalizer_ids, verbalizer_mask = module.verbalizer.token_ids, module.verbalizer.mask.float()

            def mask_only(batch):
                return module(batch)

            def all_positions(batch):
                inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
                vocab_logits = module.mlm(**inputs).logits  # [B, T, V]: the head at every position
                at_mask = vocab_logits[torch.arange(len(vocab_logits)), batch["mask_positions"]]  # [B, V]
                token_logits = at_mask[:, verbalizer_ids]
                return (token_logits * verbalizer_mask).sum(-1) / verbalizer_mask.sum(-1)

            module.eval()
            with torch.no_grad():
                difference = float((mask_only(batches[0]) - all_positions(batches[0])).abs().max())
            module.train()
            variants = {"mask_only": mask_only, "all_positions": all_positions}
            times: dict[str, list[float]] = {key: [] for key in variants}
            for round_index in range(1 + args.repeats):  # round 0: warm-up
                batch = batches[round_index % len(batches)]
                order = list(variants) if round_index % 2 == 0 else list(variants)[::-1]
                for key in order:
                    torch.manual_seed(round_index)
                    start = time.perf_counter()
                    loss = F.cross_entropy(variants[key](batch), batch["labels"])
                    loss.backward()
                    elapsed = time.perf_counter() - start
                    module.zero_grad(set_to_none=True)
                    if round_index:
                        times[key].append(elapsed)
            ratios = C.paired_ratios(times["all_positions"], times["mask_only"])
            facts = C.model_facts(model_dir)
            shape = list(batches[0]["input_ids"].shape)
            median = statistics.median(ratios)
            label = {"small": "benchmark model", "small_v30k": "benchmark model, 30,522-row vocab",
                     "base": "BERT-base shape, 30,522-row vocab"}[name]
            results[name] = {
                "model": facts,
                "batch_shape": shape,
                "seconds_forward_backward": {key: C.summary(values) for key, values in times.items()},
                "ratio_all_positions_over_mask_only": C.summary(ratios, 3),
                "max_abs_logit_difference": difference,
            }
            rows.append([
                label, f"{facts['hidden_size']}/{facts['num_layers']}/{facts['vocab_size']:,}",
                "x".join(map(str, shape)),
                statistics.median(times["mask_only"]), statistics.median(times["all_positions"]),
                f"**{median:.2f}x**", f"{min(ratios):.2f}-{max(ratios):.2f}", f"{difference:.1e}",
            ])
            del module
    table = C.markdown_table(
        ["model", "hidden/layers/vocab", "batch", "[MASK] only: fwd+bwd (s)", "all positions: fwd+bwd (s)",
         "ratio (all / [MASK] only)", "min-max", "max logit difference"], rows)
    markdown = (
        f"### 4. Prompt scoring ({args.repeats} rounds, forward+backward, the two alternating batch by batch, median)"
        f"\n\n{table}\n\nSame R52 prompt batches (max_length {args.max_length}), same weights, fp32, CPU, "
        f"{args.threads} torch thread(s). No goal was set for this figure: it shows what computing the MLM head at "
        "[MASK] only saves (the reference code also gathers the [MASK] state before its MLM head; the usual "
        "`AutoModelForMaskedLM` call does not)."
    )
    C.write_results(
        NAME, args, env, started, markdown,
        description="Forward+backward time: MLM head at the [MASK] position only (PromptTuningModule) vs at every "
        "position (AutoModelForMaskedLM logits, then the [MASK] row). Ratio = all / mask-only.",
        results=results,
    )


if __name__ == "__main__":
    main()
