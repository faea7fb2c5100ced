"""Write BEIR's dict contract back to a BEIR folder, e.g. a tiny dataset for a test.

The files come out as beir's loader and :mod:`maw_gym.data.validate` expect them: one JSON
object per line (``title`` only where given), and ``qrels/{split}.tsv`` with a header line.
"""

from __future__ import annotations

import json
from pathlib import Path

from maw_gym.cache import atomic_path
from maw_gym.data.validate import CORPUS_FILE, QRELS_FOLDER, QUERIES_FILE


def write_beir_folder(
    root: Path,
    corpus: dict[str, dict[str, str]],
    queries: dict[str, str],
    qrels: dict[str, dict[str, dict[str, int]]],
    query_metadata: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Write ``corpus``, ``queries`` and ``qrels`` (split -> query id -> doc id -> grade), and
    each query's ``metadata`` where ``query_metadata`` gives one (e.g. ``{"task": "web"}``)."""
    root = Path(root)
    metadata = query_metadata or {}
    corpus_lines = [json.dumps({"_id": doc_id, **doc}) for doc_id, doc in corpus.items()]
    query_lines = [
        json.dumps(
            {"_id": qid, "text": text, **({"metadata": metadata[qid]} if qid in metadata else {})}
        )
        for qid, text in queries.items()
    ]
    _write_lines(root / CORPUS_FILE, corpus_lines)
    _write_lines(root / QUERIES_FILE, query_lines)
    for split, judged in qrels.items():
        rows = [
            f"{qid}\t{doc_id}\t{grade}"
            for qid, docs in judged.items()
            for doc_id, grade in docs.items()
        ]
        _write_lines(root / QRELS_FOLDER / f"{split}.tsv", ["query-id\tcorpus-id\tscore", *rows])
    return root


def _write_lines(path: Path, lines: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
