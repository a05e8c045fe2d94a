"""Benchmark 3: padding: tokens run through the encoder per epoch, ours vs padding to max_length.

Counts, no timing: every position of every batch goes through the encoder, so the work of an
epoch is the sum over batches of batch size x padded length. Three ways, the same examples,
batch size 32 and each dataset's max_length from the study (R52 256, IFLYTEK 512):

* reference: every batch padded to max_length (the study's code): examples x max_length;
* dynamic: our DataModule's loader, shuffled, each batch padded to its own longest row;
* grouped: the same with ``group_by_length=True`` (:class:`LengthGroupedBatchSampler`:
  random chunks of 50 batches sorted by length, batch order shuffled; random every epoch).

The released R52/IFLYTEK train splits are not in this copy of the data, so an epoch here is
dev+test (written as the train split of a scratch task folder). Averages over ``--epochs``.

    python benchmarks/bench_padding.py            # defaults: under a minute here
"""

from __future__ import annotations

import statistics

import _common as C

NAME = "padding"
GOAL = 2.0


def count_epochs(dm, epochs: int) -> dict:
    """Padded and real tokens per epoch of ``dm``'s training loader (a new order each epoch)."""
    loader = dm.train_dataloader()
    padded, real, rows, orders = [], [], [], []
    for _ in range(epochs):
        p = r = n = 0
        order = []
        for batch in loader:
            p += batch["input_ids"].numel()
            r += int(batch["attention_mask"].sum())
            n += len(batch["input_ids"])
            order.append(frozenset(batch["index"].tolist()))
        padded.append(p)
        real.append(r)
        rows.append(n)
        orders.append(order)
    same = len(set(orders[0]) & set(orders[1])) / len(orders[0]) if epochs > 1 else None
    return {"padded": padded, "real": real, "rows": rows, "batches_shared_by_epochs_0_and_1": same}


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--tasks", default="r52,iflytek")
    parser.add_argument("--formats", default="prompt,cls")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="rows per split (quick checks); default all")
    args = parser.parse_args()
    started, env = C.start(args)

    import torch

    from lt_tuning import IFLYTEKDataModule, R52DataModule

    classes = {"iflytek": IFLYTEKDataModule, "r52": R52DataModule}
    rows, results = [], {}
    with C.workdir() as work:
        tokenizer_dir = C.build_tokenizer(work / "tokenizer", args.data_dir)
        for task in args.tasks.split(","):
            folder = C.scratch_task(args.data_dir / task, work / "data" / task)
            for fmt in args.formats.split(","):
                counts = {}
                for grouped in (False, True):
                    torch.manual_seed(0)
                    dm = classes[task](data_dir=str(folder), model_name_or_path=tokenizer_dir, input_format=fmt,
                                       batch_size=args.batch_size, group_by_length=grouped,
                                       cache_dir=str(work / "cache"), limit_examples=args.limit)
                    dm.setup("fit")
                    counts[grouped] = count_epochs(dm, args.epochs)
                n = counts[False]["rows"][0]
                assert all(r == n for c in counts.values() for r in c["rows"]), "every example once per epoch"
                reference = n * dm.max_length
                dynamic = statistics.mean(counts[False]["padded"])
                grouped_tokens = statistics.mean(counts[True]["padded"])
                real = counts[False]["real"][0]
                ratio, ratio_dynamic = reference / grouped_tokens, reference / dynamic
                results[f"{task}/{fmt}"] = {
                    "examples_per_epoch": n,
                    "max_length": dm.max_length,
                    "batch_size": args.batch_size,
                    "real_tokens_per_epoch": real,
                    "reference_tokens_per_epoch": reference,
                    "dynamic_tokens_per_epoch": {"mean": dynamic, "per_epoch": counts[False]["padded"]},
                    "grouped_tokens_per_epoch": {"mean": grouped_tokens, "per_epoch": counts[True]["padded"]},
                    "reduction_grouped_vs_reference": round(ratio, 3),
                    "reduction_dynamic_vs_reference": round(ratio_dynamic, 3),
                    "reduction_grouped_vs_dynamic": round(dynamic / grouped_tokens, 3),
                    "ceiling_reference_over_real_tokens": round(reference / real, 3),
                    "padding_share": {"reference": round(1 - real / reference, 3),
                                      "dynamic": round(1 - real / dynamic, 3),
                                      "grouped": round(1 - real / grouped_tokens, 3)},
                    "grouped_batches_shared_by_epochs_0_and_1": counts[True]["batches_shared_by_epochs_0_and_1"],
                    "goal": GOAL,
                    "goal_met": ratio >= GOAL,
                }
                rows.append([
                    f"{task.upper()} ({fmt})", n, dm.max_length, real, reference, round(dynamic), round(grouped_tokens),
                    f"{ratio_dynamic:.2f}x", f"**{ratio:.2f}x**", f"{reference / real:.2f}x",
                    f"{1 - real / grouped_tokens:.1%}",
                    f">= {GOAL:.0f}x", "yes" if ratio >= GOAL else "no",
                ])
    table = C.markdown_table(
        ["dataset (epoch = dev+test)", "examples", "max_length", "real tokens", "reference: padded to max_length",
         "ours: dynamic padding", "ours: dynamic + group_by_length", "fewer (dynamic)", "fewer (grouped)",
         "ceiling: no padding at all", "padding left (grouped)", "goal", "met"], rows)
    markdown = (
        f"### 3. Padding (tokens through the encoder per epoch, batch {args.batch_size}, "
        f"mean of {args.epochs} epochs)\n\n"
        f"{table}\n\n\"fewer\" = reference tokens / our tokens; the ceiling is reference tokens / real (unpadded) "
        "tokens, what no batching can beat. Shuffled every epoch in both of our modes; with "
        "`group_by_length` only the lengths inside a batch are brought together (see JSON for the share of "
        "batches two epochs have in common)."
    )
    C.write_results(
        NAME, args, env, started, markdown,
        description="Tokens run through the encoder per epoch: padding every batch to max_length (reference) vs "
        "dynamic padding, with and without length-grouped batches. Counts, no timing.",
        tokenizer="BERT WordPiece, lowercase, trained here on CMID/IFLYTEK/R52 text (lengths close to "
        "bert-base-chinese / bert-base-uncased: one token per CJK character, English words and subwords)",
        results=results,
    )


if __name__ == "__main__":
    main()
