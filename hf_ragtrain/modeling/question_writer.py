"""Questions written by a local chat model about passages of a corpus (query generation, as in GPL and InPars).

:class:`QuestionWriter` prompts any causal LM folder (SmolLM2-135M-Instruct, ``"smollm2"``, by
default) with a few examples of (passage, query) and then the passage to ask about, and keeps the
first line it writes. The examples come from the user's own queries when there are some (each
paired with the passage BM25 ranks first for it), else from the corpus itself (passages whose titles
read like queries), else none (the instruction alone). Models with a chat template are prompted as a
conversation, others as plain text. Generation is greedy by default, so a rerun writes the same
questions. Every unusable output is counted by reason (:class:`WriterStats`), never dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

__all__ = ["QuestionWriter", "WriterStats", "clean_question", "INSTRUCTION"]

INSTRUCTION = "Write one short search query that the passage answers. Reply with the query only."
_PREFIX = re.compile(r"^\s*(?:query|question|search query|q)\s*[:\-]\s*", re.IGNORECASE)


@dataclass
class WriterStats:
    """What became of the model's outputs: ``kept``, and ``rejected`` counted by reason."""

    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "rejected": dict(sorted(self.rejected.items()))}


def clean_question(output: str, passage: str, min_words: int = 3, max_words: int = 40) -> tuple[str, str | None]:
    """The query in a model's output (its first non-empty line, without a "Query:" prefix or quotes) and
    why it is unusable (``None`` when it is usable): empty, too short, too long, or a copy of the passage."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    text = _PREFIX.sub("", lines[0]) if lines else ""
    text = text.strip().strip("\"'`“”").strip()
    words = len(text.split())
    if not text:
        return text, "empty"
    if words < min_words:
        return text, f"fewer than {min_words} words"
    if words > max_words:
        return text, f"more than {max_words} words"
    if text.lower() in passage.lower():
        return text, "copied from the passage"
    return text, None


class QuestionWriter:
    """Write one query per passage with ``model`` (a folder or ``"smollm2"``); ``examples`` are
    ``(passage, query)`` pairs shown first; passages are cut to ``max_passage_words`` words."""

    def __init__(self, model: str = "smollm2", examples: Sequence[tuple[str, str]] = (), max_new_tokens: int = 24,
                 max_passage_words: int = 80, batch_size: int = 32, sample: bool = False, seed: int = 0,
                 dtype: str = "auto", show_progress: bool = True):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..offline import resolve_model_path

        path = resolve_model_path(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"  # generation continues every prompt from its last token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        from ..hardware import bf16_is_fast

        bf16 = dtype == "bf16" or (dtype == "auto" and bf16_is_fast())  # SciFact: 0.22 s a passage, fp32 0.52 s
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32).eval()
        self.show_progress = show_progress
        self.max_new_tokens, self.max_passage_words = max_new_tokens, max_passage_words
        self.examples = [(self.cut(p), q) for p, q in examples]
        self.batch_size, self.sample, self.seed = batch_size, sample, seed
        self.stats = WriterStats()

    def cut(self, passage: str) -> str:
        """The passage's first ``max_passage_words`` words."""
        return " ".join(passage.split()[:self.max_passage_words])

    def prompt(self, passage: str) -> str:
        """The prompt for one passage: the instruction, the examples, then the passage."""
        turns = []
        for example, query in self.examples:
            turns += [{"role": "user", "content": f"{INSTRUCTION}\n\nPassage: {example}"},
                      {"role": "assistant", "content": query}]
        turns.append({"role": "user", "content": f"{INSTRUCTION}\n\nPassage: {self.cut(passage)}"})
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        text = "".join(f"{t['content']}\nQuery: " if t["role"] == "user" else f"{t['content']}\n\n" for t in turns)
        return text

    @torch.no_grad()
    def generate(self, passages: Sequence[str]) -> list[str]:
        """The model's raw outputs, one per passage (see :meth:`write` for the cleaned queries)."""
        from tqdm.auto import tqdm

        out = []
        torch.manual_seed(self.seed)
        for start in tqdm(range(0, len(passages), self.batch_size), desc="writing questions", unit="batch",
                          disable=not self.show_progress or len(passages) <= self.batch_size):
            prompts = [self.prompt(p) for p in passages[start:start + self.batch_size]]
            batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            tokens = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=self.sample,
                                         top_p=0.95 if self.sample else None, temperature=0.7 if self.sample else None,
                                         top_k=None, pad_token_id=self.tokenizer.pad_token_id)
            out += self.tokenizer.batch_decode(tokens[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return out

    def write(self, passages: Sequence[str]) -> list[str | None]:
        """One query per passage, ``None`` where the output was unusable (counted in :attr:`stats`)."""
        queries: list[str | None] = []
        for passage, output in zip(passages, self.generate(passages)):
            text, problem = clean_question(output, passage)
            if problem:
                self.stats.reject(problem)
                queries.append(None)
            else:
                self.stats.kept += 1
                queries.append(text)
        return queries
