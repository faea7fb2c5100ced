"""``--set KEY=VALUE`` preset overrides: parsing, errors naming the item, cache keys."""

from __future__ import annotations

import pytest

from maw_gym.presets import get_preset, parse_overrides
from maw_gym_leaderboard.cli import main


def test_overrides_parse_to_typed_fields() -> None:
    assert parse_overrides(["candidates=16", "seed-controls=8"]) == {
        "candidates": 16,
        "seed_controls": 8,
    }
    quick = get_preset("quick").with_overrides(**parse_overrides(["epochs=5"]))
    assert quick.encoder.epochs == 5 and quick.candidates == get_preset("quick").candidates
    assert quick.name == "quick"
    levers = parse_overrides(["depth_heads=true", "temperature_spread=3", "router_fraction=0.5"])
    assert levers == {"depth_heads": True, "temperature_spread": 3.0, "router_fraction": 0.5}
    assert parse_overrides(["specialisation=sinkhorn"]) == {"specialisation": "sinkhorn"}
    with pytest.raises(ValueError, match="specialisation='best'"):
        get_preset("quick").with_overrides(specialisation="best")
    with pytest.raises(ValueError, match="router_fraction must be in"):
        get_preset("quick").with_overrides(router_fraction=1.0)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("candidate=16", "KEY one of"),
        ("name=full", "KEY one of"),
        ("epochs", "KEY=VALUE"),
        ("epochs=three", "positive integer"),
        ("epochs=0", "positive integer"),
        ("depth_heads=yes", "true or false"),
        ("diversity_weight=high", "float"),
    ],
)
def test_bad_overrides_are_named(item: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        parse_overrides([item])
    assert repr(item) in str(error.value)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("candidates=100000", "candidates=100000: expected a value in [1, 1000]"),
        ("max_length=4096", "max_length=4096: expected a value in [4, 512]"),
        ("router_fraction=1.5", "router_fraction must be in (0, 1), got 1.5"),
    ],
)
def test_an_out_of_range_override_is_refused_before_any_work(item: str, message: str) -> None:
    """Issue 22: ``--set candidates=100000`` started an hours-long build without a word."""
    from maw_gym.presets import resolve_preset

    with pytest.raises(ValueError) as error:
        resolve_preset("quick", [item])
    assert str(error.value) == f"--set: {message}"


def test_cli_refuses_a_bad_override_without_traceback(capsys) -> None:
    assert main(["tables", "build", "--preset", "smoke", "--set", "heads=-1"]) == 2
    err = capsys.readouterr().err
    assert "--set 'heads=-1'" in err and "Traceback" not in err


def _stage_keys(preset) -> tuple[str, str]:
    """(encoder key, test tables key) of ``preset``, the encoder's weights held fixed."""
    from maw_gym.build import tables_key
    from maw_gym.encoder.train import encoder_config, encoder_key, table_models

    models = table_models(preset.encoder, preset.inputs)
    config = encoder_config("nave-kjv", preset.inputs, preset.encoder, models)
    weights = {**config, "content_hash": "the same weights"}
    return encoder_key(config), tables_key("nave-kjv", "test", preset.inputs, weights)


def test_each_stage_key_hashes_its_own_spec_and_its_inputs_keys() -> None:
    """Issue 21: ``--set agent_steps=…`` retrained the encoder (the whole preset was hashed)."""
    smoke = get_preset("smoke")
    encoder, tables = _stage_keys(smoke)
    assert _stage_keys(smoke.with_overrides(agent_steps=40_000, seeds=5, seed_controls=7)) == (
        encoder,
        tables,
    )
    for change in ({"depth": 2}, {"epochs": 1}, {"candidates": 6}, {"max_length": 16}):
        moved = _stage_keys(smoke.with_overrides(**change))
        assert moved[0] != encoder and moved[1] != tables, change
    # the test sample is read by the test tables only
    sampled = _stage_keys(smoke.with_overrides(test_queries=12))
    assert sampled[0] == encoder and sampled[1] != tables


def test_computing_keys_loads_no_model() -> None:
    """A key needs the data and the base model's files, never its weights in memory."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import transformers\n"
        "def refuse(*args, **kwargs):\n"
        "    raise SystemExit('a model was loaded to compute a key')\n"
        "transformers.AutoModel.from_pretrained = refuse\n"
        "import sys; sys.path.insert(0, 'tests')\n"
        "from test_presets import _stage_keys\n"
        "from maw_gym.presets import get_preset\n"
        "print(_stage_keys(get_preset('quick')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout


def test_states_precision_is_opt_in_and_keeps_existing_keys() -> None:
    """``states_precision`` (issue 20) enters the keys only when set: float32 presets hash as
    they did before the field existed (their spec dicts lack it), bfloat16 ones apart; unknown
    precisions are refused."""
    from maw_gym.base_encoder import PRECISIONS
    from maw_gym.specs import STATES_PRECISIONS, spec_dict

    smoke = get_preset("smoke")
    assert "states_precision" not in spec_dict(smoke.states)
    assert "states_precision" not in smoke.to_dict()["states"]
    fast = smoke.with_overrides(**parse_overrides(["states_precision=bfloat16"]))
    assert spec_dict(fast.states) == {**spec_dict(smoke.states), "states_precision": "bfloat16"}
    assert fast.to_dict()["states"]["states_precision"] == "bfloat16"
    encoder, tables = _stage_keys(smoke)
    moved = _stage_keys(fast)
    assert moved[0] != encoder and moved[1] != tables
    assert _stage_keys(fast.with_overrides(states_precision="float32")) == (encoder, tables)
    assert set(STATES_PRECISIONS) == set(PRECISIONS)
    with pytest.raises(ValueError, match=r"states_precision='float16': choose one of"):
        smoke.with_overrides(states_precision="float16")
