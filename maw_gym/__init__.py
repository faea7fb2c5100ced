"""maw-gym: Gymnasium environments and agents for routing Multi-Attention-Weight (5D) attention.

Importing the package registers the environments (below). It stays light: entry points are
strings, so gymnasium imports an env's module (numpy only) when the env is made, and torch only
when tables have to be built.
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry


def env_ids() -> list[str]:
    """Every registered ``MAW/`` env id, sorted: what docs, tests and the CLI iterate over."""
    return sorted(env_id for env_id in registry if env_id.startswith("MAW/"))


def registered_env_id(value: object, where: str) -> str:
    """``value`` if it is a registered ``MAW/`` env id letter for letter, else a ValueError
    that starts with ``where`` (the file and key it was read from).

    Env ids read from files (submissions, run configs, training records) may come from someone
    else, and Gymnasium imports the module named in an id written ``module:env`` (issue 22: a
    submission's ``this:MAW/...`` made ``validate`` import ``this``), so no prefix is allowed.
    """
    if not isinstance(value, str) or value not in env_ids():
        raise ValueError(f"{where} {value!r} is not a maw-gym env id; expected one of {env_ids()}")
    return value


#: Older ids whose episodes (observations, actions, rewards) today's ids reproduce exactly, so
#: that ``maw-gym validate`` replays runs recorded on them: v3 renamed an ``info`` key and
#: changed ``gym.make``'s default preset, nothing an episode computes.
SAME_EPISODES: dict[str, str] = {
    f"MAW/{name}-v2": f"MAW/{name}-v3"
    for name in (
        "DepthSelection",
        "DepthSelectionRetrieval",
        "SoftDepthMixture",
        "PerHeadDepth",
        "LayerwiseDepth",
    )
}


def replayable_env_id(value: object, where: str) -> str:
    """:func:`registered_env_id` of ``value``, an id of :data:`SAME_EPISODES` read as today's."""
    if isinstance(value, str):
        value = SAME_EPISODES.get(value, value)
    return registered_env_id(value, where)


def _register(id: str, **spec: Any) -> None:
    """``gymnasium.register`` unless ``id`` is already there: importing twice (reloads, Ray
    workers) must neither raise nor warn."""
    if id not in registry:
        register(id=id, **spec)


_register(
    id="MAW/DepthSelection-v3",
    entry_point="maw_gym.envs.depth_selection:DepthSelectionEnv",
    vector_entry_point="maw_gym.envs.vector:DepthSelectionVectorEnv",
    kwargs={"reward_weights": "default"},
)
_register(
    id="MAW/DepthSelectionRetrieval-v3",
    entry_point="maw_gym.envs.depth_selection:DepthSelectionEnv",
    vector_entry_point="maw_gym.envs.vector:DepthSelectionVectorEnv",
    kwargs={"reward_weights": "retrieval"},
)
_register(
    id="MAW/SoftDepthMixture-v3",
    entry_point="maw_gym.envs.soft_mixture:SoftDepthMixtureEnv",
    vector_entry_point="maw_gym.envs.vector:SoftDepthMixtureVectorEnv",
    kwargs={"reward_weights": "default"},
)
_register(
    id="MAW/PerHeadDepth-v3",
    entry_point="maw_gym.envs.per_head:PerHeadDepthEnv",
    vector_entry_point="maw_gym.envs.vector:PerHeadDepthVectorEnv",
    kwargs={"reward_weights": "default"},
)
_register(
    id="MAW/LayerwiseDepth-v3",
    entry_point="maw_gym.envs.layerwise:LayerwiseDepthEnv",
    vector_entry_point="maw_gym.envs.vector:LayerwiseDepthVectorEnv",
    kwargs={"reward_weights": "default"},
)
