"""The MAW encoder stage: train the rerankers an encoder directory holds, resumably, and load
them back.

An encoder directory holds ``checkpoint.pt`` (the state dicts of each model), ``config.json``
(the encoder's key: its spec, its inputs' keys and every model's :class:`RerankerConfig` and
:class:`TrainConfig`; then dev metrics, timings and the content hash) and, while training, one
``progress-<model>.pt`` per model written after every epoch, so an interrupted ``maw-gym
encoder train`` resumes where it stopped; a finished directory is reused as it is.

Every model trains on the encoder-train part of the train split only: the data spec's
``router_fraction`` of it is held out as the router-train split, whose tables the routers learn
from (``maw_gym.pipeline.router_queries``).

The encoder the tables read (:func:`table_models`), on the same frozen base-encoder states:

- ``maw``: one MAW layer trained with the spec's depth levers (``depth_heads``,
  ``temperature_spread``, ``locality``, ``specialisation``, ``diversity_weight``; under
  ``specialisation="groups"``, the ground-truth tier, its depths are experts on the spec's
  query groups at ρ = ``group_mix``, trained with :data:`maw_gym.groups.EXPERT_TRAINING`);
- ``nonmaw_0``: the NON-MAW twin (standard attention, same size otherwise);
- ``stack``: an ``EncoderSpec.layers``-layer MAW stack for ``MAW/LayerwiseDepth`` (if layers > 1).

The research controls (:func:`control_models`), in a directory of their own that only
``maw-gym encoder report`` trains: ``maw_random`` (the same MAW layer trained with a random
depth per query, the prototypes' design) and ``nonmaw_1 … nonmaw_{k-1}`` (NON-MAW seeds for the
seed control, ``ControlSpec.seed_controls``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
from maw_gym.encoder.reranker import MAWReranker, RerankerConfig, TrainConfig, train_reranker
from maw_gym.groups import EXPERT_TRAINING, with_groups
from maw_gym.pipeline import (
    SplitInputs,
    encoder_and_router_parts,
    inputs_key,
    sampled_split,
    split_inputs,
)
from maw_gym.progress import announce
from maw_gym.specs import ControlSpec, EncoderSpec, InputsSpec, spec_dict

logger = logging.getLogger(__name__)

#: Bump when training changes in a way that makes old encoders stale.
ENCODER_VERSION = 5
#: The layer-2 observation is computed once per layer-1 depth (D times the layer-1 cost), so it
#: averages over fewer top candidates than layer 1's (``MAWReranker.observe_candidates``).
LAYER2_OBSERVE_CANDIDATES = 2

#: name -> (architecture, training) of each model an encoder directory holds.
Models = dict[str, tuple[RerankerConfig, TrainConfig]]


def _shape(spec: EncoderSpec, inputs: InputsSpec) -> RerankerConfig:
    """The plain MAW layer every model starts from (no depth lever)."""
    from maw_gym.base_encoder import base_hidden_size

    return RerankerConfig(
        hidden=base_hidden_size(),
        heads=spec.heads,
        depth=spec.depth,
        head_dim=spec.head_dim,
        pool=spec.pool,
        semantic=inputs.states.semantic,  # every model, the NON-MAW twin and seeds included
    )


def table_models(spec: EncoderSpec, inputs: InputsSpec) -> Models:
    """The models the tables read: ``maw``, ``nonmaw_0`` and, with layers > 1, ``stack``."""
    shape = _shape(spec, inputs)
    base = TrainConfig(epochs=spec.epochs, seed=spec.seed)
    models: Models = {
        "nonmaw_0": (dataclasses.replace(shape, attention="nonmaw"), base),
        "maw": (
            dataclasses.replace(
                shape,
                depth_heads=spec.depth_heads,
                temperature_spread=spec.temperature_spread,
                locality=spec.locality,
            ),
            dataclasses.replace(
                base,
                specialisation=spec.specialisation,
                diversity_weight=spec.diversity_weight,
                group_mix=spec.group_mix,
                **(EXPERT_TRAINING if spec.specialisation == "groups" else {}),
            ),
        ),
    }
    if spec.layers > 1:
        models["stack"] = (
            dataclasses.replace(
                shape,
                layers=spec.layers,
                router=False,
                observe_candidates=LAYER2_OBSERVE_CANDIDATES,
            ),
            dataclasses.replace(base, specialisation="random"),
        )
    return models


def control_models(spec: EncoderSpec, inputs: InputsSpec, controls: ControlSpec) -> Models:
    """The report's controls: ``maw_random`` and the NON-MAW seeds ``nonmaw_1 …``."""
    shape = _shape(spec, inputs)
    base = TrainConfig(epochs=spec.epochs, seed=spec.seed)
    models: Models = {
        "maw_random": (
            dataclasses.replace(shape, router=False),
            dataclasses.replace(base, specialisation="random"),
        )
    }
    for index in range(1, controls.seed_controls):
        models[f"nonmaw_{index}"] = (
            dataclasses.replace(shape, attention="nonmaw"),
            dataclasses.replace(base, seed=spec.seed + index),
        )
    return models


def encoder_config(dataset: str, inputs: InputsSpec, spec: EncoderSpec, models: Models) -> dict:
    """What an encoder directory is a function of (its name hashes this): its spec, the keys of
    the train and dev inputs it reads, the router-train share held out, and every model's full
    architecture and training settings, defaults included (a changed default changes the key;
    a field added later and marked ``KEY_OMITS_DEFAULT`` enters it only where it is set, see
    ``maw_gym.specs.spec_dict``). No model is loaded to compute it."""
    return {
        "version": ENCODER_VERSION,
        "dataset": sampled_split(dataset, "train", inputs.data).dataset,
        "train_inputs": inputs_key(dataset, "train", inputs),
        "dev_inputs": inputs_key(dataset, "dev", inputs),
        "router_fraction": inputs.data.router_fraction,
        "encoder": spec_dict(spec),
        "models": {
            name: {"model": spec_dict(model), "train": spec_dict(train)}
            for name, (model, train) in models.items()
        },
    }


#: The fields of an encoder's ``config.json`` that :func:`encoder_config` writes: its key.
KEY_FIELDS = (
    "version",
    "dataset",
    "train_inputs",
    "dev_inputs",
    "router_fraction",
    "encoder",
    "models",
)


def encoder_key(config: dict[str, Any]) -> str:
    """The encoder stage's cache key: the hash of the :data:`KEY_FIELDS` of its config (a
    finished directory's ``config.json`` holds them, beside its results)."""
    return stable_hash({name: config.get(name) for name in KEY_FIELDS})


def default_encoder_dir(config: dict[str, Any]) -> Path:
    """cache_dir("encoders", "<dataset slug>-<encoder key>"): under the cache root even for a
    dataset given as an absolute folder (the config holds its full path)."""
    return cache_dir("encoders", f"{slug(config['dataset'])}-{encoder_key(config)}")


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
            model = MAWReranker(RerankerConfig(**config["models"][name]["model"]))
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
    architecture: RerankerConfig,
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
    model = MAWReranker(architecture).to(resolve_device(device))

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
    dataset: str,
    inputs: InputsSpec,
    spec: EncoderSpec,
    models: Models | None = None,
    out: Path | None = None,
    device: str = "cpu",
) -> Path:
    """Train ``models`` (default: the tables' models, :func:`table_models`) into ``out``
    (default: :func:`default_encoder_dir`) and return the directory.

    A finished directory with the same config is reused once it verifies (``read_verified``);
    one that does not (truncated or bit-flipped checkpoint, corrupt config) is retrained. The
    directory's lock makes a concurrent second call wait, then reuse the first one's result.
    """
    models = table_models(spec, inputs) if models is None else models
    config = encoder_config(dataset, inputs, spec, models)
    directory = make_dirs(Path(out) if out is not None else default_encoder_dir(config))
    with locked(directory):
        if (directory / "config.json").exists() or (directory / "checkpoint.pt").exists():
            try:
                existing, _ = read_verified(directory)
            except (ValueError, FileNotFoundError) as error:
                logger.warning("retraining %s: %s", directory, error)
            else:
                if encoder_key(existing) == encoder_key(config):
                    return directory
                raise ValueError(
                    f"{directory}: holds an encoder with a different config; "
                    "choose another --out or delete it"
                )
        work = f"training {', '.join(models)} on {dataset}"
        announce(logger, "encoder", work, directory / "config.json")
        _train_all(config, dataset, inputs, spec, models, directory, device)
    return directory


def _train_all(
    config: dict[str, Any],
    dataset: str,
    inputs: InputsSpec,
    spec: EncoderSpec,
    models: Models,
    directory: Path,
    device: str,
) -> None:
    """Train every model (deterministically: bit-identical results for equal inputs) and write
    ``checkpoint.pt`` then ``config.json``, the latter marking the directory finished. The
    train queries carry their groups where ``spec`` asks for them (the ground-truth tier)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    train_split = with_groups(
        split_inputs(dataset, "train", inputs, device=device), dataset, inputs, spec
    )
    train, _ = encoder_and_router_parts(train_split, inputs.data.router_fraction)
    dev = split_inputs(dataset, "dev", inputs, device=device)
    timings["inputs_seconds"] = time.perf_counter() - started
    states, logs = {}, {}
    with deterministic_torch():
        for name, (architecture, train_config) in models.items():
            states[name], logs[name] = _train_one(
                name, architecture, train_config, train, dev, directory, device=device
            )
    timings["train_seconds"] = time.perf_counter() - started - timings["inputs_seconds"]
    content_hash = state_hash(states)
    with atomic_path(directory / "checkpoint.pt") as tmp:
        torch.save({"models": states}, tmp)
    write_json(
        directory / "config.json",
        {
            **config,
            "content_hash": content_hash,
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
