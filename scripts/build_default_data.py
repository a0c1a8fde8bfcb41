"""Build the bundled default training set ``data/python_faq/`` from the Python FAQ.

Source: the reStructuredText sources of the Python 3.11 documentation shipped by
Debian's ``python3.11-doc`` package (``/usr/share/doc/python3.11/html/_sources``),
licensed under the PSF License Agreement.

* Every FAQ section (``faq/*.rst.txt``) whose heading ends in ``?`` is a question;
  its body up to the next heading of the same or a higher level (subsections
  included) is the answer passage.
* Sections of the rest of the documentation (all folders except ``faq/`` and
  ``whatsnew/``; the body up to the next heading of any level, cut at paragraph
  boundaries into chunks of ``--min_chars`` to ``--max_chars`` characters) are
  distractor passages; ``--num_distractors`` of them are sampled with ``--seed``.
* Questions are shuffled with ``--seed`` and split into train / dev.
* Train records get 7 BM25 hard negatives sampled (seeded) from retrieval ranks
  2..29 (0-based, the positive counted) over the train answers + distractors; the two
  best hits are skipped because they are the likeliest unlabelled answers.
* Dev records get the 29 best BM25 candidates other than the answer over all
  answers + distractors, so each dev query is a 30-passage reranking problem.

Output is deterministic: running the script twice gives identical files.

    python scripts/build_default_data.py            # writes data/python_faq/
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

try:
    import hf_ragtrain  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_ragtrain.data.mining import BM25, mine_hard_negatives

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
DEFAULT_OUT = REPO / "data" / "python_faq"
SKIP_DIRS = {"faq", "whatsnew"}

# ---------------------------------------------------------------------------
# reStructuredText parsing
# ---------------------------------------------------------------------------

_ADORNMENT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


@dataclass
class Section:
    """One titled section of an rst file: heading level (0 = top) and its line span."""

    title: str
    level: int
    start: int  # first line of the heading (overline or title)
    body_start: int  # first line after the underline


def _is_adornment(line: str) -> bool:
    stripped = line.rstrip()
    return len(stripped) >= 3 and stripped[0] in _ADORNMENT and len(set(stripped)) == 1


def find_sections(lines: Sequence[str]) -> list[Section]:
    """Headings of an rst document; levels follow the order in which adornment styles appear."""
    styles: list[tuple[str, bool]] = []
    sections: list[Section] = []
    i = 0
    while i + 1 < len(lines):
        title, under = lines[i].rstrip(), lines[i + 1].rstrip()
        if (
            title.strip()
            and not title[0].isspace()
            and not _is_adornment(title)
            and _is_adornment(under)
            and len(under) >= len(title)
        ):
            over = i > 0 and lines[i - 1].rstrip() == under
            if over or i == 0 or not lines[i - 1].strip():
                style = (under[0], over)
                if style not in styles:
                    styles.append(style)
                start = i - 1 if over else i
                sections.append(Section(title.strip(), styles.index(style), start, i + 2))
                i += 2
                continue
        i += 1
    return sections


# Directives whose whole block (argument, options and content) is dropped.
_DROP_BLOCK = {
    "index", "contents", "toctree", "highlight", "sectionauthor", "moduleauthor",
    "currentmodule", "testsetup", "testcleanup", "raw", "include", "literalinclude",
    "image", "figure", "tabularcolumns", "productionlist", "audit-event", "program",
    "only", "rst-class", "cssclass",
}
# Directives whose argument (an API signature or name) is kept as text.
_KEEP_ARGUMENT = {
    "function", "method", "class", "exception", "data", "attribute", "decorator",
    "decoratormethod", "classmethod", "staticmethod", "abstractmethod", "describe",
    "coroutinefunction", "coroutinemethod", "opcode", "cmdoption", "envvar", "pdbcommand",
    "module", "object", "c:function", "c:member", "c:type", "c:var", "c:macro", "rubric",
    "topic", "sidebar",
}
_DIRECTIVE_RE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")
_COMMENT_RE = re.compile(r"^(\s*)\.\.(\s|$)")
_OPTION_RE = re.compile(r"^\s+:[\w-]+:")
_TABLE_RULE_RE = re.compile(r"^\s*[+|]?[-=+: ]*[-=][-=+: |]*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


_CODE_DIRECTIVES = {"code-block", "sourcecode", "code", "doctest", "parsed-literal"}


def strip_blocks(lines: Sequence[str]) -> list[tuple[str, bool]]:
    """Drop comments, link targets, meta directives and table rules.

    Returns the kept lines as ``(line, is_code)``; literal blocks (after ``::``, in
    code directives) and ``>>>`` doctest blocks are code, whose inline markup must
    not be touched.
    """
    out: list[tuple[str, bool]] = []
    skip_indent: Optional[int] = None  # dropping lines indented deeper than this
    code_base: Optional[int] = None  # a literal block follows, indented deeper than this
    code_indent: Optional[int] = None  # in a literal block indented this much
    in_doctest = False
    in_options = False
    for line in lines:
        blank = not line.strip()
        if skip_indent is not None:
            if blank or _indent(line) > skip_indent:
                continue
            skip_indent = None
        if in_options and _OPTION_RE.match(line):
            continue
        in_options = False
        if code_base is not None:  # waiting for the first line of a literal block
            if blank:
                continue
            if _indent(line) > code_base:
                code_indent = _indent(line)
            code_base = None
        if code_indent is not None:
            if blank or _indent(line) >= code_indent:
                out.append((line, True))
                continue
            code_indent = None
        if in_doctest:
            if not blank:
                out.append((line, True))
                continue
            in_doctest = False
        directive = _DIRECTIVE_RE.match(line)
        if directive:
            indent, name, arg = directive.groups()
            name = name.lower()
            if name in _DROP_BLOCK or name.startswith("test") or "|" in line:
                skip_indent = len(indent)
                continue
            in_options = True
            if name in _CODE_DIRECTIVES:
                code_base = len(indent)
            elif name in _KEEP_ARGUMENT and arg:
                out.append((indent + arg, True))
            continue
        comment = _COMMENT_RE.match(line)
        if comment:  # comments and ``.. _label:`` targets (with any indented continuation)
            skip_indent = len(comment.group(1))
            continue
        if not blank and (_TABLE_RULE_RE.match(line) or _is_adornment(line)):
            continue
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_doctest = True
            out.append((line, True))
            continue
        if stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1:
            line = stripped.replace("|", " ")
        if stripped.endswith("::"):
            code_base = _indent(line)
        out.append((line, False))
    return out


_ROLE_RE = re.compile(r":((?:[\w-]+:)*[\w-]+):`([^`]+)`")
_LINK_RE = re.compile(r"`([^`<]+?)\s*<[^`>]+>`__?")
_REF_RE = re.compile(r"`([^`]+)`_{0,2}")  # `target`_ links and `default role` text
_LITERAL_RE = re.compile(r"``(.+?)``")
_STRONG_RE = re.compile(r"\*\*(\S(?:[^*`]*?\S)?)\*\*")
_EMPH_RE = re.compile(r"(?<![\w*`])\*(\S(?:[^*`]*?\S)?)\*(?![\w*])")
_FOOTNOTE_RE = re.compile(r"\s*\[(?:#\w*|\d+|\*)\]_")


def _role(match: re.Match) -> str:
    name, content = match.group(1).lower(), match.group(2)
    explicit = re.match(r"^(.*?)\s*<([^<>]+)>$", content, flags=re.S)
    if explicit and explicit.group(1):
        return explicit.group(1)
    content = explicit.group(2) if explicit else content
    if name == "pep":
        return f"PEP {content}"
    if name == "rfc":
        return f"RFC {content}"
    content = content.lstrip("!")
    if content.startswith("~"):
        content = content[1:].rsplit(".", 1)[-1]
    if name.split(":")[-1] in {"func", "meth"} and not content.endswith(")"):
        content += "()"
    return content


def clean_inline(text: str) -> str:
    """Remove inline rst markup (roles, links, literals, emphasis) and collapse whitespace."""
    text = " ".join(text.split())
    text = _FOOTNOTE_RE.sub("", text)
    text = _ROLE_RE.sub(_role, text)
    text = _LINK_RE.sub(r"\1", text)
    text = _STRONG_RE.sub(r"\1", text)
    text = _EMPH_RE.sub(r"\1", text)
    text = _LITERAL_RE.sub(r"\1", text)
    text = _REF_RE.sub(r"\1", text)
    text = text.replace("\\ ", "").replace("\\*", "*").replace("\\`", "`")
    text = re.sub(r"(\S)\s*::(\s|$)", r"\1:\2", text)  # "Example::" -> "Example:"
    text = re.sub(r"(^|\s)::(\s|$)", r"\1\2", text)
    return " ".join(text.split())


def clean_rst(lines: Sequence[str]) -> str:
    """Plain text of an rst fragment."""
    return _clean_kept(strip_blocks(lines))


def _clean_kept(lines: Sequence[tuple[str, bool]]) -> str:
    """Join kept lines: prose loses inline markup and bullets, code only extra whitespace."""
    parts: list[str] = []
    for is_code, group in itertools.groupby(lines, key=lambda item: item[1]):
        text = "\n".join(line for line, _ in group)
        text = text.replace("|version|", "3.11").replace("|release|", "3.11")
        if not is_code:
            text = clean_inline(re.sub(r"(?m)^\s*[*+-]\s+", "", text))
        parts.append(" ".join(text.split()))
    return " ".join(p for p in parts if p)


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters at a word boundary."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut


# ---------------------------------------------------------------------------
# passages
# ---------------------------------------------------------------------------


@dataclass
class Passage:
    """A passage with a stable id; ``question`` is set for FAQ entries."""

    pid: str
    text: str
    question: Optional[str] = None


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def faq_pairs(docs_dir: Path, max_chars: int) -> list[Passage]:
    """Question/answer pairs from ``faq/*.rst.txt`` (headings ending in ``?``)."""
    pairs: list[Passage] = []
    for path in sorted((docs_dir / "faq").glob("*.rst.txt")):
        lines = _read_lines(path)
        sections = find_sections(lines)
        stem = path.name[: -len(".rst.txt")]
        count = 0
        for i, sec in enumerate(sections):
            question = clean_inline(sec.title)
            if not question.endswith("?"):
                continue
            end = next((s.start for s in sections[i + 1:] if s.level <= sec.level), len(lines))
            # subsection titles stay in the answer as plain text
            answer = truncate(clean_rst(lines[sec.body_start:end]), max_chars)
            if len(answer) < 20:
                continue
            count += 1
            pairs.append(Passage(f"faq/{stem}/{count:03d}", answer, question))
    return pairs


def chunk_paragraphs(lines: Sequence[str], max_chars: int) -> list[str]:
    """Clean an rst fragment and pack its paragraphs into passages of at most ``max_chars``."""
    paragraphs: list[str] = []
    current: list[tuple[str, bool]] = []
    for line, is_code in strip_blocks(lines) + [("", False)]:
        if line.strip():
            current.append((line, is_code))
        elif current:
            paragraphs.append(_clean_kept(current))
            current = []
    chunks: list[str] = []
    for para in filter(None, paragraphs):
        if chunks and len(chunks[-1]) + 1 + len(para) <= max_chars:
            chunks[-1] += " " + para
        else:
            chunks.append(truncate(para, max_chars))
    return chunks


def doc_sections(docs_dir: Path, min_chars: int, max_chars: int) -> list[Passage]:
    """Passages from the non-FAQ documentation.

    Each section body (up to the next heading of any level) is cut at paragraph
    boundaries into chunks of at most ``max_chars``; chunks shorter than
    ``min_chars`` are dropped. Ids are ``<doc path>/<section>-<chunk>``.
    """
    passages: list[Passage] = []
    for path in sorted(docs_dir.rglob("*.rst.txt")):
        rel = path.relative_to(docs_dir).as_posix()
        if rel.split("/")[0] in SKIP_DIRS:
            continue
        lines = _read_lines(path)
        sections = find_sections(lines)
        for i, sec in enumerate(sections):
            end = sections[i + 1].start if i + 1 < len(sections) else len(lines)
            for j, chunk in enumerate(chunk_paragraphs(lines[sec.body_start:end], max_chars)):
                if len(chunk) >= min_chars:
                    passages.append(Passage(f"{rel[: -len('.rst.txt')]}/{i:03d}-{j:02d}", chunk))
    return passages


# ---------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------


def make_records(
    questions: list[Passage],
    pool: list[Passage],
    rank_range: tuple[int, int],
    num_negatives: int,
    strategy: str,
    seed: int,
) -> tuple[list[dict], dict]:
    """BM25-mined records for ``questions`` against ``pool`` (which holds their answers)."""
    corpus = {p.pid: p.text for p in pool}
    queries = {q.pid: q.question for q in questions}
    qrels = {q.pid: {q.pid: 1} for q in questions}
    negatives, stats = mine_hard_negatives(
        queries, corpus, qrels, method="bm25", rank_range=rank_range,
        num_negatives=num_negatives, seed=seed, strategy=strategy, show_progress=False,
    )
    records = []
    for q in questions:
        neg_ids = negatives[q.pid]
        records.append({
            "query": q.question,
            "pos": [q.text],
            "neg": [corpus[d] for d in neg_ids],
            "query_id": q.pid,
            "pos_ids": [q.pid],
            "neg_ids": neg_ids,
        })
    return records, stats.as_dict()


def bm25_answer_ranks(questions: list[Passage], pool: list[Passage]) -> list[int]:
    """0-based BM25 rank of each question's own answer in ``pool``."""
    index = {p.pid: i for i, p in enumerate(pool)}
    bm25 = BM25([p.text for p in pool])
    _, order = bm25.search([q.question for q in questions], top_k=len(pool))
    return [int(np.flatnonzero(row == index[q.pid])[0]) for q, row in zip(questions, order)]


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    """One JSON object per line, UTF-8, ``\\n`` line ends."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _package_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "python3.11-doc"],
            capture_output=True, text=True, check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


README = """\
# Python FAQ reranking data (default training set)

The bundled default data set of hf_ragtrain: questions from the official Python FAQ
paired with their answers, with BM25-mined hard negatives.

## Source and licence

Built from the reStructuredText sources of the Python 3.11 documentation as shipped by
Debian's `python3.11-doc` package (version {version}), files
`/usr/share/doc/python3.11/html/_sources/**/*.rst.txt`.
The Python documentation is Copyright (c) 2001-2023 Python Software Foundation and is
distributed under the PSF License Agreement (see
https://docs.python.org/3/license.html); code examples in it are also available under
the Zero-Clause BSD licence. These files are a derived, lightly cleaned extract.

## How it was built

    python scripts/build_default_data.py --seed {seed}

1. Every section of `faq/*.rst.txt` whose heading ends in `?` is a question; its body
   up to the next heading of the same or a higher level is the answer. Markup is
   cleaned lightly (roles such as `:func:` keep their text, directive lines such as
   `.. index::` and comments are dropped, whitespace is collapsed). Passages are cut at
   {max_chars} characters.
2. Distractor passages: {num_distractors} passages sampled (seed {seed}) out of
   {available} cut from the rest of the documentation (every folder except `faq/` and
   `whatsnew/`): each section body, up to the next heading, is split at paragraph
   boundaries into chunks of at most {max_chars} characters; chunks shorter than
   {min_chars} characters are dropped.
3. The questions are shuffled (seed {seed}) and split {train_n} train / {dev_n} dev.
4. Train negatives: BM25 (k1=0.9, b=0.4) over the train answers + distractors; the
   ranks are 0-based and count the positive; ranks 0-1 are skipped (likely unlabelled
   answers) and {train_negs} negatives are sampled (seed {seed}) from ranks 2-29.
5. Dev candidates: BM25 over all answers + distractors; the {dev_negs} best-ranked
   passages other than the answer, so each dev query reranks {dev_cands} passages
   (the answer is always among them even when BM25 misses it).

Running the command twice gives identical files.

## Counts

| file | records | negatives per record | passages in the BM25 pool |
| --- | --- | --- | --- |
| train.jsonl | {train_n} | {train_negs} ({train_short} records got fewer) | {train_pool} |
| dev.jsonl | {dev_n} | {dev_negs} ({dev_short} records got fewer) | {dev_pool} |

BM25 alone, over the dev pool, ranks the answer first for {bm25_top1} of the {dev_n} dev
questions and within the top {dev_cands} for {bm25_top30} (MRR@{dev_cands} = {bm25_mrr:.3f}).

## Format

One JSON object per line:

    {{"query": "How do I ...?", "pos": ["answer text"], "neg": ["passage", ...],
     "query_id": "faq/programming/012", "pos_ids": ["faq/programming/012"],
     "neg_ids": ["library/os/004-00", ...]}}

`pos` holds the one answer (label 1), `neg` the negatives (label 0) best BM25 rank
first. Ids are `faq/<file>/<n>` for FAQ answers (n-th question of that file) and
`<doc path>/<section index>-<chunk index>` for documentation passages.
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build train.jsonl, dev.jsonl and README.md."""
    parser = argparse.ArgumentParser(description="Build data/python_faq from the Python docs.")
    parser.add_argument("--docs_dir", type=Path, default=DEFAULT_DOCS)
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--num_distractors", type=int, default=3800)
    parser.add_argument("--min_chars", type=int, default=200)
    parser.add_argument("--max_chars", type=int, default=1500)
    parser.add_argument("--dev_fraction", type=float, default=0.2)
    parser.add_argument("--train_negatives", type=int, default=7)
    parser.add_argument("--dev_candidates", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    if not (args.docs_dir / "faq").is_dir():
        parser.error(f"{args.docs_dir}/faq not found: apt-get install python3.11-doc")

    pairs = faq_pairs(args.docs_dir, args.max_chars)
    sections = doc_sections(args.docs_dir, args.min_chars, args.max_chars)
    rng = random.Random(args.seed)
    distractors = sorted(rng.sample(sections, min(args.num_distractors, len(sections))),
                         key=lambda p: p.pid)
    shuffled = pairs[:]
    rng.shuffle(shuffled)
    n_dev = round(len(shuffled) * args.dev_fraction)
    dev_q = sorted(shuffled[:n_dev], key=lambda p: p.pid)
    train_q = sorted(shuffled[n_dev:], key=lambda p: p.pid)

    train_pool = train_q + distractors
    dev_pool = pairs + distractors
    train, train_stats = make_records(train_q, train_pool, (2, 30), args.train_negatives,
                                      "random", args.seed)
    dev, dev_stats = make_records(dev_q, dev_pool, (0, args.dev_candidates),
                                  args.dev_candidates - 1, "top", args.seed)

    ranks = bm25_answer_ranks(dev_q, dev_pool)
    cutoff = args.dev_candidates
    bm25_mrr = sum(1.0 / (r + 1) for r in ranks if r < cutoff) / max(len(ranks), 1)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.output_dir / "train.jsonl", train)
    write_jsonl(args.output_dir / "dev.jsonl", dev)
    readme = README.format(
        version=_package_version(), seed=args.seed, max_chars=args.max_chars,
        num_distractors=len(distractors), min_chars=args.min_chars, available=len(sections),
        train_n=len(train), dev_n=len(dev), train_negs=args.train_negatives,
        dev_negs=args.dev_candidates - 1, dev_cands=args.dev_candidates,
        train_short=train_stats["short"], dev_short=dev_stats["short"],
        train_pool=len(train_pool), dev_pool=len(dev_pool),
        bm25_top1=sum(r == 0 for r in ranks), bm25_top30=sum(r < cutoff for r in ranks),
        bm25_mrr=bm25_mrr,
    )
    (args.output_dir / "README.md").write_text(readme, encoding="utf-8")
    print(f"{len(pairs)} FAQ questions, {len(sections)} documentation passages "
          f"({len(distractors)} used as distractors)")
    print(f"train: {len(train)} records, {train_stats['negatives']} negatives "
          f"({train_stats['short']} short); dev: {len(dev)} records, "
          f"{dev_stats['negatives']} candidates besides the answer ({dev_stats['short']} short)")
    print(f"wrote {args.output_dir}/train.jsonl, dev.jsonl, README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
