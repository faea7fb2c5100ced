"""The one place that calls beir's ``GenericDataLoader``: BEIR folders in, :class:`Split` out.

BEIR's data contract is kept at the boundary (``corpus: dict[str, dict[str, str]]``,
``queries: dict[str, str]``, ``qrels: dict[str, dict[str, int]]``), but files are validated
first (see :mod:`maw_gym.data.validate`) and each corpus is parsed once per process and shared
by every split of its folder, since it is by far the largest file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from maw_gym.cache import file_hash, stable_hash
from maw_gym.data.sources import resolve_dataset
from maw_gym.data.validate import (
    CORPUS_FILE,
    QRELS_FOLDER,
    QUERIES_FILE,
    DatasetError,
    check_jsonl,
    check_qrels,
)


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a BEIR dataset: every split of a folder shares one ``corpus`` dict.

    Treat the dicts as read-only: splits are memoised per process, so a change would be seen
    by every later :func:`load_split` of the same folder. Splits compare and hash by identity
    (comparing corpora would be slow); ``fingerprint`` says whether two hold the same data.
    """

    dataset: str
    """The name it was loaded by (e.g. ``"nave-kjv"``), or the resolved folder path."""
    name: str
    """The split: ``"train"``, ``"dev"``, ``"test"``, ... (``qrels/{name}.tsv``)."""
    corpus: dict[str, dict[str, str]] = field(repr=False)
    """doc id -> ``{"title": ..., "text": ...}`` (a missing title is ``""``)."""
    queries: dict[str, str] = field(repr=False)
    """query id -> text, for the queries judged in this split, in qrels order."""
    qrels: dict[str, dict[str, int]] = field(repr=False)
    """query id -> doc id -> relevance grade."""
    fingerprint: str
    """Hash of the dataset's files, the split and its query ids: the cache key of its results."""
    corpus_fingerprint: str = ""
    """Hash of the corpus file (the cache key of corpus-level work such as a BM25 index);
    empty for a hand-built split, see :meth:`corpus_key`."""

    def __len__(self) -> int:
        return len(self.queries)

    def corpus_key(self) -> str:
        """``corpus_fingerprint``, or a hash of the corpus's contents for a hand-built split."""
        return self.corpus_fingerprint or stable_hash(sorted(self.corpus.items()))

    def sample(self, n: int | None, seed: int = 0) -> Split:
        """``n`` of this split's queries, the same ones for the same ``seed`` on any machine.

        The sorted query ids are permuted by ``numpy.random.default_rng(seed)`` and the first
        ``n`` kept (in this split's order); ``None`` or ``n >= len(self)`` returns ``self``.
        """
        if n is None or n >= len(self.queries):
            return self
        if n < 0:
            raise ValueError(f"sample size n={n}: expected None or a non-negative integer")
        ids = sorted(self.queries)
        chosen = {ids[index] for index in np.random.default_rng(seed).permutation(len(ids))[:n]}
        queries = {qid: text for qid, text in self.queries.items() if qid in chosen}
        return replace(
            self,
            queries=queries,
            qrels={qid: dict(self.qrels[qid]) for qid in queries},
            fingerprint=stable_hash(self.fingerprint, sorted(chosen)),
        )


@dataclass(frozen=True)
class _Folder:
    """What every split of a folder shares, parsed once per process."""

    corpus: dict[str, dict[str, str]]
    corpus_hash: str
    queries_hash: str
    query_ids: frozenset[str]


_FOLDERS: dict[Path, _Folder] = {}
_SPLITS: dict[tuple[Path, str], Split] = {}


def available_splits(root: Path) -> list[str]:
    """The splits of a BEIR folder: the names of its ``qrels/*.tsv`` files, sorted."""
    return sorted(path.stem for path in (Path(root) / QRELS_FOLDER).glob("*.tsv"))


def load_split(dataset: str | Path, split: str) -> Split:
    """Load one split of a dataset (a name or a BEIR folder, see ``resolve_dataset``).

    Memoised per (folder, split); queries without judgments in this split are dropped, as
    beir's loader does.
    """
    root = resolve_dataset(dataset)
    key = (root, split)
    if key not in _SPLITS:
        _SPLITS[key] = _load(root, split, dataset_label=_label(dataset, root))
    return _SPLITS[key]


def _label(dataset: str | Path, root: Path) -> str:
    return str(root) if Path(dataset).expanduser().is_dir() else str(dataset)


def _load(root: Path, split: str, dataset_label: str) -> Split:
    from beir.datasets.data_loader import GenericDataLoader

    splits = available_splits(root)
    if split not in splits:
        raise DatasetError(
            f"{root / QRELS_FOLDER}: no split {split!r} (no {split}.tsv); "
            f"splits here: {', '.join(splits) or 'none'}"
        )
    folder = _folder(root)
    qrels_path = root / QRELS_FOLDER / f"{split}.tsv"
    check_qrels(qrels_path, set(folder.query_ids), set(folder.corpus))

    loader = GenericDataLoader(data_folder=str(root))
    loader.corpus = folder.corpus  # already parsed: beir's load() skips a non-empty corpus
    _, queries, qrels = loader.load(split=split)
    return Split(
        dataset=dataset_label,
        name=split,
        corpus=folder.corpus,
        queries=queries,
        qrels=qrels,
        fingerprint=stable_hash(
            folder.corpus_hash, folder.queries_hash, file_hash(qrels_path), split, sorted(queries)
        ),
        corpus_fingerprint=folder.corpus_hash,
    )


def _folder(root: Path) -> _Folder:
    if root not in _FOLDERS:
        from beir.datasets.data_loader import GenericDataLoader

        corpus_path, queries_path = root / CORPUS_FILE, root / QUERIES_FILE
        check_jsonl(corpus_path, optional_text_fields=("title",))
        query_ids = check_jsonl(queries_path)
        corpus = GenericDataLoader(data_folder=str(root)).load_corpus()
        for doc in corpus.values():
            if doc["title"] is None:  # beir keeps None for a missing title; the contract is str
                doc["title"] = ""
        _FOLDERS[root] = _Folder(
            corpus=corpus,
            corpus_hash=file_hash(corpus_path),
            queries_hash=file_hash(queries_path),
            query_ids=frozenset(query_ids),
        )
    return _FOLDERS[root]
