"""The base encoder: states of [CLS] query [SEP] doc [SEP] pairs, their order, and their cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from maw_gym.base_encoder import DEFAULT_MODEL, BaseEncoder, ModelLoadError

QUERIES = ["who was aaron", "love thy neighbour", "bread", "the ark of noah", "a"]
DOCS = [
    "And Aaron the priest went up into mount Hor at the commandment of the LORD, and died there.",
    "Thou shalt love thy neighbour as thyself.",
    "Give us this day our daily bread.",
    "Make thee an ark of gopher wood.",
    "b",
]


@pytest.fixture(scope="module")
def encoder() -> BaseEncoder:
    return BaseEncoder(max_length=16, batch_size=2)


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache, so a first call really encodes whatever earlier runs left behind."""
    monkeypatch.setenv("MAW_GYM_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture
def forward_calls(encoder: BaseEncoder) -> Iterator[list[int]]:
    """One entry per forward pass of the encoder's model during the test."""
    calls: list[int] = []
    hook = encoder.model.register_forward_hook(lambda module, inputs, output: calls.append(1))
    yield calls
    hook.remove()


def test_states_match_the_model_on_padded_pairs(encoder: BaseEncoder, own_cache: Path) -> None:
    states, mask = encoder.encode_pairs(QUERIES, DOCS)
    assert states.shape == (5, 16, encoder.hidden_size) and states.dtype == np.float16
    assert mask.shape == (5, 16) and mask.dtype == bool
    assert encoder.hidden_size == 384

    tokens = encoder.tokenizer(
        QUERIES, DOCS, truncation="longest_first", max_length=16, padding="max_length",
        return_tensors="pt",
    )  # fmt: skip
    with torch.inference_mode():
        reference = encoder.model(**tokens).last_hidden_state.numpy()
    expected_mask = tokens["attention_mask"].numpy().astype(bool)
    np.testing.assert_array_equal(mask, expected_mask)
    assert mask[0].all() and mask[4].sum() == 5  # truncated to 16; "[CLS] a [SEP] b [SEP]"
    # Batched by length (order restored), padded per batch: real tokens agree, padding is 0.
    np.testing.assert_allclose(states[mask], reference[expected_mask], atol=2e-2)
    assert not states[~mask].any()
    # The pair layout the MAW layer expects.
    ids = tokens["input_ids"][2].tolist()
    assert encoder.tokenizer.decode(ids[: int(mask[2].sum())]) == (
        "[CLS] bread [SEP] give us this day our daily bread. [SEP]"
    )


def test_second_identical_call_does_no_encoder_work(
    encoder: BaseEncoder, own_cache: Path, forward_calls: list[int]
) -> None:
    calls = forward_calls
    states, mask = encoder.encode_pairs(QUERIES, DOCS)
    assert len(calls) == 3  # 5 pairs in batches of 2
    again_states, again_mask = encoder.encode_pairs(QUERIES, DOCS)
    assert len(calls) == 3
    np.testing.assert_array_equal(again_states, states)
    np.testing.assert_array_equal(again_mask, mask)
    assert sorted(path.name.split(".", 1)[1] for path in (own_cache / "states").iterdir()) == [
        "mask.npy",
        "states.npy",
    ]
    encoder.encode_pairs(QUERIES[:2], DOCS[:2])  # other texts: a new cache entry
    assert len(calls) == 4


def test_embeddings_are_normalised_mean_pools_and_cached(
    encoder: BaseEncoder, own_cache: Path, forward_calls: list[int]
) -> None:
    embedded = encoder.embed(DOCS)
    assert embedded.shape == (5, 384) and embedded.dtype == np.float32
    for i, text in enumerate(DOCS):  # each text alone, unpadded: the plain mean over tokens
        tokens = encoder.tokenizer([text], truncation=True, max_length=16, return_tensors="pt")
        with torch.inference_mode():
            mean = encoder.model(**tokens).last_hidden_state[0].mean(0)
        np.testing.assert_allclose(embedded[i], (mean / mean.norm()).numpy(), atol=1e-5)
    # Paraphrases are closer than unrelated texts (the bi-encoder's purpose).
    related = encoder.embed(["Love your neighbour as you love yourself."])[0]
    assert related @ embedded[1] > max(related @ embedded[j] for j in (0, 2, 3))
    calls = len(forward_calls)
    np.testing.assert_array_equal(encoder.embed(DOCS), embedded)
    assert len(forward_calls) == calls  # read back from the cache
    (cached,) = [p for p in (own_cache / "embeddings").iterdir() if p.stat().st_size > 4 * 384 * 2]
    cached.write_bytes(cached.read_bytes()[:100])  # truncated: rebuilt, not trusted
    np.testing.assert_array_equal(encoder.embed(DOCS), embedded)
    assert len(forward_calls) > calls


def test_model_id_names_the_packaged_model(encoder: BaseEncoder) -> None:
    name, content_hash = encoder.model_id.rsplit("-", 1)
    assert name == DEFAULT_MODEL and len(content_hash) == 16


def test_bad_arguments_fail_clearly(
    encoder: BaseEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="2 queries but 1 docs"):
        encoder.encode_pairs(["a", "b"], ["c"])
    with pytest.raises(ModelLoadError, match="no such directory"):
        BaseEncoder(tmp_path / "missing-model")

    import transformers

    def offline(name: str, **kwargs: object) -> None:
        raise OSError(f"We couldn't connect to the hub to load {name}")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(ModelLoadError, match=r"org/some-model.*pass a local model folder"):
        BaseEncoder("org/some-model")


def test_a_cache_miss_says_what_runs_and_why(
    encoder: BaseEncoder, own_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 19: each long stage opens with one line naming its work and the missing entry;
    a cache hit says nothing."""
    caplog.set_level(logging.INFO, logger="maw_gym")
    encoder.encode_pairs(QUERIES, DOCS, desc="pairs of the test")
    encoder.embed(DOCS, desc="documents of the test")
    encoder.encode_pairs(QUERIES, DOCS, desc="pairs of the test")
    encoder.embed(DOCS, desc="documents of the test")
    states, embeddings = caplog.messages
    assert states.startswith(f"states: encoding 5 pairs of the test (cache miss: {own_cache}")
    assert states.endswith(".states.npy)")
    assert embeddings.startswith("embeddings: embedding 5 documents of the test (cache miss: ")


def test_loading_the_model_prints_no_bar(capsys: pytest.CaptureFixture[str]) -> None:
    BaseEncoder(max_length=16)
    assert "Loading weights" not in capsys.readouterr().err


def test_bfloat16_states_are_close_and_keyed_apart(encoder: BaseEncoder, own_cache: Path) -> None:
    """The opt-in bfloat16 forward pass: within the tolerance docs/scale.md states (0.05 abs
    on every state value; measured 0.02 on nave-kjv), but not the float32 states, so its own
    cache entries (the precision is part of the model id)."""
    fast = BaseEncoder(max_length=16, batch_size=2, precision="bfloat16")
    assert fast.model_id == f"{encoder.model_id}-bfloat16"
    exact, mask = encoder.encode_pairs(QUERIES, DOCS)
    rounded, fast_mask = fast.encode_pairs(QUERIES, DOCS)
    np.testing.assert_array_equal(fast_mask, mask)
    difference = np.abs(rounded.astype(np.float32) - exact.astype(np.float32))
    assert 0 < difference.max() <= 0.05
    assert len(list((own_cache / "states").iterdir())) == 4  # two entries of two files
    with pytest.raises(ValueError, match=r"precision='float16': choose one of \['bfloat16'"):
        BaseEncoder(max_length=16, precision="float16")
