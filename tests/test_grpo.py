"""GRPO: the loss against hand-computed values, then learning, determinism and save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maw_gym_agents.grpo import grpo_loss

EPS = 1e-4


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_loss_hand_computed_with_clipping_and_no_kl() -> None:
    # rewards 0, 1, 2: mean 1, Bessel std 1 → A = (-1, 0, 1) / (1 + eps)
    rewards = _t([[0.0, 1.0, 2.0]])
    old = torch.zeros(1, 3, dtype=torch.float64)
    logp = _t([[math.log(1.5), 0.0, math.log(1.1)]])  # ratios 1.5, 1, 1.1
    loss, stats = grpo_loss(logp, old, logp.clone(), rewards, clip_eps=0.2, beta=0.0)
    a = 1.0 / (1.0 + EPS)
    # member 0: A<0, ratio 1.5 above the clip: min(-1.5a, -1.2a) = -1.5a (unclipped)
    # member 2: A>0, ratio 1.1 inside the clip: 1.1a
    expected = (1.5 * a + 0.0 - 1.1 * a) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-9)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)
    assert stats["kl"] == pytest.approx(0.0)
    assert stats["zero_std_fraction"] == 0.0


def test_k3_kl_term() -> None:
    rewards = _t([[1.0, 1.0]])  # zero-std group: only the KL term is left
    logp = _t([[math.log(0.5), math.log(0.25)]]).requires_grad_(True)
    ref = _t([[math.log(0.25), math.log(0.25)]])
    loss, stats = grpo_loss(logp, logp.detach(), ref, rewards, beta=0.5)
    k3 = 0.5 - math.log(0.5) - 1.0  # exp(log .5) − log .5 − 1 for member 0; member 1: 0
    assert float(loss.detach()) == pytest.approx(0.5 * k3 / 2, rel=1e-9)
    assert stats["kl"] == pytest.approx(k3 / 2, rel=1e-9)
    assert stats["zero_std_fraction"] == 1.0


def test_zero_std_group_has_no_policy_gradient() -> None:
    rewards = _t([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
    logp = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    loss, stats = grpo_loss(logp, logp.detach(), logp.detach(), rewards, beta=0.0)
    loss.backward()
    assert stats["zero_std_fraction"] == 0.5
    assert torch.all(logp.grad[0] == 0)
    assert logp.grad[1, 0] > 0 and logp.grad[1, 2] < 0
    assert logp.grad[1, 1] == 0  # the member at the group mean has A = 0


def test_clip_boundary_gradients() -> None:
    # A > 0 and ratio above 1+ε: clipped, no gradient. A < 0 above 1+ε: the unclipped term is
    # the min, so the gradient flows. Exactly at 1+ε: not counted as clipped.
    rewards = _t([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    ratios = [[1.0, 1.3], [1.3, 1.0], [1.0, 1.2]]
    logp = torch.log(_t(ratios)).requires_grad_(True)
    old = torch.zeros(3, 2, dtype=torch.float64)
    loss, stats = grpo_loss(logp, old, logp.detach(), rewards, clip_eps=0.2, beta=0.0)
    loss.backward()
    assert logp.grad[0, 1] == 0  # positive advantage, clipped
    assert logp.grad[1, 0] > 0  # negative advantage, ratio 1.3: gradient pushes logp down
    assert logp.grad[2, 1] < 0  # exactly on the boundary: still the unclipped branch
    assert stats["clip_fraction"] == pytest.approx(2 / 6)


@pytest.mark.parametrize(
    ("scale", "denominator"),
    [("batch", math.sqrt(2.0) + EPS), ("none", 1.0)],
)
def test_scale_rewards_batch_and_none(scale: str, denominator: float) -> None:
    # rewards [[0, 1], [0, 3]]: group-centred (-.5, .5, -1.5, 1.5); the std of all four rewards
    # (mean 1, squared deviations 1, 0, 1, 4) with Bessel's correction is sqrt(6 / 3) = sqrt 2.
    rewards = _t([[0.0, 1.0], [0.0, 3.0]])
    logp = torch.log(_t([[1.0, 1.1], [1.0, 1.1]]))
    old = torch.zeros(2, 2, dtype=torch.float64)
    loss, _ = grpo_loss(logp, old, logp.clone(), rewards, beta=0.0, scale_rewards=scale)
    expected = -(-0.5 + 1.1 * 0.5 - 1.5 + 1.1 * 1.5) / denominator / 4
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_scale_rewards_group() -> None:
    rewards = _t([[0.0, 1.0], [0.0, 3.0]])
    logp = torch.log(_t([[1.0, 1.1], [1.0, 1.1]]))
    old = torch.zeros(2, 2, dtype=torch.float64)
    loss, _ = grpo_loss(logp, old, logp.clone(), rewards, beta=0.0)
    std1, std2 = math.sqrt(0.5), math.sqrt(4.5)  # Bessel std of (0, 1) and (0, 3)
    a1, a2 = 0.5 / (std1 + EPS), 1.5 / (std2 + EPS)
    expected = -(-a1 + 1.1 * a1 - a2 + 1.1 * a2) / 4
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_per_step_ratio_and_kl_average_over_each_trajectorys_steps() -> None:
    # DeepSeekMath's per-token form on 2-step trajectories: member 0 took both steps, member 1
    # only the first (its second step is masked, so its ratio of 5 must not count).
    rewards = _t([[0.0, 1.0]])  # A = (-a, +a), a = 0.5 / (sqrt(0.5) + eps)
    logp = torch.log(_t([[[1.1, 1.0], [1.1, 5.0]]]))  # old logp 0: ratios = these numbers
    mask = _t([[[1.0, 1.0], [1.0, 0.0]]])
    old = torch.zeros(1, 2, 2, dtype=torch.float64)
    loss, stats = grpo_loss(logp, old, logp.clone(), rewards, beta=0.0, step_mask=mask)
    a = 0.5 / (math.sqrt(0.5) + EPS)
    # member 0: -mean(-1.1a, -1.0a) = 1.05a; member 1: -(1.1a); mean over members
    assert float(loss) == pytest.approx((1.05 * a - 1.1 * a) / 2, rel=1e-9)
    assert stats["clip_fraction"] == 0.0  # the masked ratio 5 is not counted

    flat = _t([[0.0, 0.0]])  # equal rewards: only the KL term is left
    logp = torch.log(_t([[[0.5, 0.25], [0.25, 0.9]]]))
    ref = torch.log(_t([[[0.25, 0.25], [0.25, 0.01]]]))
    loss, stats = grpo_loss(logp, logp.clone(), ref, flat, beta=1.0, step_mask=mask)
    k3 = 0.5 - math.log(0.5) - 1.0  # member 0, step 0; every other valid step has k3 = 0
    assert float(loss) == pytest.approx((k3 / 2 + 0.0) / 2, rel=1e-9)
    assert stats["kl"] == pytest.approx(k3 / 4, rel=1e-9)


def test_one_step_loss_equals_per_step_form_with_one_step() -> None:
    rng = np.random.default_rng(1)
    logp, old, ref, rewards = (torch.as_tensor(rng.normal(size=(3, 4))) for _ in range(4))
    flat, _ = grpo_loss(logp, old, ref, rewards)
    stepped, _ = grpo_loss(
        logp[..., None], old[..., None], ref[..., None], rewards, step_mask=torch.ones(3, 4, 1)
    )
    assert float(flat) == pytest.approx(float(stepped), rel=1e-12)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="G >= 2"):
        grpo_loss(*(torch.zeros(3, 1),) * 4)
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo_loss(*(torch.zeros(2, 2),) * 4, scale_rewards="std")
    with pytest.raises(ValueError, match="old_logp"):
        grpo_loss(torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 2))


def test_loss_stats_hand_computed() -> None:
    # group 0 all equal (no signal), group 1 spread; ratios to the old policy 1.5 and 0.5 lie
    # outside [0.8, 1.2], the others are 1; the reference equals the policy (k3 = 0)
    rewards = _t([[0.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    logp = torch.log(_t([[1.0, 1.0, 1.0], [1.5, 1.0, 0.5]]))
    _, stats = grpo_loss(logp, torch.zeros(2, 3, dtype=torch.float64), logp.clone(), rewards)
    assert stats["zero_std_fraction"] == 0.5
    assert stats["clip_fraction"] == pytest.approx(2 / 6)
    assert stats["kl"] == pytest.approx(0.0, abs=1e-12)
    expected = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 6
    assert stats["approx_kl_old"] == pytest.approx(expected, rel=1e-9)
    # group 1: A = (r - 1) / (std + eps) with the Bessel std 1
    assert stats["advantage_abs_mean"] == pytest.approx(2 / (1 + EPS) / 6, rel=1e-9)


ENV = "MAW/DepthSelection-v3"
# Alignment-only reward: on synthetic tables depth 1 then wins on (nearly) every query, while
# the default weights add per-query noise (random entropy/focus) that no observation predicts.
CLEAR_ENV = "MAW/DepthSelectionRetrieval-v3"


@pytest.fixture(scope="module")
def synthetic():
    from maw_gym.tables import Tables

    return (
        Tables.synthetic(num_queries=64, best_depth=1, seed=0),
        Tables.synthetic(num_queries=32, best_depth=1, seed=1),
    )


def _train(tables, env_id=ENV, **overrides):
    from maw_gym_agents.grpo import GRPOConfig, train

    config = GRPOConfig(**{"total_env_steps": 1024, **overrides})
    return train(env_id, tables, config, progress=False)


@pytest.mark.parametrize("enumerate_actions", [True, False])
def test_grpo_learns_the_clearly_best_depth(synthetic, enumerate_actions) -> None:
    from maw_gym_agents.evaluate import evaluate_router

    train_tables, dev_tables = synthetic
    router, metrics = _train(train_tables, CLEAR_ENV, enumerate_actions=enumerate_actions)
    result = evaluate_router(router, CLEAR_ENV, dev_tables)
    assert result.normalized_score > 0.6  # random is 0; measured 0.94 and 0.84
    assert np.mean(result.actions == 1) > 0.8  # depth 1 ranks the relevant documents first
    assert metrics[-1]["charts/entropy"] < metrics[0]["charts/entropy"]
    assert {"losses/kl", "losses/clip_fraction", "charts/zero_std_fraction"} <= set(metrics[-1])


def test_grpo_enumerates_every_depth_when_asked(synthetic) -> None:
    router, metrics = _train(
        synthetic[0], group_size=4, enumerate_actions=True, total_env_steps=128
    )
    assert metrics[0]["env_steps"] == 32 * 4  # B groups of exactly D members
    assert router.policy.spec.choices == 4
    assert router.name == "grpo-enum"


def test_grpo_default_samples_groups_from_the_old_policy(synthetic) -> None:
    from maw_gym_agents.grpo import GRPOConfig

    assert not GRPOConfig().enumerate_actions  # DeepSeekMath, the leaderboard's grpo row
    router, metrics = _train(synthetic[0], total_env_steps=256)
    assert metrics[0]["env_steps"] == 32 * 8  # G = 8 sampled members, not D = 4 enumerated
    assert router.name == "grpo"


def test_grpo_same_seed_same_result_and_save_load(synthetic, tmp_path) -> None:
    from maw_gym_agents.saving import load_router

    train_tables, dev_tables = synthetic
    first, metrics_a = _train(train_tables, total_env_steps=256, seed=3)
    second, metrics_b = _train(train_tables, total_env_steps=256, seed=3)
    other, _ = _train(train_tables, total_env_steps=256, seed=4)

    def without_timing(metrics):
        return [{k: v for k, v in m.items() if k != "charts/steps_per_second"} for m in metrics]

    assert without_timing(metrics_a) == without_timing(metrics_b)
    weights = [r.policy.state_dict().values() for r in (first, second, other)]
    assert all(torch.equal(a, b) for a, b in zip(weights[0], weights[1], strict=True))
    assert not all(torch.equal(a, c) for a, c in zip(weights[0], weights[2], strict=True))
    first.save(tmp_path)
    loaded = load_router(tmp_path)
    observations = dev_tables.observation.reshape(dev_tables.num_queries, -1)
    assert loaded.name == "grpo"
    np.testing.assert_array_equal(loaded.act(observations), first.act(observations))


@pytest.mark.parametrize(
    "env_id", ["MAW/PerHeadDepth-v3", "MAW/SoftDepthMixture-v3", "MAW/LayerwiseDepth-v3"]
)
def test_grpo_learns_on_every_variant(env_id) -> None:
    from maw_gym.tables import Tables
    from maw_gym_agents.evaluate import evaluate_router
    from maw_gym_agents.grpo import GRPOConfig, train

    train_tables = Tables.synthetic(num_queries=64, best_depth=1, seed=0, layers=True)
    dev_tables = Tables.synthetic(num_queries=32, best_depth=1, seed=1, layers=True)

    config = GRPOConfig(
        total_env_steps=2048,
        queries_per_batch=16,
        learning_rate=3e-3,
        enumerate_actions=False,
    )  # sampled groups of 8, the DeepSeekMath form
    router, metrics = train(env_id, train_tables, config, progress=False)
    result = evaluate_router(router, env_id, dev_tables)
    # measured (seeded, so reproducible): 0.313 per head (whose oracle enumerates all D**H
    # head assignments), 0.519 mixture, 0.459 layerwise; random is 0
    floor = {
        "MAW/PerHeadDepth-v3": 0.28,
        "MAW/SoftDepthMixture-v3": 0.47,
        "MAW/LayerwiseDepth-v3": 0.41,
    }[env_id]
    assert result.normalized_score > floor, result.normalized_score
    if env_id == "MAW/LayerwiseDepth-v3":
        # a group member is a whole 2-step trajectory: 16 queries x 8 members x 2 steps
        assert metrics[0]["env_steps"] == 16 * 8 * 2
        assert result.actions.shape == (32, 2)
