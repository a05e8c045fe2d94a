"""Prompt templates: text -> token ids for prompt-tuning (the label words: :mod:`lt_tuning.verbalizer`).

A template such as ``{cls}{text_a}？这个问题的意图是{mask}。{sep}`` is parsed once into
token-id pieces; each example then only needs its text fields tokenized (in batches, by
the fast tokenizer) and spliced in. Only the text fields are truncated, so the template,
and with it the [MASK], always survives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PSEUDO = re.compile(r"p(\d+)")
TEXT_FIELDS = ("text_a", "text_b")


def pseudo_token(index: int) -> str:
    """The tokenizer token that stands for the template placeholder ``{p<index>}``."""
    return f"[P{index}]"


def template_words(template: str) -> str:
    """The literal text of ``template``, placeholders removed (for vocabulary coverage)."""
    return _PLACEHOLDER.sub(" ", template).strip()


@dataclass(frozen=True)
class Template:
    """A parsed prompt template.

    ``pieces`` holds, in order, either a list of token ids (literal text, special tokens,
    pseudo tokens) or the name of a text field (``"text_a"``/``"text_b"``).
    """

    text: str
    pieces: tuple[list[int] | str, ...]
    num_template_tokens: int
    space_before_mask: bool

    @classmethod
    def parse(cls, template: str, tokenizer: PreTrainedTokenizerBase, num_text_fields: int) -> Template:
        """Parse ``template`` for a dataset with ``num_text_fields`` (1 or 2) text fields.

        Placeholders: ``{cls}``, ``{sep}``, ``{mask}``, ``{text_a}``, ``{text_b}``, and pseudo
        tokens ``{p0}``, ``{p1}``... which must already be in the tokenizer
        (see :func:`add_pseudo_tokens`). Whitespace right before ``{mask}`` is dropped from the
        template and remembered, so that the verbalizer words can be tokenized as words that
        follow a space (matters for BPE vocabularies such as RoBERTa's).
        """
        names = _PLACEHOLDER.findall(template)
        for required in ("mask", "text_a"):
            if names.count(required) != 1:
                raise ValueError(
                    f"Template {template!r} must contain {{{required}}} exactly once "
                    f"(found {names.count(required)}). Example: '{{cls}}{{text_a}} It was {{mask}} .{{sep}}'."
                )
        if names.count("text_b") != num_text_fields - 1:
            problem = ("uses {text_b} but the dataset has one text field; remove {text_b} or configure a second "
                       "text field" if num_text_fields == 1 else
                       "must contain {text_b} exactly once: the dataset has two text fields")
            raise ValueError(f"Template {template!r} {problem}.")
        special = {"cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id, "mask": tokenizer.mask_token_id}
        pieces: list[list[int] | str] = []
        space_before_mask = False
        position = 0
        for match in _PLACEHOLDER.finditer(template):
            literal = template[position : match.start()]
            name = match.group(1)
            if name == "mask" and literal[-1:].isspace():
                literal, space_before_mask = literal.rstrip(), True
            if literal:
                pieces.append(tokenizer(literal, add_special_tokens=False)["input_ids"])
            if name in TEXT_FIELDS:
                pieces.append(name)
            elif name in special:
                if special[name] is None:
                    raise ValueError(f"Template {template!r} uses {{{name}}} but the tokenizer has no {name} token.")
                pieces.append([special[name]])
            elif _PSEUDO.fullmatch(name):
                token_id = tokenizer.convert_tokens_to_ids(pseudo_token(int(name[1:])))
                if token_id == tokenizer.unk_token_id:
                    raise ValueError(f"Pseudo token {{{name}}} is not in the tokenizer; call add_pseudo_tokens first.")
                pieces.append([token_id])
            else:
                raise ValueError(
                    f"Template {template!r} has an unknown placeholder {{{name}}}; "
                    "use {cls}, {sep}, {mask}, {text_a}, {text_b} or {p0}, {p1}..."
                )
            position = match.end()
        if template[position:]:
            pieces.append(tokenizer(template[position:], add_special_tokens=False)["input_ids"])
        num_template_tokens = sum(len(p) for p in pieces if not isinstance(p, str))
        return cls(template, tuple(pieces), num_template_tokens, space_before_mask)

    def text_budget(self, max_length: int, num_text_fields: int) -> int:
        """Tokens left for the text fields; raises if not even one per field fits."""
        budget = max_length - self.num_template_tokens
        if budget < num_text_fields:
            raise ValueError(
                f"max_length={max_length} is too small for template {self.text!r}: the template alone takes "
                f"{self.num_template_tokens} tokens and each of the {num_text_fields} text field(s) needs at "
                f"least one. Use max_length >= {self.num_template_tokens + num_text_fields}."
            )
        return budget

    def encode(self, text_a: list[int], text_b: list[int] | None, max_length: int) -> list[int]:
        """Splice already tokenized text into the template, truncating text only."""
        budget = self.text_budget(max_length, 1 if text_b is None else 2)
        text_a, text_b = truncate_longest_first(text_a, text_b, budget)
        fields = {"text_a": text_a, "text_b": text_b}
        ids: list[int] = []
        for piece in self.pieces:
            ids.extend(fields[piece] if isinstance(piece, str) else piece)
        return ids


def truncate_longest_first(a: list[int], b: list[int] | None, budget: int) -> tuple[list[int], list[int] | None]:
    """Cut tokens from the end of the longer field until both fit ``budget`` together."""
    if b is None:
        return a[:budget], None
    len_a, len_b = len(a), len(b)
    while len_a + len_b > budget:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return a[:len_a], b[:len_b]


def add_pseudo_tokens(tokenizer: PreTrainedTokenizerBase, template: str) -> list[int]:
    """Add the template's pseudo tokens ``[P0]``, ``[P1]``... to ``tokenizer``; return their ids.

    A model fed these ids needs ``resize_token_embeddings(len(tokenizer))``.
    """
    indices = {int(name[1:]) for name in _PLACEHOLDER.findall(template) if _PSEUDO.fullmatch(name)}
    tokens = [pseudo_token(i) for i in sorted(indices)]
    if tokens:
        tokenizer.add_tokens(tokens, special_tokens=True)
    return tokenizer.convert_tokens_to_ids(tokens)
