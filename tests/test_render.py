"""Render modes of the MAW envs, ``maw-gym show`` and the generated env docs.

Most tests run on small synthetic tables; ``RecordVideo``, real texts and ``maw-gym show`` run
at the smoke preset (its tables are cached by the other pipeline tests).
"""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded

from maw_gym import env_ids
from maw_gym.metrics import ndcg_at_10
from maw_gym.tables import Tables
from maw_gym_leaderboard.cli import main

ROOT = Path(__file__).resolve().parent.parent
IDS = env_ids()
MODES = ["ansi", "rgb_array", "human"]
ROW = re.compile(r"^\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)")


@pytest.fixture(scope="module")
def tables() -> Tables:
    # 12 candidates: the top-10 is a real cut; best_depth makes depth 1 rank well.
    return Tables.synthetic(
        num_queries=10, depth=3, heads=2, pool=2, candidates=12, best_depth=1, layers=True
    )


def play(env: gym.Env, query: int, seed: int) -> tuple[list, dict]:
    """One episode of ``query`` with seeded sample actions: (actions, last info)."""
    env.reset(seed=seed, options={"query_index": query})
    env.action_space.seed(seed)
    actions, terminated, info = [], False, {}
    while not terminated:
        actions.append(env.action_space.sample())
        _, _, terminated, _, info = env.step(actions[-1])
    return actions, info


def ranking(text: str) -> tuple[list[str], np.ndarray]:
    """Doc ids and grades of the ansi frame's top-10 rows."""
    rows = [ROW.match(line) for line in text.splitlines()]
    rows = [row for row in rows if row]
    return [row[5] for row in rows], np.array([float(row[3]) for row in rows])


@pytest.mark.filterwarnings("ignore:.*HumanRendering wrapper is being applied")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("env_id", IDS)
def test_every_id_renders_in_each_mode(env_id, mode, tables, monkeypatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # HumanRendering's pygame, no window system
    env = gym.make(env_id, tables=tables, render_mode=mode)
    if mode == "human":  # HumanRendering sleeps to keep render_fps: not in a test
        env.metadata = {**env.metadata, "render_fps": 1000}
    env.reset(seed=0)
    first = env.render()
    play(env, query=2, seed=0)
    last = env.render()
    if mode == "human":
        assert isinstance(env, gym.wrappers.HumanRendering) and first is last is None
        assert env.window is not None
    elif mode == "ansi":
        assert "query 2 of 10" in last and "action: none yet" in first
        assert len(ranking(last)[0]) == 10
    else:
        assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
        assert first.shape == last.shape  # one size per env
        assert not np.array_equal(first, last)  # the decision is drawn
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_frames_are_deterministic_for_a_seed(env_id, tables) -> None:
    frames = []
    for seed in (3, 3, 4):
        env = gym.make(env_id, tables=tables, render_mode="rgb_array")
        env.reset(seed=seed)
        env.action_space.seed(seed)
        env.step(env.action_space.sample())
        frames.append((env.render(), env.unwrapped.draw("ansi")))
    (image_a, text_a), (image_b, text_b), (image_c, text_c) = frames
    assert np.array_equal(image_a, image_b) and text_a == text_b
    assert not np.array_equal(image_a, image_c) and text_a != text_c


@pytest.mark.parametrize("env_id", IDS)
def test_ansi_ranking_and_reward_parts_match_info(env_id, tables) -> None:
    env = gym.make(env_id, tables=tables, render_mode="ansi")
    for query, seed in [(0, 0), (5, 1), (9, 2)]:
        _, info = play(env, query, seed)
        text = env.render()
        reward_line = next(line for line in text.splitlines() if line.startswith("reward "))
        for part in ("entropy", "focus", "alignment"):
            assert f"{part} {info[part]:.4f}" in reward_line
        assert f"best depth {info['best_depth_reward']:.4f}" in reward_line
        assert f"regret {info['regret']:.4f}" in reward_line
        # NDCG@10 of the listed grades, in the listed order, is what the env paid.
        _, grades = ranking(text)
        dcg = np.array([ndcg_at_10(-np.arange(10.0), grades, tables.ideal_gains[query], True)])
        assert dcg[0] == pytest.approx(info["alignment"], abs=1e-6)


def test_ansi_top10_is_the_hand_ranked_depth(tables) -> None:
    env = gym.make("MAW/DepthSelection-v3", tables=tables, render_mode="ansi")
    env.reset(options={"query_index": 4})
    env.step(1)
    scores = tables.score_base[4] + tables.score_parts[4, 1].sum(axis=0)  # depth 1, by hand
    expected = [str(tables.candidate_ids[4, c]) for c in np.argsort(-scores, kind="stable")[:10]]
    assert ranking(env.render())[0] == expected
    env.reset(options={"query_index": 4})
    by_bm25 = ranking(env.render())[0]  # before a decision: BM25 order
    assert by_bm25 == [str(doc) for doc in tables.candidate_ids[4, :10]]


@pytest.mark.parametrize("env_id", IDS)
def test_vector_env_renders_each_sub_env_as_the_single_env(env_id, tables) -> None:
    envs = gym.make_vec(
        env_id,
        num_envs=3,
        vectorization_mode="vector_entry_point",
        tables=tables,
        render_mode="rgb_array",
    )
    assert envs.metadata["render_modes"] == ["ansi", "rgb_array"]
    queries = np.array([1, 7, 3])
    envs.reset(seed=0, options={"query_index": queries})
    envs.action_space.seed(5)
    decisions = [envs.action_space.sample() for _ in range(envs.unwrapped.variant.horizon)]
    for actions in decisions:
        envs.step(actions)
    frames = envs.render()
    assert isinstance(frames, tuple) and len(frames) == 3
    for i, query in enumerate(queries):
        env = gym.make(env_id, tables=tables, render_mode="rgb_array")
        env.reset(options={"query_index": int(query)})
        for actions in decisions:
            env.step(actions[i])
        assert np.array_equal(frames[i], env.render())


@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes")
@pytest.mark.filterwarnings("ignore:.*autoreset mode is same-step")
def test_gymnasium_vector_record_video_records_the_native_vector_env(tables, tmp_path) -> None:
    envs = gym.make_vec(
        "MAW/SoftDepthMixture-v3",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        tables=tables,
        render_mode="rgb_array",
    )
    folder = tmp_path / "videos"
    envs = gym.wrappers.vector.RecordVideo(envs, str(folder), step_trigger=lambda step: step == 0)
    envs.reset(seed=0)
    for _ in range(3):
        envs.step(envs.action_space.sample())
    envs.close()
    assert [path.name for path in folder.glob("*.mp4")] == ["rl-video-step-0.mp4"]


def test_a_pickled_env_leaves_the_texts_behind_and_renders_the_same(tables) -> None:
    env = gym.make(
        "MAW/DepthSelection-v3", split="test", preset="smoke", render_mode="ansi"
    ).unwrapped
    play(env, query=1, seed=0)
    text = env.render()
    assert env._renderer._split is not None  # the texts were read for the frame
    copy = pickle.loads(pickle.dumps(env))
    assert copy._renderer._split is None and copy.render() == text


@pytest.mark.filterwarnings("ignore:.*not in the possible render_modes")
def test_render_errors_are_clear(tables) -> None:
    env = gym.make("MAW/DepthSelection-v3", tables=tables, render_mode="rgb_array")
    with pytest.raises(ResetNeeded, match="reset"):
        env.render()
    with pytest.raises(ValueError, match="render_mode='rgb'"):
        gym.make("MAW/DepthSelection-v3", tables=tables, render_mode="rgb")


def test_synthetic_tables_render_ids_and_smoke_tables_render_texts(tables) -> None:
    from maw_gym.data import load_split

    env = gym.make("MAW/DepthSelection-v3", split="test", preset="smoke", render_mode="ansi")
    play(env, query=0, seed=0)
    text = env.render()
    split = load_split("nave-kjv", "test")
    query_id = str(env.unwrapped.tables.query_ids[0])
    assert f"query: {split.queries[query_id]}" in text
    doc_id = ranking(text)[0][0]
    assert split.corpus[doc_id]["text"].split()[0] in text
    synthetic = gym.make("MAW/DepthSelection-v3", tables=tables, render_mode="ansi")
    play(synthetic, query=0, seed=0)
    assert "query: q0" in synthetic.render()
    # Tables that name a dataset their ids are not from: a clear error, not a KeyError.
    foreign = Tables.synthetic(num_queries=4)
    foreign.meta.update(dataset="nave-kjv", split="test")
    env = gym.make("MAW/DepthSelection-v3", tables=foreign, render_mode="ansi")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"nave-kjv \(test\): no query 'q\d'.*rebuild"):
        env.render()


def test_record_video_writes_a_video_at_smoke(tmp_path) -> None:
    import imageio

    env = gym.make("MAW/LayerwiseDepth-v3", split="test", preset="smoke", render_mode="rgb_array")
    folder = tmp_path / "videos"
    env = gym.wrappers.RecordVideo(env, str(folder), episode_trigger=lambda _: True)
    for episode in range(2):
        play(env, query=episode, seed=episode)
    env.close()
    videos = sorted(folder.glob("*.mp4"))
    assert len(videos) == 2
    with imageio.get_reader(videos[0], "ffmpeg") as reader:
        frames = [frame for frame in reader]
    assert len(frames) == 3  # reset, layer 1, layer 2


def test_show_prints_the_frame_and_writes_the_image(tmp_path, monkeypatch, capsys) -> None:
    from PIL import Image

    monkeypatch.chdir(tmp_path)  # a relative --out, as the README writes it
    argv = ["show", "--env", "MAW/PerHeadDepth-v3", "--split", "test", "--query-index", "2"]
    assert main([*argv, "--action", "0,1,2,3", "--out", "frame.png"]) == 0
    out = capsys.readouterr().out
    assert "action: depths per head 0 1 2 3" in out and "reward " in out
    with Image.open(tmp_path / "frame.png") as image:
        assert image.mode == "RGB" and image.size[0] > image.size[1]
    for bad, message in [
        ("0,1", "expected 4 comma-separated integers"),
        ("0,1,2,9", "values outside"),
        ("a,b,c,d", "expected 4 comma-separated integers"),
    ]:
        assert main([*argv, "--action", bad]) == 2
        assert message in capsys.readouterr().err
    assert main(["show", "--env", "CartPole-v1", "--action", "1"]) == 2
    assert "MAW/DepthSelection-v3" in capsys.readouterr().err
    assert main([*argv[:-1], "99", "--action", "0,1,2,3"]) == 2
    assert "--query-index 99" in capsys.readouterr().err
    assert main([*argv, "--action", "0,1,2,3", "--out", "frame.png/inside.png"]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "frame.png").is_file()
    assert main([*argv, "--action", "0,1,2,3", "--preset", "tiny"]) == 2
    assert "unknown preset 'tiny'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env_id", "action", "shown"),
    [
        ("MAW/DepthSelection-v3", "3", "action: depth 3"),
        ("MAW/SoftDepthMixture-v3", "0.2,0,0,0.6", "action: mixture weights 0.25 0.00 0.00 0.75"),
        ("MAW/LayerwiseDepth-v3", "1,3", "action: layer 1 depth 1, layer 2 depth 3"),
    ],
)
def test_show_reads_every_kind_of_action(env_id, action, shown, capsys) -> None:
    argv = ["show", "--env", env_id, "--split", "test", "--query-index", "1", "--action", action]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert shown in lines and lines[3].startswith("reward ")


def run_docs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "env_docs.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_env_docs_are_fresh_and_a_missing_or_stale_page_fails(tmp_path) -> None:
    fresh = run_docs("--check")
    assert fresh.returncode == 0, fresh.stderr
    pages = tmp_path / "envs"
    shutil.copytree(ROOT / "docs" / "envs", pages)
    (pages / "PerHeadDepth-v3.md").unlink()
    stale = pages / "SoftDepthMixture-v3.md"
    stale.write_text(stale.read_text().replace("Blend", "Mix"))
    result = run_docs("--check", "--out", str(pages))
    assert result.returncode == 1
    assert "PerHeadDepth-v3.md (missing)" in result.stderr
    assert "SoftDepthMixture-v3.md (stale)" in result.stderr
    assert result.stderr.count("(missing)") + result.stderr.count("(stale)") == 2


def test_readme_links_every_env_page() -> None:
    readme = (ROOT / "README.md").read_text()
    for env_id in IDS:
        assert f"docs/envs/{env_id.split('/', 1)[1]}.md" in readme
