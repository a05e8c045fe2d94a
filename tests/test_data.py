"""DataModules: real datasets, exact encodings, truncation, padding, caching, lookup order."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import datasets
import pytest
import pytorch_lightning as pl
import torch
from transformers import AutoTokenizer

from conftest import SHARED_DATA, TASKS, require_split, write_bert_tokenizer
from lt_tuning import (
    CMIDDataModule,
    CTCDataModule,
    IFLYTEKDataModule,
    MSRADataModule,
    R52DataModule,
    TextClassificationDataModule,
    Verbalizer,
)
from lt_tuning.data import RELEASE_URL, Template, resolve_task_dir
from lt_tuning.metrics import head_tail_split

MODULES = {
    "cmid": CMIDDataModule,
    "iflytek": IFLYTEKDataModule,
    "ctc": CTCDataModule,
    "msra": MSRADataModule,
    "r52": R52DataModule,
}
# Row counts from shared/data/README.md.
ROWS = {
    ("cmid", "train"): 8578, ("cmid", "dev"): 1226, ("cmid", "test"): 2450,
    ("ctc", "train"): 20666, ("ctc", "dev"): 2296, ("ctc", "test"): 7682,
    ("iflytek", "dev"): 1213, ("iflytek", "test"): 2599,
    ("msra", "dev"): 11811, ("msra", "test"): 8419,
    ("r52", "train"): 5943, ("r52", "dev"): 617, ("r52", "test"): 2570,
}
CLASSES = {"cmid": 36, "ctc": 44, "iflytek": 119, "msra": 26, "r52": 52}


def file_class_counts(path: Path, label2idx: dict[str, int]) -> list[int]:
    """Independent count: the last tab-separated field of every line after the header."""
    lines = path.read_text("utf-8").split("\n")[1:]  # not splitlines(): texts hold U+2028 and friends
    counts = collections.Counter(line.rstrip("\r").rsplit("\t", 1)[1] for line in lines if line)
    return [counts.get(label, 0) for label in sorted(label2idx, key=label2idx.get)]


@pytest.mark.parametrize("split", ["train", "dev", "test"])
@pytest.mark.parametrize("task", TASKS)
def test_released_datasets_load_with_their_counts(task, split, zh_tokenizer_dir):
    path = require_split(task, split)
    dm = MODULES[task](data_dir=str(SHARED_DATA), model_name_or_path=zh_tokenizer_dir)
    label2idx = json.loads((SHARED_DATA / task / "label2idx.json").read_text("utf-8"))
    assert dm.num_classes == CLASSES[task] == len(label2idx)
    assert dm.label_names == sorted(label2idx, key=label2idx.get)
    counts = dm.class_counts(split)
    assert sum(counts) == ROWS.get((task, split), sum(counts))
    assert counts == file_class_counts(path, label2idx)


def test_r52_train_split(zh_tokenizer_dir):
    require_split("r52", "train")
    dm = R52DataModule(data_dir=str(SHARED_DATA), model_name_or_path=zh_tokenizer_dir)
    counts = dict(zip(dm.label_names, dm.class_counts("train")))
    assert len(counts) == 52 and min(counts.values()) >= 1 and sum(counts.values()) == 5943
    # From shared/data/README.md: earn 2581, acq 1451, crude 228, ..., jet 2, potato 2, platinum 1.
    assert [counts[label] for label in ("earn", "acq", "crude", "jet", "potato", "platinum")] == [2581, 1451, 228, 2, 2, 1]
    # Ratio 0.55: earn's share 2581/5943 = 0.434 is head; with acq the running share is 0.678, tail.
    head, tail = dm.head_tail_classes("train")
    assert [dm.label_names[c] for c in head] == ["earn"] and len(tail) == 51


@pytest.mark.parametrize("task", TASKS)
def test_dev_split_encodes_in_both_formats(task, zh_tokenizer_dir, tmp_path):
    dm = MODULES[task](data_dir=str(SHARED_DATA), model_name_or_path=zh_tokenizer_dir, cache_dir=str(tmp_path))
    prompt = dm.encode("dev", "prompt")
    cls = dm.encode("dev", "cls")
    assert len(prompt) == len(cls) == ROWS[(task, "dev")]
    mask_id = dm.tokenizer.mask_token_id
    for row in prompt.select(range(0, len(prompt), 50)):
        assert len(row["input_ids"]) <= dm.max_length
        assert row["input_ids"].count(mask_id) == 1 and row["input_ids"][row["mask_positions"]] == mask_id
    assert max(len(ids) for ids in cls["input_ids"]) <= dm.max_length
    assert dm.verbalizer.num_classes == dm.num_classes  # every verbalizer word is in the vocabulary


def test_head_tail_split_from_training_frequencies(zh_tokenizer_dir):
    require_split("cmid", "train")
    dm = CMIDDataModule(data_dir=str(SHARED_DATA), model_name_or_path=zh_tokenizer_dir)
    counts = dm.class_counts("train")
    # The rule by hand: descending frequency, head while the running share stays below 0.65.
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    running, expected_head = 0.0, []
    for c in order:
        running += counts[c] / sum(counts)
        if running < 0.65:
            expected_head.append(c)
    head, tail = dm.head_tail_classes("train")
    assert head == expected_head and 0 < len(head) < len(counts)
    assert sorted(head + tail) == list(range(36))
    assert dm.metric_class_counts is None  # default: the study's rule, each evaluated split's own counts
    assert dm.head_tail_classes("dev") == head_tail_split(dm.class_counts("dev"), 0.65, ignore_absent=True)
    dm_train = CMIDDataModule(data_dir=str(SHARED_DATA), model_name_or_path=zh_tokenizer_dir, head_tail_from="train")
    assert dm_train.metric_class_counts == counts


# --- exact encodings with a hand-written vocabulary ---------------------------------------

VOCAB = ["头", "痛", "怎", "么", "办", "这", "个", "问", "题", "的", "意", "图", "是", "？", "。", "疗", "治",
         "定", "义", "it", "was", "good", "bad", "very", "."]


@pytest.fixture
def tiny_dir(tmp_path) -> str:
    return write_bert_tokenizer(tmp_path / "tok", VOCAB)


def ids_of(tokens: str) -> list[int]:
    return [5 + VOCAB.index(token) for token in tokens.split()]


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> str:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return str(path)


def tiny_module(tmp_path, tiny_dir, rows, header=("text", "label"), **kwargs) -> TextClassificationDataModule:
    path = write_tsv(tmp_path / "train.tsv", list(header), rows)
    options = dict(
        model_name_or_path=tiny_dir, labels=["治疗", "定义"], verbalizer={"治疗": "治疗", "定义": "定义"},
        train_file=path, dev_file=path, test_file=path, template="{cls}{text_a}？这个问题的意图是{mask}。{sep}",
        cache_dir=str(tmp_path / "cache"),
    )
    options.update(kwargs)
    return TextClassificationDataModule(**options)


def test_cls_encoding_exact_ids(tmp_path, tiny_dir):
    dm = tiny_module(tmp_path, tiny_dir, [["头痛怎么办", "治疗"]])
    row = dm.encode("train", "cls")[0]
    assert row["input_ids"] == [2] + ids_of("头 痛 怎 么 办") + [3]
    assert row["label"] == 0


def test_cls_encoding_pair_exact_ids(tmp_path, tiny_dir):
    dm = tiny_module(
        tmp_path, tiny_dir, [["头痛", "怎么办", "定义"]], header=("text", "entity", "label"),
        text_fields=["text", "entity"], template="{cls}{text_a}。{text_b}是{mask}。{sep}",
    )
    row = dm.encode("train", "cls")[0]
    assert row["input_ids"] == [2, *ids_of("头 痛"), 3, *ids_of("怎 么 办"), 3]
    assert row["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1, 1]
    prompt = dm.encode("train", "prompt")[0]
    assert prompt["input_ids"] == [2, *ids_of("头 痛 。 怎 么 办 是"), 4, *ids_of("。"), 3]
    assert prompt["mask_positions"] == 8


def test_prompt_encoding_exact_ids(tmp_path, tiny_dir):
    dm = tiny_module(tmp_path, tiny_dir, [["头痛怎么办", "定义"]])
    row = dm.encode("train", "prompt")[0]
    expected = [2, *ids_of("头 痛 怎 么 办 ？ 这 个 问 题 的 意 图 是"), 4, *ids_of("。"), 3]
    assert row["input_ids"] == expected
    assert row["mask_positions"] == 15 and row["label"] == 1


def test_pseudo_tokens_become_tokens(tmp_path, tiny_dir):
    dm = tiny_module(tmp_path, tiny_dir, [["头痛", "治疗"]], template="{cls}{p0}{text_a}{p1}{mask}{sep}")
    p0, p1 = dm.tokenizer.convert_tokens_to_ids(["[P0]", "[P1]"])
    assert {p0, p1} == {len(VOCAB) + 5, len(VOCAB) + 6}
    assert dm.encode("train", "prompt")[0]["input_ids"] == [2, p0, *ids_of("头 痛"), p1, 4, 3]


def test_english_template_and_space_before_mask(tmp_path):
    tok = write_bert_tokenizer(tmp_path / "en", VOCAB)
    dm = tiny_module(
        tmp_path, tok, [["very good", "治疗"]], template="{cls}{text_a} it was {mask} .{sep}",
        verbalizer={"治疗": "good", "定义": "very bad"},
    )
    assert dm.encode("train", "prompt")[0]["input_ids"] == [2, *ids_of("very good it was"), 4, *ids_of("."), 3]
    ids, mask = dm.verbalizer.token_ids, dm.verbalizer.mask
    assert ids.tolist() == [[ids_of("good")[0], 0], ids_of("very bad")]
    assert mask.tolist() == [[True, False], [True, True]]


def test_truncation_keeps_template_and_mask(tmp_path, tiny_dir):
    long_text = "头痛怎么办" * 400
    dm = tiny_module(tmp_path, tiny_dir, [[long_text, "治疗"]], max_length=32)
    row = dm.encode("train", "prompt")[0]
    assert len(row["input_ids"]) == 32
    assert row["input_ids"][row["mask_positions"]] == 4 and row["mask_positions"] == 29
    assert row["input_ids"][-3:] == [4, *ids_of("。"), 3]
    assert row["input_ids"][1:15] == ids_of("头 痛 怎 么 办 头 痛 怎 么 办 头 痛 怎 么")  # text kept from its start
    cls = dm.encode("train", "cls")[0]
    assert len(cls["input_ids"]) == 32 and cls["input_ids"][-1] == 3


def test_pair_truncation_is_longest_first(tmp_path, tiny_dir):
    template = "{cls}{text_a}。{text_b}是{mask}。{sep}"  # 6 template tokens
    tpl = Template.parse(template, AutoTokenizer.from_pretrained(tiny_dir), 2)
    assert tpl.num_template_tokens == 6
    ids = tpl.encode(list(range(100, 120)), [200, 201, 202], max_length=16)  # 10 text tokens left
    assert ids == [2, *range(100, 107), ids_of("。")[0], 200, 201, 202, ids_of("是")[0], 4, ids_of("。")[0], 3]
    # A tie (both 5 tokens, 7 left): text_a keeps 4, text_b 3, as in the study's builder.
    ids = tpl.encode(list(range(100, 105)), list(range(200, 205)), max_length=13)
    assert ids == [2, 100, 101, 102, 103, ids_of("。")[0], 200, 201, 202, ids_of("是")[0], 4, ids_of("。")[0], 3]


def test_cls_pair_truncation_tie_gives_text_a_the_extra_token(tmp_path, tiny_dir):
    dm = tiny_module(tmp_path, tiny_dir, [["头痛怎么办", "这个问题的", "定义"]], header=("text", "entity", "label"),
                     text_fields=["text", "entity"], template="{cls}{text_a}。{text_b}是{mask}。{sep}", max_length=10)
    row = dm.encode("train", "cls")[0]  # 5 + 5 text tokens, 10 - 3 special tokens = 7 left: a 4, b 3
    assert row["input_ids"] == [2, *ids_of("头 痛 怎 么"), 3, *ids_of("这 个 问"), 3]
    assert row["token_type_ids"] == [0] * 6 + [1] * 4


def test_dynamic_padding_pads_to_longest_in_batch(tmp_path, tiny_dir):
    dm = tiny_module(tmp_path, tiny_dir, [["头", "治疗"], ["头痛怎么办", "定义"]], input_format="prompt",
                     max_length=64, batch_size=2)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["input_ids"].shape == (2, 18)
    assert batch["attention_mask"].sum(dim=1).tolist() == [14, 18]
    assert batch["input_ids"][0, 14:].tolist() == [0, 0, 0, 0]
    assert batch["mask_positions"].tolist() == [11, 15]
    assert batch["labels"].tolist() == [0, 1]
    assert batch["index"].tolist() == [0, 1]


CACHE_ROWS = [["头痛", "怎么办", "治疗", "定义"], ["问题的意图", "是", "定义", "治疗"]]
CACHE_CHANGES = {  # one input of the encoding changed alone -> (rows, format, DataModule arguments)
    "file contents": ([["头痛头痛", *CACHE_ROWS[0][1:]], CACHE_ROWS[1]], "prompt", {}),
    "text column": (CACHE_ROWS, "prompt", {"text_fields": ["text2"]}),
    "label order": (CACHE_ROWS, "prompt", {"labels": ["定义", "治疗"]}),
    "label field": (CACHE_ROWS, "prompt", {"label_field": "y2"}),
    "template": (CACHE_ROWS, "prompt", {"template": "{cls}{text_a}是{mask}。{sep}"}),
    "max_length": (CACHE_ROWS, "prompt", {"max_length": 14}),
    "pseudo tokens": (CACHE_ROWS, "prompt", {"template": "{cls}{p0}{text_a}？这个问题的意图是{mask}。{sep}"}),
    "tokenizer": (CACHE_ROWS, "prompt", {"model_name_or_path": "reversed"}),
    "input format": (CACHE_ROWS, "cls", {}),
    "row limit": (CACHE_ROWS, "prompt", {"limit_examples": 1}),
}


@pytest.mark.parametrize("change", CACHE_CHANGES)
def test_tokenization_cache_follows_every_input_of_the_encoding(change, tmp_path, tiny_dir):
    """A split encoded once, then one input changed alone (the file edited in place, another
    setting): the encoded rows read through the cache equal an encoding with no cache."""
    header = ("text", "text2", "label", "y2")
    rows, input_format, changed = CACHE_CHANGES[change]
    if changed.get("model_name_or_path") == "reversed":
        changed = {"model_name_or_path": write_bert_tokenizer(tmp_path / "reversed", VOCAB[::-1])}
    base = tiny_module(tmp_path, tiny_dir, CACHE_ROWS, header).encode("train", "prompt").to_dict()
    cached = tiny_module(tmp_path, tiny_dir, rows, header, **changed).encode("train", input_format)
    fresh = tiny_module(tmp_path, tiny_dir, rows, header, cache_dir=str(tmp_path / "fresh"), **changed)
    expected = fresh.encode("train", input_format).to_dict()
    assert expected != base  # the change does change the encoded rows
    assert cached.to_dict() == expected
    again = tiny_module(tmp_path, tiny_dir, rows, header, **changed).encode("train", input_format)
    assert again.cache_files == cached.cache_files  # the same settings and rows hit the cache


def test_verbalizer_rows_are_padded_and_masked(tiny_dir, tmp_path):
    dm = tiny_module(tmp_path, tiny_dir, [["头", "治疗"]], verbalizer={"治疗": "治", "定义": "定义是"})
    verbalizer = Verbalizer.from_words(dm.label_words, dm.label_names, dm.tokenizer)
    ids, mask = verbalizer.token_ids, verbalizer.mask
    assert ids.tolist() == [[*ids_of("治"), 0, 0], ids_of("定 义 是")]
    assert mask.sum(dim=1).tolist() == [1, 3]
    assert ids.dtype == torch.long


def test_datasets_dataset_source(tmp_path, tiny_dir):
    path = write_tsv(tmp_path / "d.tsv", ["sentence", "y"], [["头痛", "定义"], ["怎么办", "治疗"]])
    dm = TextClassificationDataModule(
        model_name_or_path=tiny_dir, labels=["治疗", "定义"], dataset_name="csv", text_fields=["sentence"],
        label_field="y",
        dataset_kwargs={"data_files": {"train": path}, "delimiter": "\t", "cache_dir": str(tmp_path / "hf")},
        cache_dir=str(tmp_path / "c"),
    )
    assert dm.class_counts("train") == [1, 1]
    assert dm.encode("train", "cls")["input_ids"] == [[2, *ids_of("头 痛"), 3], [2, *ids_of("怎 么 办"), 3]]


def class_label_dataset(dev_name: str | None) -> datasets.DatasetDict:
    """Train (and dev, under ``dev_name``) splits whose label column is a ClassLabel (stored as ints)."""
    features = datasets.Features({"text": datasets.Value("string"), "y": datasets.ClassLabel(names=["治疗", "定义"])})
    splits = {"train": datasets.Dataset.from_dict({"text": ["头痛", "怎么办", "意图"], "y": [1, 0, 1]}, features=features)}
    if dev_name:
        splits[dev_name] = datasets.Dataset.from_dict({"text": ["问题"], "y": [0]}, features=features)
    return datasets.DatasetDict(splits)


@pytest.mark.parametrize("saved", [False, True], ids=["in memory", "save_to_disk folder"])
@pytest.mark.parametrize("dev_name", ["validation", "dev"])
def test_a_datasetdict_in_memory_or_saved_to_disk_with_either_dev_split_name(saved, dev_name, tmp_path, tiny_dir):
    dataset = class_label_dataset(dev_name)
    if saved:
        dataset.save_to_disk(tmp_path / "saved")
        dataset = str(tmp_path / "saved")
    dm = TextClassificationDataModule(tiny_dir, dataset_name=dataset, label_field="y", cache_dir=str(tmp_path / "c"),
                                      template="{cls}{text_a}是{mask}{sep}", verbalizer={0: "治疗", "定义": "定义"})
    assert dm.label_names == ["治疗", "定义"]  # the ClassLabel's names: no `labels` needed
    assert dm.class_counts("train") == [1, 2] and dm.class_counts("dev") == [1, 0]
    assert dm.verbalizer.token_ids.tolist() == [ids_of("治 疗"), ids_of("定 义")]  # keyed by index or by name
    with pytest.raises(FileNotFoundError, match=r"has no test split: no split named 'test' among \['train', "
                                                rf"'{dev_name}'\]\. Name it in split_names"):
        dm.class_counts("test")
    renamed = TextClassificationDataModule(tiny_dir, labels=["治疗", "定义"], dataset_name=dataset, label_field="y",
                                           split_names={"test": "train"}, cache_dir=str(tmp_path / "c"))
    assert renamed.class_counts("test") == [1, 2]


def test_a_dataset_without_a_dev_split_fits_without_validation(tmp_path, tiny_dir):
    dm = TextClassificationDataModule(tiny_dir, dataset_name=class_label_dataset(None), label_field="y",
                                      input_format="cls", cache_dir=str(tmp_path / "c"))
    with pytest.warns(UserWarning, match="No dev split: fit trains with no validation"):
        dm.setup("fit")
    assert sorted(dm.datasets) == ["train"] and dm.val_dataloader() == []  # Lightning skips validation


def test_integer_labels_are_indices_into_the_label_list(tmp_path, tiny_dir):
    """0..K-1 in a file, as ints or digits, stand for ``labels[i]``; a label name that is digits stays a name."""
    (tmp_path / "train.jsonl").write_text('{"text": "头痛", "label": 1}\n{"text": "怎么办", "label": "治疗"}\n', "utf-8")
    dm = tiny_module(tmp_path, tiny_dir, [["头痛", "0"], ["怎么办", "1"], ["意图", "定义"]],
                     verbalizer={0: "治疗", "1": "定义"})
    assert dm.class_counts("test") == [1, 2]
    assert dm.verbalizer.token_ids.tolist() == [ids_of("治 疗"), ids_of("定 义")]
    dm = tiny_module(tmp_path, tiny_dir, [], train_file=str(tmp_path / "train.jsonl"))
    assert dm.class_counts("train") == [1, 1]
    dm = tiny_module(tmp_path, tiny_dir, [["头痛", "1"], ["怎么办", "0"]], labels=[1, 0])  # names that are digits
    assert dm.label_names == ["1", "0"] and dm.class_counts("test") == [1, 1]
    dm = tiny_module(tmp_path, tiny_dir, [["头痛", "2"]])
    with pytest.raises(ValueError, match=r"train\.tsv, row 2: unknown label '2'\. Labels are names \(治疗, 定义\) or "
                                         r"indices 0\.\.1\. Fix the row"):
        dm.class_counts("test")


# --- where data comes from ----------------------------------------------------------------

def make_release(folder: Path, task: str = "cmid") -> Path:
    (folder / task).mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        write_tsv(folder / task / name, ["text", "label"], [["头痛", "治疗"]])
    (folder / task / "label2idx.json").write_text(json.dumps({"治疗": 0}, ensure_ascii=False), "utf-8")
    (folder / task / "verbalizer.json").write_text(json.dumps({"治疗": "治疗"}, ensure_ascii=False), "utf-8")
    return folder


def test_lookup_order(tmp_path, monkeypatch):
    explicit = make_release(tmp_path / "explicit")
    env = make_release(tmp_path / "env")
    monkeypatch.setenv("LT_TUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LT_TUNING_DATA", str(env))
    assert resolve_task_dir("cmid", explicit) == explicit / "cmid"
    assert resolve_task_dir("cmid", explicit / "cmid") == explicit / "cmid"
    assert resolve_task_dir("cmid") == env / "cmid"
    monkeypatch.delenv("LT_TUNING_DATA")
    cached = make_release(tmp_path / "cache" / "data")
    assert resolve_task_dir("cmid") == cached / "cmid"


def test_download_from_release_url(tmp_path, monkeypatch, tiny_dir):
    # The default release is pinned by the full commit hash, which a branch or tag name cannot move.
    assert RELEASE_URL.split("/")[-2] == "935d238fcd1e86817a5e3c6c000ef7e0ec8670de"
    release = make_release(tmp_path / "release")
    monkeypatch.setenv("LT_TUNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LT_TUNING_DATA_URL", release.as_uri())
    dm = CMIDDataModule(model_name_or_path=tiny_dir)
    dm.prepare_data()
    assert dm.task_dir == tmp_path / "cache" / "data" / "cmid"
    assert (dm.task_dir / "train.tsv").read_bytes() == (release / "cmid" / "train.tsv").read_bytes()
    assert dm.class_counts("test") == [1]


def test_failed_download_leaves_no_partial_cache(tmp_path, monkeypatch):
    release = make_release(tmp_path / "release")
    (release / "cmid" / "verbalizer.json").unlink()
    monkeypatch.setenv("LT_TUNING_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="verbalizer.json"):
        resolve_task_dir("cmid", url=release.as_uri())
    assert not (tmp_path / "cache" / "data" / "cmid").exists()
    assert list((tmp_path / "cache" / "data").iterdir()) == []


# --- length-grouped batches ---------------------------------------------------------------

def test_length_grouped_batches_cover_each_example_once_and_change_per_epoch():
    from lt_tuning.data import LengthGroupedBatchSampler

    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 200, (1003,), generator=generator).tolist()
    sampler = LengthGroupedBatchSampler(lengths, batch_size=16, group_batches=8, generator=torch.Generator())
    sampler.generator.manual_seed(5)
    epochs = []
    for _ in range(2):  # each epoch a new draw from the generator: nobody has to call set_epoch
        batches = list(sampler)
        assert len(batches) == len(sampler) == 63
        assert sorted(i for batch in batches for i in batch) == list(range(1003))
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    # Grouping pays: padded tokens per batch far below random batches of the same data.
    grouped = sum(len(b) * max(lengths[i] for i in b) for b in epochs[0])
    shuffled = torch.randperm(1003, generator=generator).split(16)
    plain = sum(len(b) * max(lengths[i] for i in b.tolist()) for b in shuffled)
    assert grouped < 0.8 * plain
    sampler.generator.manual_seed(5)
    assert list(sampler) == epochs[0]  # the same generator state, the same batches


@pytest.mark.parametrize("num_examples", [1003, 5])
def test_distributed_length_grouped_sampler_gives_each_process_equal_full_grouped_batches(num_examples):
    from lt_tuning.data import DistributedLengthGroupedSampler

    lengths = torch.randint(3, 200, (num_examples,), generator=torch.Generator().manual_seed(0)).tolist()
    samplers = [DistributedLengthGroupedSampler(lengths, 16, num_replicas=2, rank=rank, seed=7) for rank in (0, 1)]
    epochs = []
    for epoch in range(2):
        for sampler in samplers:
            sampler.set_epoch(epoch)  # as Lightning does
        ranks = [list(sampler) for sampler in samplers]
        per_rank = -(-num_examples // 32) * 16  # ceil(n / (batch x processes)) full batches each
        assert [len(r) for r in ranks] == [len(s) for s in samplers] == [per_rank, per_rank]
        assert set(ranks[0] + ranks[1]) == set(range(num_examples))  # every example, a few twice to fill batches
        reference = length_grouped_reference(lengths, 7 + epoch)  # the epoch every process draws
        assert all(len(batch) == 16 for batch in reference)
        for rank in (0, 1):  # a DataLoader with batch_size 16 cuts each stream into its share of those batches
            assert [ranks[rank][i : i + 16] for i in range(0, per_rank, 16)] == reference[rank::2]
        epochs.append(ranks)
    assert epochs[0] != epochs[1]
    assert [list(s) for s in samplers] == epochs[1]  # an epoch is a function of the seed and epoch alone


def length_grouped_reference(lengths, seed):
    """The padded epoch of 2 processes x batches of 16."""
    from lt_tuning.data.sampler import length_grouped_batches

    total = -(-len(lengths) // 32) * 32
    return length_grouped_batches(torch.as_tensor(lengths), 16, 50, torch.Generator().manual_seed(seed), total)


def test_datamodule_groups_training_batches_by_length(tmp_path, tiny_dir):
    rows = [["头" * n, "治疗"] for n in (1, 30, 2, 29, 3, 28, 4, 27)]
    dm = tiny_module(tmp_path, tiny_dir, rows, input_format="cls", batch_size=2, group_by_length=True)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(8))
    widths = sorted(b["input_ids"].shape[1] for b in batches)
    assert widths == [4, 6, 30, 32]  # lengths n + 2, sorted and paired: short with short, long with long


def test_length_grouped_training_resumes_mid_epoch_from_the_saved_position(tmp_path, tiny_dir, monkeypatch):
    """As in a kill and ``--ckpt_path last``: the DataModule's state replays the epoch from its first unseen batch."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    rows = [["头" * n, "治疗"] for n in range(1, 41)]

    def module():
        dm = tiny_module(tmp_path, tiny_dir, rows, input_format="cls", batch_size=2, group_by_length=True)
        dm.setup("fit")
        return dm

    full = [batch["index"].tolist() for batch in module().train_dataloader()]
    interrupted = module()
    served = [batch["index"].tolist() for _, batch in zip(range(7), interrupted.train_dataloader())]
    resumed = module()
    resumed.load_state_dict(interrupted.state_dict())  # before its loader exists, as Lightning restores it
    assert served + [batch["index"].tolist() for batch in resumed.train_dataloader()] == full


# --- the training order: from the seed alone ----------------------------------------------

@pytest.mark.parametrize("group_by_length", [False, True])
def test_training_order_does_not_depend_on_when_the_datamodule_was_built(group_by_length, tmp_path, tiny_dir,
                                                                         monkeypatch):
    """Built before or after ``seed_everything``: the same seed gives the same batches, another seed others."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # restored after the test
    rows = [["头" * n, "治疗"] for n in range(1, 25)]

    def first_epoch(dm) -> list[list[int]]:
        dm.setup("fit")
        return [batch["index"].tolist() for batch in dm.train_dataloader()]

    def build():
        return tiny_module(tmp_path, tiny_dir, rows, input_format="cls", batch_size=4, group_by_length=group_by_length)

    torch.manual_seed(12345)  # whatever state the process is in before seeding
    built_before = build()
    pl.seed_everything(7, verbose=False)
    before = first_epoch(built_before)
    pl.seed_everything(7, verbose=False)
    after = first_epoch(build())
    pl.seed_everything(8, verbose=False)
    other = first_epoch(build())
    assert before == after
    assert sorted(i for batch in before for i in batch) == list(range(24))
    assert other != before
