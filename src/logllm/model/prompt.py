"""The prompt around the message vectors, and the answer tokens the loss and the score look at.

One sequence's decoder input (METHOD.md section 3)::

    [start] PREFIX [v_1 ... v_n] QUESTION ANSWER

where ``v_i`` are projected message vectors. The two answers share a head ("The sequence is"); the
first token where they differ is the *label position*: scoring needs the decoder's output there only.
"""

from __future__ import annotations

from dataclasses import dataclass

from logllm.errors import ConfigError

PREFIX = "Below is a sequence of system log messages:"
# The reference code sends a literal backslash-n here by mistake; we use a real line break.
QUESTION = ". Is this sequence normal or anomalous? \n"
ANSWERS = {0: "The sequence is normal.", 1: "The sequence is anomalous."}


@dataclass(frozen=True)
class PromptTokens:
    """Token ids of the fixed prompt parts for one decoder tokenizer.

    start: optional begin-of-sequence token then the prefix; question: the question text;
    answers[label]: the answer text then an end token when the tokenizer has one;
    label_offset: index in the answers of the first token where they differ;
    label_tokens: (normal token, anomalous token) at that index.
    """

    start: tuple[int, ...]
    question: tuple[int, ...]
    answers: dict[int, tuple[int, ...]]
    label_offset: int
    label_tokens: tuple[int, int]

    @property
    def answer_head(self) -> tuple[int, ...]:
        """The answer tokens both answers share, fed before the label position when scoring."""
        return self.answers[0][: self.label_offset]

    @property
    def token_ids(self) -> list[int]:
        """Every token id the prompt can use (for embedding just these rows)."""
        ids = set(self.start) | set(self.question)
        for answer in self.answers.values():
            ids |= set(answer)
        return sorted(ids)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> PromptTokens:  # noqa: ANN001 - any HF tokenizer
        def encode(text: str) -> list[int]:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])

        # A begin token where the tokenizer defines one (Llama: <|begin_of_text|>; BERT: [CLS]),
        # so the decoder sees the sequence start it was pretrained with.
        begin = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        start = ([begin] if begin is not None else []) + encode(PREFIX)
        answers = {label: tuple(encode(text) + ([end] if end is not None else [])) for label, text in ANSWERS.items()}
        offset = 0
        while (offset < min(len(a) for a in answers.values())
               and answers[0][offset] == answers[1][offset]):
            offset += 1
        if offset >= min(len(a) for a in answers.values()):
            raise ConfigError(f"the decoder tokenizer {type(tokenizer).__name__} encodes the two answers "
                              f"{list(ANSWERS.values())} so that one is a prefix of the other; "
                              "choose a decoder with another tokenizer")
        return cls(
            start=tuple(start),
            question=tuple(encode(QUESTION)),
            answers=answers,
            label_offset=offset,
            label_tokens=(answers[0][offset], answers[1][offset]),
        )
