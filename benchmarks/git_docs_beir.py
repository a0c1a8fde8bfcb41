#!/usr/bin/env python
"""A BEIR folder built from git's own documentation (Debian package ``git-doc``): a third real corpus for
choosing domain-adaptation settings, next to the bundled Python FAQ and SciFact.

Every manual page of git (``git-add.txt``, ``gitglossary.txt``, ...) starts with a NAME line such as
``git-add - Add file contents to the index``. That one-line summary is the query; the passages of
the same page's DESCRIPTION section are its relevant documents. The corpus is every passage of every
page (cut at headings and blank lines by :func:`hf_ragtrain.data.documents.split_passages`) except the
NAME sections, so no query appears word for word in it. The queries are split in two by a seeded
shuffle: ``qrels/dev.tsv`` for choosing settings, ``qrels/test.tsv`` for final figures. Pages without their own
NAME line or a DESCRIPTION section give no query (counted).

    apt-get download git-doc && dpkg -x git-doc_*.deb /tmp/git-doc
    python benchmarks/git_docs_beir.py --git_doc /tmp/git-doc/usr/share/doc/git-doc --output_dir runs/git_docs
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from hf_ragtrain.data.beir import write_beir  # noqa: E402
from hf_ragtrain.data.documents import split_passages  # noqa: E402

_NAME_LINE = re.compile(r"^(git[\w.-]*)\s+-\s+(.+)$")


def page_query(passages: list[tuple[str, str]], page: str) -> str | None:
    """The NAME section's summary (``git-add - Add file contents`` -> ``Add file contents``) when it names
    ``page`` itself (a tutorial's example manual page does not count), or None."""
    for heading, text in passages:
        if heading.upper() == "NAME":
            match = _NAME_LINE.match(text.strip())
            return match.group(2).strip() if match and match.group(1) == page else None
    return None


def build(git_doc: Path) -> tuple[dict, dict, dict, dict]:
    """``corpus`` ``{id: {title, text}}``, ``queries`` ``{qid: text}``, ``qrels`` ``{qid: {doc id: 1}}`` and
    the counts of what was left out."""
    corpus, queries, qrels = {}, {}, {}
    counts = {"pages": 0, "pages without their own NAME line": 0, "pages without a DESCRIPTION": 0}
    for path in sorted(git_doc.glob("*.txt")):
        passages = list(split_passages(path.read_text(encoding="utf-8"), max_words=200))
        query = page_query(passages, path.stem)
        counts["pages"] += 1
        relevant = []
        for n, (heading, text) in enumerate(passages):
            if heading.upper() == "NAME":
                continue
            doc_id = f"{path.stem}#{n}"
            corpus[doc_id] = {"title": f"{path.stem}: {heading}" if heading else path.stem, "text": text}
            if heading.upper() == "DESCRIPTION":
                relevant.append(doc_id)
        if query is None:
            counts["pages without their own NAME line"] += 1
        elif not relevant:
            counts["pages without a DESCRIPTION"] += 1
        else:
            queries[path.stem] = query
            qrels[path.stem] = {d: 1 for d in relevant}
    return corpus, queries, qrels, counts


def split_queries(queries: dict, seed: int) -> dict[str, list[str]]:
    """The query ids, shuffled by ``seed`` and cut in two: ``{"dev": [...], "test": [...]}``, each sorted."""
    qids = sorted(queries)
    random.Random(seed).shuffle(qids)
    return {"dev": sorted(qids[: len(qids) // 2]), "test": sorted(qids[len(qids) // 2:])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--git_doc", required=True, help="the folder holding git-add.txt etc. (usr/share/doc/git-doc)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    corpus, queries, qrels, counts = build(Path(args.git_doc))
    if not queries:
        raise SystemExit(f"{args.git_doc}: no page with a NAME line and a DESCRIPTION section; is it git-doc's folder?")
    splits = split_queries(queries, args.seed)
    write_beir(args.output_dir, corpus, queries, {s: {q: qrels[q] for q in ids} for s, ids in splits.items()})
    sizes = {s: len(ids) for s, ids in splits.items()}
    relevant = sum(len(r) for r in qrels.values())
    print(f"{len(corpus)} passages, {len(queries)} queries ({sizes['dev']} dev, {sizes['test']} test), "
          f"{relevant} relevant passages; " + ", ".join(f"{v} {k}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
