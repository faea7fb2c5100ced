"""Gymnasium environments for routing MAW attention depths (registered by ``import maw_gym``).

| id                               | action                 | episode                          |
|----------------------------------|------------------------|----------------------------------|
| `MAW/DepthSelection-v3`          | `Discrete(D)`          | one query, one step              |
| `MAW/DepthSelectionRetrieval-v3` | `Discrete(D)`          | same, alignment-only reward      |
| `MAW/SoftDepthMixture-v3`        | `Box(0, 1, (D,))`      | one query, one step              |
| `MAW/PerHeadDepth-v3`            | `MultiDiscrete([D]*H)` | one query, one step              |
| `MAW/LayerwiseDepth-v3`          | `Discrete(D)`          | one query, one step per layer (2)|

Each id has a native vector env (``gym.make_vec(id, n)``; SAME_STEP autoreset, see
:mod:`maw_gym.envs.vector`). Without ``tables=`` an env loads (building on first use) the
tables of ``dataset``/``split``/``preset``; the default, nave-kjv at ``preset="quick"``, is the
official benchmark, shipped with the package (``maw_gym.official``). Two-line starts::

    # Gymnasium
    env = gym.make("maw_gym:MAW/DepthSelection-v3")
    obs, info = env.reset(seed=0); obs, reward, terminated, truncated, info = env.step(1)

    # Stable-Baselines3
    from stable_baselines3 import PPO
    PPO("MlpPolicy", gym.make("maw_gym:MAW/DepthSelection-v3"), seed=0).learn(2_000)

    # RLlib (the "maw_gym:" prefix makes every worker import maw_gym, which registers the ids)
    from ray.rllib.algorithms.ppo import PPOConfig
    config = PPOConfig().environment("maw_gym:MAW/DepthSelection-v3", env_config={"split": "train"})
    config.build_algo().train()

Every env renders (``render_mode="ansi"``, ``"rgb_array"``, or ``"human"`` through ``gym.make``;
see :mod:`maw_gym.envs.render`). ``docs/envs/<id>.md`` is generated from each registered env's
class docstring by ``scripts/env_docs.py`` (a test fails when a page is stale: rerun it).

``base`` holds what every variant shares; each variant module holds its single env, and
``vector`` the native vector envs. These modules import only numpy and gymnasium (torch is
imported only when an env is built without ``tables=``).
"""
