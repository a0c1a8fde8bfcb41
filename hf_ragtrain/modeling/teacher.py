"""Teacher vectors for embedding distillation: precomputed (a memory-mapped .npy) or from a frozen model."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor


class PrecomputedTeacher:
    """Teacher vectors looked up by text: row i of ``vectors`` belongs to ``texts[i]``.

    ``vectors`` may be a ``np.memmap``/``np.load(..., mmap_mode="r")`` array, so a large table stays
    on disk. A text with no row is an error that names it (nothing is silently skipped).
    """

    def __init__(self, vectors: np.ndarray, texts: Sequence[str], source: str = "teacher embeddings"):
        if len(vectors) != len(texts):
            raise ValueError(f"{source}: {len(vectors)} vectors but {len(texts)} texts; they must align row by row")
        self.vectors, self.source = vectors, source
        self.row = {t: i for i, t in enumerate(texts)}
        self.dim = int(vectors.shape[1])

    @classmethod
    def load(cls, npy_path: str, texts_path: str) -> "PrecomputedTeacher":
        """``npy_path``: ``(N, D)`` array; ``texts_path``: N lines, each a JSON string."""
        vectors = np.load(npy_path, mmap_mode="r")
        texts = []
        with open(texts_path) as fh:
            for line_no, line in enumerate(fh, 1):
                try:
                    text = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{texts_path}, line {line_no}: expected a JSON string ({err.msg})") from None
                if not isinstance(text, str):
                    raise ValueError(f"{texts_path}, line {line_no}: expected a JSON string, got "
                                     f"{type(text).__name__}")
                texts.append(text)
        return cls(vectors, texts, source=os.path.basename(npy_path))

    def vectors_for(self, texts: Sequence[str], kind: str) -> Tensor:
        missing = [t for t in texts if t not in self.row]
        if missing:
            raise KeyError(f"{self.source}: no teacher vector for {len(missing)} text(s), e.g. {missing[0][:80]!r}")
        rows = np.asarray([self.row[t] for t in texts])
        return torch.from_numpy(np.asarray(self.vectors[rows], dtype=np.float32))


class ModelTeacher:
    """Teacher vectors computed on the fly by a frozen bi-encoder (no gradients, eval mode)."""

    def __init__(self, encoder: Any):
        self.encoder = encoder.eval().requires_grad_(False)
        self.dim = int(encoder.embedding_dim)

    def to(self, device) -> "ModelTeacher":
        self.encoder.to(device)
        return self

    def vectors_for(self, texts: Sequence[str], kind: str) -> Tensor:
        return torch.as_tensor(self.encoder.encode(list(texts), kind=kind, convert_to_numpy=False))


def write_teacher_embeddings(encoder: Any, texts: Sequence[str], npy_path: str, texts_path: str,
                             batch_size: int = 64) -> None:
    """Precompute a teacher's vectors for ``texts`` into ``npy_path`` (+ ``texts_path``) for :class:`PrecomputedTeacher`."""
    unique = list(dict.fromkeys(texts))
    vectors = np.asarray(encoder.encode(unique, batch_size=batch_size), dtype=np.float32)
    np.save(npy_path, vectors)
    with open(texts_path, "w") as fh:
        for t in unique:
            fh.write(json.dumps(t) + "\n")
