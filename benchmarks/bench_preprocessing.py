"""Benchmark 2: preprocessing: our DataModule's tokenization vs the reference's per-example loop.

Ours: ``DataModule.encode`` of dev and test in prompt format: a fast tokenizer called in
batched ``datasets.map``, results written to (first run: a fresh, empty cache folder) or read
from (second run: a new DataModule on the same cache folder) the disk cache.
Reference: the study's code's way, written here as a baseline: one example at a time,
``tokenizer.tokenize`` with the Python (slow) BERT tokenizer the reference loads
(``BertTokenizer``, now ``BertTokenizerLegacy``), template tokens spliced in, truncation, then
``convert_tokens_to_ids`` and per-example attention mask / segment lists. Also shown: the same
per-example loop with the fast tokenizer, to separate "fast tokenizer" from "batched".
Both sides start from the same rows in memory and a loaded tokenizer; runs alternate order.

    python benchmarks/bench_preprocessing.py            # defaults: about 2 minutes here
"""

from __future__ import annotations

import collections
import statistics
import time
from pathlib import Path

import _common as C

NAME = "preprocessing"
GOAL = 20.0
SPLITS = ("dev", "test")

Instance = collections.namedtuple(
    "Instance", ["text_indices", "text_mask", "text_segments", "text_length", "mask_position", "label"]
)


def parse_template_tokens(template: str, tokenizer) -> tuple[list[str], list[int]]:
    """The reference's template parsing: literal text tokenized, placeholders kept as names."""
    tokens: list[str] = []
    slots: list[int] = []
    literal, inside = "", False
    for char in template:
        if char == "{":
            if literal:
                tokens.extend(tokenizer.tokenize(literal))
            literal, inside = "", True
        elif char == "}" and inside:
            special = {"cls": tokenizer.cls_token, "sep": tokenizer.sep_token, "mask": tokenizer.mask_token}
            if literal in special:
                tokens.append(special[literal])
            elif literal in ("text_a", "text_b"):
                slots.append(len(tokens))
                tokens.append(literal)
            else:  # pseudo token {pN}
                tokens.append(f"[{literal.upper()}]")
            literal, inside = "", False
        else:
            literal += char
    if literal:
        tokens.extend(tokenizer.tokenize(literal))
    return tokens, slots


def reference_build(texts: list[str], labels: list[int], template: str, tokenizer, max_length: int) -> list[Instance]:
    """Per-example prompt encoding as the reference code does it (one text field)."""
    template_tokens, slots = parse_template_tokens(template, tokenizer)
    (slot,) = slots
    budget = max_length - len(template_tokens) + 1  # the "text_a" placeholder is not a token
    instances = []
    for text, label in zip(texts, labels):
        text_tokens = tokenizer.tokenize(text)
        if len(text_tokens) > budget:
            text_tokens = text_tokens[:budget]
        tokens = template_tokens[:slot] + text_tokens + template_tokens[slot + 1 :]
        length = len(tokens)
        instances.append(Instance(
            text_indices=tokenizer.convert_tokens_to_ids(tokens),
            text_mask=[1] * length,
            text_segments=[0] * length,
            text_length=length,
            mask_position=[tokens.index(tokenizer.mask_token)],
            label=label,
        ))
    return instances


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--tasks", default="iflytek,r52")
    parser.add_argument("--limit", type=int, default=None, help="rows per split (quick checks); default all")
    args = parser.parse_args()
    started, env = C.start(args)

    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    from lt_tuning import IFLYTEKDataModule, R52DataModule

    classes = {"iflytek": IFLYTEKDataModule, "r52": R52DataModule}
    rows, results = [], {}
    with C.workdir() as work:
        tokenizer_dir = C.build_tokenizer(work / "tokenizer", args.data_dir)
        slow = BertTokenizerLegacy(str(Path(tokenizer_dir) / "vocab.txt"), do_lower_case=True)
        counter = iter(range(10**6))
        for task in args.tasks.split(","):
            def datamodule(cache: Path, task=task):
                dm = classes[task](data_dir=str(args.data_dir), model_name_or_path=tokenizer_dir, input_format="prompt",
                                   cache_dir=str(cache), limit_examples=args.limit)
                dm.tokenizer  # loaded before timing, as the baselines' tokenizers are
                for split in SPLITS:
                    dm._examples(split)  # rows read before timing: both sides start from them
                return dm

            probe = datamodule(work / "probe")
            fast = probe.tokenizer
            columns = {split: probe._examples(split) for split in SPLITS}
            n_examples = sum(len(columns[split]["label"]) for split in SPLITS)
            state: dict[str, object] = {}

            def ours_first():
                cache = work / f"cache-{task}-{next(counter)}"
                dm = datamodule(cache)
                start = time.perf_counter()
                encoded = {split: dm.encode(split, "prompt") for split in SPLITS}
                elapsed = time.perf_counter() - start
                state["cache"], state["encoded"] = cache, encoded
                return elapsed

            def ours_cached():
                dm = datamodule(state["cache"])
                start = time.perf_counter()
                for split in SPLITS:
                    dm.encode(split, "prompt")
                return time.perf_counter() - start

            def reference_loop(tokenizer=slow, key="reference"):
                start = time.perf_counter()
                built = {split: reference_build(columns[split]["text_a"], columns[split]["label"], probe.template,
                                                tokenizer, probe.max_length) for split in SPLITS}
                elapsed = time.perf_counter() - start
                state[key] = built
                return elapsed

            def fast_loop():
                return reference_loop(fast, "fast_loop")

            def bare_tokenizer():  # the tokenizer call alone: a floor for any pipeline using it
                start = time.perf_counter()
                for split in SPLITS:
                    fast(columns[split]["text_a"], add_special_tokens=False)
                return time.perf_counter() - start

            times = C.interleaved(
                {"ours_first": ours_first, "ours_cached": ours_cached, "reference": reference_loop,
                 "fast_loop": fast_loop, "bare_fast_tokenizer_call": bare_tokenizer},
                repeats=args.repeats, warmup=1,
            )
            # The same encodings come out (ids and [MASK] position), example by example.
            same, same_fast = 0, 0
            for split in SPLITS:
                ours_ids = state["encoded"][split]["input_ids"]
                ours_mask = state["encoded"][split]["mask_positions"]
                pairs = zip(ours_ids, ours_mask, state["reference"][split], state["fast_loop"][split])
                for ids, pos, ref, loop in pairs:
                    same += ids == ref.text_indices and pos == ref.mask_position[0]
                    same_fast += ids == loop.text_indices
            speedup = C.paired_ratios(times["reference"], times["ours_first"])
            speedup_cached = C.paired_ratios(times["reference"], times["ours_cached"])
            speedup_fast_loop = C.paired_ratios(times["fast_loop"], times["ours_first"])
            ceiling = C.paired_ratios(times["reference"], times["bare_fast_tokenizer_call"])
            median = statistics.median(speedup)
            results[task] = {
                "examples": n_examples,
                "splits": list(SPLITS),
                "max_length": probe.max_length,
                "template": probe.template,
                "seconds": {name: C.summary(values) for name, values in times.items()},
                "speedup_first_run_vs_reference": C.summary(speedup, 2),
                "speedup_cached_run_vs_reference": C.summary(speedup_cached, 2),
                "speedup_first_run_vs_fast_tokenizer_loop": C.summary(speedup_fast_loop, 2),
                "ceiling_reference_over_bare_fast_tokenizer_call": C.summary(ceiling, 2),
                "identical_to_reference_encoding": f"{same}/{n_examples}",
                "identical_to_fast_loop_ids": f"{same_fast}/{n_examples}",
                "goal": GOAL,
                "goal_met": median >= GOAL,
            }
            med = {name: statistics.median(values) for name, values in times.items()}
            rows.append([
                task.upper(), n_examples, med["reference"], med["fast_loop"], med["bare_fast_tokenizer_call"],
                med["ours_first"], med["ours_cached"], f"**{median:.1f}x**",
                f"{statistics.median(speedup_cached):.0f}x",
                f"{statistics.median(speedup_fast_loop):.1f}x", f"{statistics.median(ceiling):.1f}x",
                f">= {GOAL:.0f}x", "yes" if median >= GOAL else "no",
            ])
    table = C.markdown_table(
        ["dataset (dev+test)", "examples", "reference loop (s)", "per-example loop, fast tokenizer (s)",
         "bare batched fast-tokenizer call (s)", "ours, first run (s)", "ours, cached 2nd run (s)",
         "speedup first run", "speedup cached run", "speedup vs fast-tokenizer loop",
         "ceiling: reference / bare call", "goal", "met"], rows)
    markdown = (
        f"### 2. Preprocessing (prompt format, {args.repeats} interleaved repeats, median)\n\n{table}\n\n"
        "Speedup = reference-loop time / our time, median of per-repeat ratios. Reference loop: per-example "
        "`tokenize` with the Python BERT tokenizer, template splice, truncation, `convert_tokens_to_ids` (the study's "
        "code). Ours: `DataModule.encode` (fast tokenizer, batched `datasets.map`, written to an empty disk cache; "
        "the cached run reads it back). Both produce the same token ids (see JSON)."
    )
    C.write_results(
        NAME, args, env, started, markdown,
        description="DataModule tokenization (fast tokenizer, batched datasets.map, disk cache) vs a per-example "
        "Python loop as in the reference code; dev+test, prompt format.",
        tokenizer=f"BERT WordPiece, lowercase, {len(slow):,} tokens, trained here on CMID/IFLYTEK/R52 text",
        results=results,
    )


if __name__ == "__main__":
    main()
