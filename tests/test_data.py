"""The BEIR data layer: loading, validation errors (file and line), splits, sampling, nave-kjv."""

from __future__ import annotations

from pathlib import Path

import pytest

from maw_gym.data import (
    DatasetError,
    available_splits,
    load_split,
    resolve_dataset,
    write_beir_folder,
)

CORPUS = {
    "d1": {"title": "Camels", "text": "A camel crosses the desert."},
    "d2": {"title": "Ships", "text": "A ship crosses the sea."},
    "d3": {"text": "Bread and wine at the feast."},
}
QUERIES = {"q1": "desert animal", "q2": "sea travel", "q3": "a feast"}
QRELS = {"test": {"q1": {"d1": 1}, "q2": {"d2": 1}}, "dev": {"q3": {"d3": 2}}}


def write_beir(root: Path, **overrides: dict) -> Path:
    """The tiny valid dataset above in ``root``, with ``corpus``/``queries``/``qrels`` replaced."""
    parts = {"corpus": CORPUS, "queries": QUERIES, "qrels": QRELS, **overrides}
    return write_beir_folder(root, **parts)


def test_loads_a_beir_folder_and_drops_unjudged_queries(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "tiny")
    test = load_split(root, "test")
    assert test.dataset == str(root.resolve())
    assert test.queries == {"q1": "desert animal", "q2": "sea travel"}
    assert test.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    assert set(test.corpus) == {"d1", "d2", "d3"}
    assert test.corpus["d3"] == {"title": "", "text": "Bread and wine at the feast."}
    assert load_split(root, "test") is test
    dev = load_split(root, "dev")
    assert dev.corpus is test.corpus  # parsed once, shared between splits
    assert dev.qrels == {"q3": {"d3": 2}}
    assert available_splits(root) == ["dev", "test"]


def test_fingerprint_follows_content_not_location(tmp_path: Path) -> None:
    first = load_split(write_beir(tmp_path / "a"), "test")
    same = load_split(write_beir(tmp_path / "b"), "test")
    other = load_split(write_beir(tmp_path / "c", qrels={"test": {"q1": {"d2": 1}}}), "test")
    assert first.fingerprint == same.fingerprint
    assert first.corpus_fingerprint == other.corpus_fingerprint
    assert first.fingerprint != other.fingerprint


def test_unknown_split_names_the_existing_ones(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "tiny")
    with pytest.raises(DatasetError, match=r"no split 'train'.*splits here: dev, test"):
        load_split(root, "train")


def _replace_line(path: Path, line_number: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[line_number - 1] = text + "\n"
    path.write_text("".join(lines))


@pytest.mark.parametrize(
    ("file", "line_number", "text", "expected"),
    [
        ("corpus.jsonl", 2, '{"_id": "d2", "text": ', r"corpus\.jsonl:2: not a JSON object"),
        ("corpus.jsonl", 2, '["d2", "text"]', r"corpus\.jsonl:2: expected a JSON object"),
        (
            "corpus.jsonl",
            3,
            '{"text": "no id"}',
            r"corpus\.jsonl:3: expected a non-empty string '_id'",
        ),
        ("corpus.jsonl", 1, '{"_id": 7, "text": "int id"}', r"corpus\.jsonl:1: .*'_id', got 7"),
        (
            "corpus.jsonl",
            2,
            '{"_id": "d2", "title": "x"}',
            r"corpus\.jsonl:2: id 'd2' has no string 'text'",
        ),
        (
            "corpus.jsonl",
            3,
            '{"_id": "d1", "text": "again"}',
            r"corpus\.jsonl:3: duplicate id 'd1' \(first on line 1\)",
        ),
        ("queries.jsonl", 2, "", r"queries\.jsonl:2: not a JSON object"),
        ("queries.jsonl", 3, '{"_id": "q3"}', r"queries\.jsonl:3: id 'q3' has no string 'text'"),
        ("qrels/test.tsv", 1, "q1\td1\t1", r"test\.tsv:1: expected a header line"),
        ("qrels/test.tsv", 2, "q1\td1", r"test\.tsv:2: expected 3 tab-separated columns"),
        ("qrels/test.tsv", 3, "q2\td2\t1\textra", r"test\.tsv:3: expected 3 tab-separated columns"),
        (
            "qrels/test.tsv",
            2,
            "q1\td1\trelevant",
            r"test\.tsv:2: score 'relevant' is not an integer",
        ),
        ("qrels/test.tsv", 2, "q9\td1\t1", r"test\.tsv:2: query 'q9' is not in queries\.jsonl"),
        ("qrels/test.tsv", 3, "q2\td9\t1", r"test\.tsv:3: document 'd9' is not in corpus\.jsonl"),
        ("qrels/test.tsv", 3, "q1\td1\t0", r"test\.tsv:3: \('q1', 'd1'\) judged again"),
    ],
)
def test_broken_files_fail_with_file_and_line(
    tmp_path: Path, file: str, line_number: int, text: str, expected: str
) -> None:
    root = write_beir(tmp_path / "broken")
    _replace_line(root / file, line_number, text)
    with pytest.raises(DatasetError, match=expected):
        load_split(root, "test")


def test_missing_files_are_named(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "no-queries")
    (root / "queries.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"queries\.jsonl: file not found"):
        load_split(root, "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: not a BEIR folder \(no corpus\.jsonl\)"):
        load_split(tmp_path / "empty", "test")


def test_unknown_dataset_name_lists_what_exists() -> None:
    with pytest.raises(DatasetError, match=r"'no-such-set': not a folder.*nave-kjv.*scifact"):
        resolve_dataset("no-such-set")


def test_beir_name_offline_says_how_to_bring_the_zip(monkeypatch: pytest.MonkeyPatch) -> None:
    import beir.util
    import requests

    def unreachable(url: str, out_dir: str) -> str:
        raise requests.ConnectionError(f"Failed to resolve host for {url}")

    monkeypatch.setattr(beir.util, "download_and_unzip", unreachable)
    with pytest.raises(
        DatasetError, match=r"'scifact': could not download .*scifact\.zip.*--dataset"
    ):
        resolve_dataset("scifact")


def test_sample_is_deterministic_and_leaves_the_split_alone(tmp_path: Path) -> None:
    queries = {f"q{i:02d}": f"query {i}" for i in range(40)}
    qrels = {"test": {qid: {"d1": 1} for qid in queries}}
    split = load_split(write_beir(tmp_path / "many", queries=queries, qrels=qrels), "test")
    before = dict(split.queries)

    five = split.sample(5, seed=3)
    assert set(five.queries) == set(split.sample(5, seed=3).queries)
    assert set(five.queries) != set(split.sample(5, seed=4).queries)
    assert len(five.queries) == 5 and set(five.qrels) == set(five.queries)
    assert five.corpus is split.corpus
    assert five.fingerprint not in (split.fingerprint, split.sample(5, seed=4).fingerprint)
    # The documented rule, so another implementation can reproduce it.
    import numpy as np

    ids = sorted(split.queries)
    assert set(five.queries) == {ids[i] for i in np.random.default_rng(3).permutation(40)[:5]}

    assert split.sample(None) is split and split.sample(40) is split
    assert split.queries == before and len(split.qrels) == 40
    with pytest.raises(ValueError, match="n=-1"):
        split.sample(-1)


def test_embedded_nave_kjv_matches_its_readme() -> None:
    counts = {"train": (4280, 69840), "dev": (560, 8884), "test": (1139, 17152)}
    splits = {name: load_split("nave-kjv", name) for name in counts}
    for name, (n_queries, n_judgments) in counts.items():
        split = splits[name]
        assert split.dataset == "nave-kjv"
        assert len(split.queries) == n_queries
        assert sum(len(judged) for judged in split.qrels.values()) == n_judgments
        assert split.corpus is splits["test"].corpus
    assert len(splits["test"].corpus) == 31102
    assert splits["test"].corpus["Gen.1.1"]["text"].startswith("In the beginning God created")
    root = resolve_dataset("nave-kjv")
    assert root.name.startswith("nave-kjv-") and available_splits(root) == ["dev", "test", "train"]
