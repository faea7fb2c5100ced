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
    assert quick.epochs == 5 and quick.candidates == get_preset("quick").candidates
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


def test_cli_refuses_a_bad_override_without_traceback(capsys) -> None:
    assert main(["tables", "build", "--preset", "smoke", "--set", "heads=-1"]) == 2
    err = capsys.readouterr().err
    assert "--set 'heads=-1'" in err and "Traceback" not in err


def test_an_override_changes_the_tables_cache_key() -> None:
    from maw_gym.encoder.table_builder import resolve_encoder, tables_path

    smoke = get_preset("smoke")
    encoder = resolve_encoder("nave-kjv", smoke)
    base = tables_path("nave-kjv", "test", smoke, encoder)
    changed = tables_path("nave-kjv", "test", smoke.with_overrides(candidates=6), encoder)
    assert base[1] != changed[1] and base[0] != changed[0]
