"""Checks a BEIR folder's files before beir's loader reads them.

beir's ``GenericDataLoader`` fails on bad input with a bare ``KeyError`` or ``JSONDecodeError``
(no file, no line), silently keeps ``None`` for a missing text, silently drops a qrels file's
first row whatever it is, and lets a later duplicate id overwrite an earlier one. These checks
read the same files the same way (one JSON object per line; tab-separated qrels read with
``csv`` and a header line) and fail with the file, the line and what was expected.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_FOLDER = "qrels"


class DatasetError(ValueError):
    """A BEIR folder, file or line that is not what the BEIR format expects."""


def check_jsonl(path: Path, optional_text_fields: tuple[str, ...] = ()) -> set[str]:
    """Validate a BEIR ``corpus.jsonl``/``queries.jsonl``; return its ids.

    Every line must be a JSON object with a non-empty string ``_id`` (unique in the file) and a
    string ``text``; ``optional_text_fields`` (the corpus's ``title``) must be strings when
    present.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (a BEIR folder needs {path.name})")
    first_line: dict[str, int] = {}
    for line_number, line in enumerate(utf8_lines(path), start=1):
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{where}: not a JSON object ({error.msg})") from None
        except RecursionError:
            raise DatasetError(f"{where}: not a JSON object (nested too deeply)") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
        doc_id = record.get("_id")
        if not isinstance(doc_id, str) or not doc_id:
            raise DatasetError(f"{where}: expected a non-empty string '_id', got {doc_id!r}")
        if not isinstance(record.get("text"), str):
            raise DatasetError(f"{where}: id {doc_id!r} has no string 'text'")
        for field in optional_text_fields:
            if field in record and not isinstance(record[field], str | None):
                raise DatasetError(f"{where}: id {doc_id!r} has a non-string {field!r}")
        if doc_id in first_line:
            raise DatasetError(
                f"{where}: duplicate id {doc_id!r} (first on line {first_line[doc_id]})"
            )
        first_line[doc_id] = line_number
    if not first_line:
        raise DatasetError(f"{path}: empty file")
    return set(first_line)


def check_qrels(path: Path, query_ids: set[str], doc_ids: set[str]) -> None:
    """Validate a BEIR ``qrels/{split}.tsv`` against the ids of the queries and the corpus.

    The first row must be a header (beir skips it unread); every other row must be
    ``query-id<TAB>corpus-id<TAB>integer score >= 0`` naming an existing query and document,
    and a (query, document) pair may not be judged twice with different scores. BEIR's grades
    are non-negative (0 = judged not relevant), so a negative one is refused rather than
    silently treated as 0; a split without a single grade above 0 is refused too, since every
    metric on it would be 0.
    """
    reader = csv.reader(utf8_lines(path), delimiter="\t", quoting=csv.QUOTE_MINIMAL)
    header = next(reader, None)
    if header is None:
        raise DatasetError(f"{path}: empty file (expected a header line)")
    if len(header) == 3 and _is_int(header[2]):
        raise DatasetError(
            f"{path}:1: expected a header line 'query-id\\tcorpus-id\\tscore', got a "
            "judgment (beir skips the first line, so it would be lost)"
        )
    scores: dict[tuple[str, str], int] = {}
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if len(row) != 3:
            raise DatasetError(
                f"{where}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                f"got {len(row)}: {row!r}"
            )
        query_id, doc_id, score_text = row
        if not _is_int(score_text):
            raise DatasetError(f"{where}: score {score_text!r} is not an integer")
        if query_id not in query_ids:
            raise DatasetError(f"{where}: query {query_id!r} is not in {QUERIES_FILE}")
        if doc_id not in doc_ids:
            raise DatasetError(f"{where}: document {doc_id!r} is not in {CORPUS_FILE}")
        score = int(score_text)
        if score < 0:
            raise DatasetError(
                f"{where}: score {score} is negative; BEIR grades are 0 (not relevant) or "
                "more (relevant)"
            )
        if scores.setdefault((query_id, doc_id), score) != score:
            raise DatasetError(
                f"{where}: ({query_id!r}, {doc_id!r}) judged again with a different score"
            )
    if not any(score > 0 for score in scores.values()):
        raise DatasetError(
            f"{path}: no relevant judgment (no score above 0); nothing on this split can be "
            "evaluated"
        )


def utf8_lines(path: Path) -> Iterator[str]:
    """The lines of ``path`` (ends kept), decoded one by one, so that a byte that is not UTF-8
    is a DatasetError naming its line (Python's message names neither file nor line)."""
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DatasetError(
                    f"{path}:{line_number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column "
                    f"{error.start + 1}); BEIR files are UTF-8 text"
                ) from None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
