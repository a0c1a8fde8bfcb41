"""A user's documents as a corpus of passages: a BEIR folder, a jsonl file, or a folder of text files.

Domain adaptation (:mod:`hf_ragtrain.runner.adaptation`) starts from documents alone. They come as

- a BEIR folder: its ``corpus.jsonl`` is read (queries and qrels are not);
- a jsonl file of ``{"_id", "title", "text"}`` objects (gzip or not);
- a folder of ``.txt`` / ``.md`` / ``.rst`` files, read recursively: each file is cut into passages at
  headings and blank lines, paragraphs joined up to ``max_words`` words, a paragraph longer than that
  cut at sentence ends. A passage's id is ``<relative path>#<n>`` and its title the file's name plus the
  heading it sits under.

Every problem names the file and the line: an empty corpus, a document without text, a folder with
no readable file, a repeated id. Files a folder holds that are not text (by extension) are counted and
reported, never read silently as text.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .beir import doc_text, load_beir_corpus
from .errors import DataFormatError

__all__ = ["Corpus", "load_corpus", "split_passages", "TEXT_SUFFIXES"]

#: Files a folder corpus reads; anything else is counted as skipped.
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
_HEADING_MD = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_UNDERLINE_RST = re.compile(r"^\s*([=\-~^\"'`*+#])\1{2,}\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[\"'])")


@dataclass
class Corpus:
    """Passages in order: ``ids`` and ``titles`` and ``texts`` ``(N,)``; ``source`` is what was read and
    ``skipped`` counts what was not (files of other types, by suffix)."""

    ids: list[str]
    titles: list[str]
    texts: list[str]
    source: str = ""
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def full_texts(self) -> list[str]:
        """Each passage as models see it: ``title + " " + text`` (BEIR's convention)."""
        return [doc_text({"title": t, "text": x}) for t, x in zip(self.titles, self.texts)]

    def as_beir(self) -> dict[str, dict[str, str]]:
        """``{id: {"title", "text"}}``, the corpus of a BEIR folder."""
        return {i: {"title": t, "text": x} for i, t, x in zip(self.ids, self.titles, self.texts)}

    def describe(self) -> str:
        skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped.items()))
        return f"{len(self)} passages from {self.source}" + (f" (skipped: {skipped})" if skipped else "")


def load_corpus(path: str | os.PathLike, max_words: int = 200) -> Corpus:
    """Read ``path`` (a BEIR folder, a ``.jsonl`` file or a folder of text files; see the module
    docstring) into a :class:`Corpus`; ``max_words`` bounds the passages cut from text files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--corpus {path}: no such file or folder")
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        return _from_jsonl(path / "corpus.jsonl")
    if path.is_dir():
        return _from_folder(path, max_words)
    return _from_jsonl(path)


def _from_jsonl(path: Path) -> Corpus:
    docs = load_beir_corpus(path)  # names the line of a repeated id, bad JSON, a missing text field
    if not docs:
        raise DataFormatError("the corpus is empty: expected one JSON object per line with \"_id\", \"title\" and "
                              "\"text\"", path)
    for line_no, (doc_id, doc) in enumerate(docs.items(), 1):
        if not doc_text(doc):
            line = _line_of(path, doc_id) or line_no
            raise DataFormatError(f"document {doc_id!r} has no text (title and text are both empty); remove it or "
                                  "give it text", path, line, "text")
    return Corpus(list(docs), [d["title"] for d in docs.values()], [d["text"] for d in docs.values()], os.fspath(path))


def _line_of(path: Path, doc_id: str) -> int | None:
    """The line of ``doc_id`` in a jsonl file (blank lines make it differ from the document's position)."""
    import json

    from .records import iter_text_lines

    for line_no, line in iter_text_lines(path):
        if line.strip() and str(json.loads(line).get("_id")) == doc_id:
            return line_no
    return None


def _from_folder(root: Path, max_words: int) -> Corpus:
    ids, titles, texts, skipped = [], [], [], {}
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                          p.relative_to(root).parts))
    readable = 0
    for file in files:
        if file.suffix.lower() not in TEXT_SUFFIXES:
            kind = f"{file.suffix.lower() or 'no-suffix'} files"
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        try:
            content = file.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            line = content_line(file.read_bytes(), err.start)
            raise DataFormatError(f"is not UTF-8 text (byte {err.start}); convert it or move it out of the folder",
                                  file, line) from None
        readable += 1
        rel = file.relative_to(root).as_posix()
        passages = list(split_passages(content, max_words))
        if not passages:
            skipped["empty text files"] = skipped.get("empty text files", 0) + 1
        for n, (heading, passage) in enumerate(passages):
            ids.append(f"{rel}#{n}")
            titles.append(f"{file.stem}: {heading}" if heading else file.stem)
            texts.append(passage)
    if not readable:
        found = ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items())) or "no files"
        raise DataFormatError(f"the folder has no readable text file (expected {', '.join(TEXT_SUFFIXES)} files, or "
                              f"a corpus.jsonl; found {found})", root)
    if not ids:
        raise DataFormatError(f"the corpus is empty: the folder's {readable} text file(s) hold no text", root)
    return Corpus(ids, titles, texts, os.fspath(root), skipped)


def content_line(data: bytes, offset: int) -> int:
    """The 1-based line of byte ``offset`` in ``data``."""
    return data.count(b"\n", 0, offset) + 1


def split_passages(content: str, max_words: int = 200) -> Iterator[tuple[str, str]]:
    """``(heading, passage)`` pieces of a text file: paragraphs (blank-line separated) under the latest
    Markdown or reStructuredText heading, joined while they fit in ``max_words`` words; a paragraph
    longer than that is cut at sentence ends (a sentence longer than that stays whole)."""
    heading, pieces = "", []
    for kind, text in _blocks(content):
        if kind == "heading":
            yield from _pack(heading, pieces, max_words)
            heading, pieces = text, []
        else:
            pieces.append(text)
    yield from _pack(heading, pieces, max_words)


def _blocks(content: str) -> Iterator[tuple[str, str]]:
    """``("heading", title)`` and ``("paragraph", text)`` in order."""
    lines = content.splitlines()
    paragraph: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        md = _HEADING_MD.match(line)
        underlined = i + 1 < len(lines) and line.strip() and _UNDERLINE_RST.match(lines[i + 1])
        if md or underlined or not line.strip() or _UNDERLINE_RST.match(line):
            if paragraph:
                yield "paragraph", " ".join(paragraph)
                paragraph = []
            if md:
                yield "heading", md.group(2)
            elif underlined:
                yield "heading", line.strip()
                i += 1
        else:
            paragraph.append(line.strip())
        i += 1
    if paragraph:
        yield "paragraph", " ".join(paragraph)


def _pack(heading: str, paragraphs: list[str], max_words: int) -> Iterator[tuple[str, str]]:
    current: list[str] = []
    size = 0
    for paragraph in paragraphs:
        for piece in _fit(paragraph, max_words):
            words = len(piece.split())
            if current and size + words > max_words:
                yield heading, " ".join(current)
                current, size = [], 0
            current.append(piece)
            size += words
    if current:
        yield heading, " ".join(current)


def _fit(paragraph: str, max_words: int) -> Iterator[str]:
    """A paragraph in pieces of at most ``max_words`` words, cut between sentences."""
    if len(paragraph.split()) <= max_words:
        yield paragraph
        return
    piece: list[str] = []
    size = 0
    for sentence in _SENTENCE_END.split(paragraph):
        words = len(sentence.split())
        if piece and size + words > max_words:
            yield " ".join(piece)
            piece, size = [], 0
        piece.append(sentence)
        size += words
    if piece:
        yield " ".join(piece)
