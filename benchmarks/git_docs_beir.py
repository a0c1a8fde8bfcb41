#!/usr/bin/env python
"""A BEIR folder built from git's own documentation (Debian package ``git-doc``): a third real corpus for
choosing domain-adaptation settings, next to the bundled Python FAQ and SciFact.

Every manual page of git (``git-add.txt``, ``gitglossary.txt``, ...) starts with a NAME line such as
``git-add - Add file contents to the index``. That one-line summary is the query; the passages of
the same page's DESCRIPTION section are its relevant documents. The corpus is every passage of every
page (cut at headings and blank lines by :func:`hf_ragtrain.data.documents.split_passages`) except the
NAME sections, so no query appears word for word in it. The queries are split in two by a seeded
shuffle: ``qrels/dev.tsv`` for choosing settings, ``qrels/test.tsv`` for final figures. Pages without a
NAME line or a DESCRIPTION section give no query (counted).

    apt-get download git-doc && dpkg -x git-doc_*.deb /tmp/git-doc
    python benchmarks/git_docs_beir.py --git_doc /tmp/git-doc/usr/share/doc/git-doc --output_dir runs/git_docs
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

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


def write_beir(out: Path, corpus: dict, queries: dict, qrels: dict, seed: int) -> dict[str, int]:
    """Write the folder; the queries are split half dev, half test. Returns the size of each split."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc_id, doc in corpus.items():
            f.write(json.dumps({"_id": doc_id, **doc}) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    qids = sorted(queries)
    random.Random(seed).shuffle(qids)
    splits = {"dev": sorted(qids[: len(qids) // 2]), "test": sorted(qids[len(qids) // 2:])}
    for split, members in splits.items():
        with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid in members:
                for doc_id, score in qrels[qid].items():
                    f.write(f"{qid}\t{doc_id}\t{score}\n")
    return {split: len(members) for split, members in splits.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--git_doc", required=True, help="the folder holding git-add.txt etc. (usr/share/doc/git-doc)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    corpus, queries, qrels, counts = build(Path(args.git_doc))
    if not queries:
        raise SystemExit(f"{args.git_doc}: no page with a NAME line and a DESCRIPTION section; is it git-doc's folder?")
    sizes = write_beir(Path(args.output_dir), corpus, queries, qrels, args.seed)
    relevant = sum(len(r) for r in qrels.values())
    print(f"{len(corpus)} passages, {len(queries)} queries ({sizes['dev']} dev, {sizes['test']} test), "
          f"{relevant} relevant passages; " + ", ".join(f"{v} {k}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
