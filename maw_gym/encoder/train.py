"""Train every reranker an encoder directory holds, resumably, and load them back.

An encoder directory holds ``checkpoint.pt`` (the state dicts and constructor arguments of each
model), ``config.json`` (preset, dataset fingerprints, base model id, seeds, dev metrics,
timings and the content hash) and, while training, one ``progress-<model>.pt`` per model
written after every epoch, so an interrupted ``maw-gym encoder train`` resumes where it
stopped; a finished directory is reused as it is.

Every model trains on the encoder-train part of the train split only: the preset's
``router_fraction`` of it is held out as the router-train split, whose tables the routers learn
from (``maw_gym.pipeline.router_queries``).

Models (all on the same frozen base-encoder states):

- ``maw``: one MAW layer trained with the preset's depth levers (``depth_heads``,
  ``temperature_spread``, ``locality``, ``specialisation``, ``diversity_weight``; the encoder the
  tables use);
- ``maw_random``: the same trained with a random depth per query (the prototypes' design, for
  comparison in the report);
- ``nonmaw_0 … nonmaw_{k-1}``: the NON-MAW twin and its seed controls (``preset.seed_controls``
  seeds; ``nonmaw_0`` is the twin);
- ``stack``: a ``preset.layers``-layer MAW stack for ``MAW/LayerwiseDepth`` (if layers > 1).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from maw_gym.cache import (
    CORRUPT_ERRORS,
    atomic_path,
    cache_dir,
    locked,
    make_dirs,
    read_json,
    slug,
    stable_hash,
    write_json,
)
from maw_gym.device import resolve_device
from maw_gym.encoder.reranker import MAWReranker, TrainConfig, train_reranker
from maw_gym.pipeline import (
    SplitInputs,
    encoder_and_router_parts,
    split_fingerprint,
    split_inputs,
)
from maw_gym.presets import Preset

logger = logging.getLogger(__name__)

#: Bump when training changes in a way that makes old encoders stale.
ENCODER_VERSION = 4
#: The layer-2 observation is computed once per layer-1 depth (D times the layer-1 cost), so it
#: averages over fewer top candidates than layer 1's (``MAWReranker.observe_candidates``).
LAYER2_OBSERVE_CANDIDATES = 2


def model_specs(preset: Preset, hidden: int, seed: int) -> dict[str, tuple[dict, TrainConfig]]:
    """name -> (MAWReranker kwargs, TrainConfig) of every model an encoder directory holds."""
    shape = {
        "hidden": hidden,
        "heads": preset.heads,
        "depth": preset.depth,
        "head_dim": preset.head_dim,
        "pool": preset.pool,
    }
    base = TrainConfig(epochs=preset.epochs, seed=seed)
    levers = {
        "depth_heads": preset.depth_heads,
        "temperature_spread": preset.temperature_spread,
    }
    # Levers added after encoder version 4 enter the kwargs only when set, so the encoders
    # trained before them keep their cache keys.
    if preset.locality:
        levers["locality"] = preset.locality
    if preset.semantic:
        shape["semantic"] = True  # every model, the NON-MAW twin and seeds included
    specs: dict[str, tuple[dict, TrainConfig]] = {
        "nonmaw_0": ({**shape, "attention": "nonmaw"}, base),
        "maw": (
            {**shape, "attention": "maw", **levers},
            dataclasses.replace(
                base,
                specialisation=preset.specialisation,
                diversity_weight=preset.diversity_weight,
            ),
        ),
        "maw_random": (
            {**shape, "attention": "maw", "router": False},
            dataclasses.replace(base, specialisation="random"),
        ),
    }
    for index in range(1, preset.seed_controls):
        specs[f"nonmaw_{index}"] = (
            {**shape, "attention": "nonmaw"},
            dataclasses.replace(base, seed=seed + index),
        )
    if preset.layers > 1:
        specs["stack"] = (
            {
                **shape,
                "attention": "maw",
                "layers": preset.layers,
                "router": False,
                "observe_candidates": LAYER2_OBSERVE_CANDIDATES,
            },
            dataclasses.replace(base, specialisation="random"),
        )
    return specs


@functools.lru_cache(maxsize=4)
def base_model_id(max_length: int) -> str:
    """The default base encoder's id (loading it once per process)."""
    from maw_gym.base_encoder import BaseEncoder

    return BaseEncoder(max_length=max_length).model_id


def model_settings(preset: Preset, seed: int) -> dict[str, Any]:
    """Every model's full constructor and training settings, defaults included: a changed
    default (``observe_candidates``, ``init_noise``, a learning rate, ...) changes the tables,
    so it must change the cache key, not only ``ENCODER_VERSION``. ``hidden`` is left out: it
    follows the base model, which the key names."""
    defaults = {
        p.name: p.default
        for p in inspect.signature(MAWReranker.__init__).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    return {
        name: {"model": {**defaults, **kwargs, "hidden": None}, "train": asdict(train_config)}
        for name, (kwargs, train_config) in model_specs(preset, 0, seed).items()
    }


def encoder_config(dataset: str, preset: Preset, seed: int = 0) -> dict[str, Any]:
    """What an encoder is a function of (its directory name hashes this)."""
    name, train_fp = split_fingerprint(dataset, "train", preset)
    _, dev_fp = split_fingerprint(dataset, "dev", preset)
    return {
        "version": ENCODER_VERSION,
        "dataset": name,
        "train_fingerprint": train_fp,
        "dev_fingerprint": dev_fp,
        "preset": preset.to_dict(),
        "base_model": base_model_id(preset.max_length),
        "seed": seed,
        "models": model_settings(preset, seed),
    }


def default_encoder_dir(config: dict[str, Any]) -> Path:
    """cache_dir("encoders", "<dataset slug>-<preset>-<hash of config>"): under the cache root
    even for a dataset given as an absolute folder (the config holds its full path)."""
    name = f"{slug(config['dataset'])}-{config['preset']['name']}-{stable_hash(config)}"
    return cache_dir("encoders", name)


def state_hash(states: dict[str, dict[str, torch.Tensor]]) -> str:
    """Content hash of every model's state dict (names and tensor bytes, in sorted order)."""
    items: list[bytes] = []
    for model_name in sorted(states):
        for key in sorted(states[model_name]):
            tensor = states[model_name][key].detach().cpu().contiguous()
            items.append(f"{model_name}/{key}".encode() + tensor.numpy().tobytes())
    return stable_hash(*items)


@dataclass
class TrainedEncoder:
    """A finished encoder directory, loaded (every model in eval mode)."""

    directory: Path
    config: dict[str, Any]
    models: dict[str, MAWReranker]

    @property
    def content_hash(self) -> str:
        return str(self.config["content_hash"])

    @property
    def nonmaw_names(self) -> list[str]:
        return sorted(
            (n for n in self.models if n.startswith("nonmaw_")), key=lambda n: int(n.split("_")[1])
        )

    @classmethod
    def load(cls, directory: Path, device: str = "cpu") -> TrainedEncoder:
        """Load and verify a finished directory, every model on ``device`` in eval mode;
        anything wrong is a ``ValueError`` naming the file (a missing one: FileNotFoundError)."""
        directory = Path(directory)
        config, states = read_verified(directory)
        models = {}
        for name, state in states.items():
            model = MAWReranker(**config["architectures"][name])
            model.load_state_dict(state)
            models[name] = model.to(resolve_device(device)).eval()
        return cls(directory=directory, config=config, models=models)


def read_verified(directory: Path) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """(config, state dicts) of a finished encoder directory, checked against the content hash:
    a truncated, bit-flipped or foreign ``checkpoint.pt`` or ``config.json`` raises, naming it."""
    config_path, checkpoint_path = directory / "config.json", directory / "checkpoint.pt"
    if not config_path.exists() or not checkpoint_path.exists():
        raise FileNotFoundError(
            f"{directory}: not a finished encoder directory (expected "
            "config.json and checkpoint.pt; run `maw-gym encoder train`)"
        )
    config = read_json(config_path)
    if not isinstance(config, dict) or "content_hash" not in config:
        raise ValueError(f"{config_path}: no content_hash; not an encoder config")
    try:
        states = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["models"]
    except CORRUPT_ERRORS as error:
        raise ValueError(f"{checkpoint_path}: unreadable ({error}); the file is corrupt") from None
    if state_hash(states) != config["content_hash"]:
        raise ValueError(
            f"{checkpoint_path}: content hash differs from config.json's "
            f"{config['content_hash']}; the checkpoint is corrupt or stale"
        )
    return config, states


def _train_one(
    name: str,
    kwargs: dict,
    train_config: TrainConfig,
    train: SplitInputs,
    dev: SplitInputs,
    directory: Path,
    *,
    device: str,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Train (or resume, or reuse) one model; returns its best state dict and its log."""
    progress = directory / f"progress-{name}.pt"
    resume = None
    if progress.exists():
        try:
            resume = torch.load(progress, map_location="cpu", weights_only=False)
        except CORRUPT_ERRORS as error:
            logger.warning("%s: unreadable (%s); training %s from scratch", progress, error, name)
    torch.manual_seed(train_config.seed)
    model = MAWReranker(**kwargs).to(resolve_device(device))

    def save(payload: dict) -> None:
        with atomic_path(progress) as tmp:
            torch.save(payload, tmp)

    started = time.perf_counter()
    state = train_reranker(model, train, dev, train_config, name=name, resume=resume, on_epoch=save)
    log = {
        "dev_ndcg10": state.best_metric,
        "epochs": state.epoch,
        "history": state.history,
        "seconds_this_run": time.perf_counter() - started,
        "train_config": dataclasses.asdict(train_config),
    }
    return model.state_dict(), log


def train_encoder(
    dataset: str, preset: Preset, out: Path | None = None, seed: int = 0, device: str = "cpu"
) -> Path:
    """Train every model of ``model_specs`` into ``out`` (default: :func:`default_encoder_dir`)
    and return the directory.

    A finished directory with the same config is reused once it verifies (``read_verified``);
    one that does not (truncated or bit-flipped checkpoint, corrupt config) is retrained. The
    directory's lock makes a concurrent second call wait, then reuse the first one's result.
    """
    config = encoder_config(dataset, preset, seed)
    directory = make_dirs(Path(out) if out is not None else default_encoder_dir(config))
    with locked(directory):
        if (directory / "config.json").exists() or (directory / "checkpoint.pt").exists():
            try:
                existing, _ = read_verified(directory)
            except (ValueError, FileNotFoundError) as error:
                logger.warning("retraining %s: %s", directory, error)
            else:
                if {k: existing.get(k) for k in config} == config:
                    return directory
                raise ValueError(
                    f"{directory}: holds an encoder with a different config; "
                    "choose another --out or delete it"
                )
        _train_all(config, dataset, preset, directory, seed, device)
    return directory


def _train_all(
    config: dict[str, Any], dataset: str, preset: Preset, directory: Path, seed: int, device: str
) -> None:
    """Train every model (deterministically: bit-identical results for equal inputs) and write
    ``checkpoint.pt`` then ``config.json``, the latter marking the directory finished."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    train, _ = encoder_and_router_parts(
        split_inputs(dataset, "train", preset, device=device), preset.router_fraction
    )
    dev = split_inputs(dataset, "dev", preset, device=device)
    timings["inputs_seconds"] = time.perf_counter() - started
    hidden = int(train.states.shape[-1])
    states, logs, architectures = {}, {}, {}
    with deterministic_torch():
        for name, (kwargs, train_config) in model_specs(preset, hidden, seed).items():
            states[name], logs[name] = _train_one(
                name, kwargs, train_config, train, dev, directory, device=device
            )
            architectures[name] = kwargs
    timings["train_seconds"] = time.perf_counter() - started - timings["inputs_seconds"]
    content_hash = state_hash(states)
    with atomic_path(directory / "checkpoint.pt") as tmp:
        torch.save({"models": states}, tmp)
    write_json(
        directory / "config.json",
        {
            **config,
            "content_hash": content_hash,
            "architectures": architectures,
            "metrics": logs,
            "timings": timings,
            "train_queries": train.num_queries,
            "train_queries_with_relevant": int(train.has_relevant().sum()),
            "dev_queries": dev.num_queries,
        },
    )
    for progress in directory.glob("progress-*.pt"):
        progress.unlink()


@contextmanager
def deterministic_torch() -> Iterator[None]:
    """Run a block with torch's deterministic kernels: the 2-layer stack's training otherwise
    differs between two identical runs on CPU (issue 10: two solo builds, two content hashes).
    ``warn_only``: an op with no deterministic kernel (on some GPUs) warns instead of failing."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
