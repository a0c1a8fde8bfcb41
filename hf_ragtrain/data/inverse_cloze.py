"""Inverse-cloze queries: one sentence cut from a passage is the query, the rest of the passage its positive.

The inverse cloze task (Lee et al., 2019) needs no model: a sentence of a passage is a statement
about what the passage says, so retrieving the passage from it teaches topical matching in the
corpus's own words. The sentence is removed from the positive so the match is never a copied string.
Sentences come from after the first (the first is usually background or a heading-like lead) and
must have ``min_words`` to ``max_words`` words; a passage needs ``min_sentences`` sentences.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

from .beir import doc_text
from .generated import GeneratedQuery

__all__ = ["split_sentences", "pick_sentence", "inverse_cloze_queries"]

GENERATOR = "inverse-cloze"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage: cut after ., ! or ? followed by space and a capital, digit or bracket."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def pick_sentence(text: str, rng: random.Random, min_words: int = 6, max_words: int = 30,
                  min_sentences: int = 3) -> int | None:
    """Index of a random sentence after the first with ``min_words``-``max_words`` words, in a text of
    at least ``min_sentences`` sentences; ``None`` when none fits."""
    sentences = split_sentences(text)
    fits = [i for i, s in enumerate(sentences) if i > 0 and min_words <= len(s.split()) <= max_words]
    return rng.choice(fits) if fits and len(sentences) >= min_sentences else None


def inverse_cloze_queries(ids: Sequence[str], titles: Sequence[str], texts: Sequence[str], num_queries: int,
                          seed: int = 0, min_words: int = 6, max_words: int = 30, min_sentences: int = 3
                          ) -> tuple[list[GeneratedQuery], int]:
    """Up to ``num_queries`` inverse-cloze queries, each from a different passage sampled with ``seed``;
    returns them (in corpus order) and the number of passages that had a sentence that fits."""
    rng = random.Random(seed)
    picks = {}
    for i, text in enumerate(texts):
        j = pick_sentence(text, rng, min_words, max_words, min_sentences)
        if j is not None:
            picks[i] = j
    chosen = sorted(rng.sample(sorted(picks), min(num_queries, len(picks))))
    out = []
    for i in chosen:
        sentences = split_sentences(texts[i])
        query = sentences.pop(picks[i])
        positive = doc_text({"title": titles[i], "text": " ".join(sentences)})
        out.append(GeneratedQuery(f"ict-{ids[i]}", query, ids[i], positive, GENERATOR))
    return out, len(picks)
