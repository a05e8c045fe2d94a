"""Train a BERT-style WordPiece vocabulary with the ``tokenizers`` library.

Pre-tokenization is BERT's: whitespace and punctuation split words and every CJK character is
a word of its own; text is lowercased. The result is a fast tokenizer that
``AutoTokenizer.from_pretrained(folder)`` loads and that builds ``[CLS] a [SEP] (b [SEP])``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    output_dir: str | Path | None = None,
    vocab_size: int = 8000,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """A lowercase WordPiece tokenizer trained on ``texts`` (saved to ``output_dir`` if given).

    Train it on training text only; pass the words that templates and verbalizers need among
    ``texts`` so that none of them becomes [UNK]. Special tokens get ids 0-4 in the order
    [PAD], [UNK], [CLS], [SEP], [MASK].
    """
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS)
    )
    backend.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer = BertTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
        do_lower_case=True,
    )
    if output_dir is not None:
        tokenizer.save_pretrained(output_dir)
    return tokenizer
