"""Error type for malformed data files (jsonl records, BEIR folders, qrels)."""

from __future__ import annotations

import os
from typing import Optional, Union

__all__ = ["DataFormatError"]


class DataFormatError(ValueError):
    """Raised when an input data file is malformed.

    The rendered message names where the problem is and what was expected, e.g.
    ``train.jsonl, line 12, field 'pos': expected a non-empty list of strings, got []``.
    The parts are also kept as attributes (``message``, ``path``, ``line``, ``field``)
    so callers can inspect them.
    """

    def __init__(
        self,
        message: str,
        path: Optional[Union[str, os.PathLike]] = None,
        line: Optional[int] = None,
        field: Optional[str] = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        if not where:
            return self.message
        return f"{', '.join(where)}: {self.message}"

    def __reduce__(self):  # keep the structured fields when pickled (e.g. by DataLoader workers)
        return (type(self), (self.message, self.path, self.line, self.field))
