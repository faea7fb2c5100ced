"""maw-gym: Gymnasium environments and agents for routing Multi-Attention-Weight (5D) attention.

Importing the package registers the environments (below). It stays light: entry points are
strings, so gymnasium imports an env's module (numpy only) when the env is made, and torch only
when tables have to be built.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

_ENVS = "maw_gym.envs"

# One flat list, safe to run twice (re-imports, Ray workers): ids already registered are kept.
_REGISTRATIONS = [
    dict(
        id="MAW/DepthSelection-v0",
        entry_point=f"{_ENVS}.depth_selection:DepthSelectionEnv",
        vector_entry_point=f"{_ENVS}.vector:DepthSelectionVectorEnv",
        kwargs={"reward_weights": "default"},
    ),
    dict(
        id="MAW/DepthSelectionRetrieval-v0",
        entry_point=f"{_ENVS}.depth_selection:DepthSelectionEnv",
        vector_entry_point=f"{_ENVS}.vector:DepthSelectionVectorEnv",
        kwargs={"reward_weights": "retrieval"},
    ),
    dict(
        id="MAW/SoftDepthMixture-v0",
        entry_point=f"{_ENVS}.soft_mixture:SoftDepthMixtureEnv",
        vector_entry_point=f"{_ENVS}.vector:SoftDepthMixtureVectorEnv",
        kwargs={"reward_weights": "default"},
    ),
    dict(
        id="MAW/PerHeadDepth-v0",
        entry_point=f"{_ENVS}.per_head:PerHeadDepthEnv",
        vector_entry_point=f"{_ENVS}.vector:PerHeadDepthVectorEnv",
        kwargs={"reward_weights": "default"},
    ),
    dict(
        id="MAW/LayerwiseDepth-v0",
        entry_point=f"{_ENVS}.layerwise:LayerwiseDepthEnv",
        vector_entry_point=f"{_ENVS}.vector:LayerwiseDepthVectorEnv",
        kwargs={"reward_weights": "default"},
    ),
]

for _spec in _REGISTRATIONS:
    if _spec["id"] not in registry:
        register(**_spec)
