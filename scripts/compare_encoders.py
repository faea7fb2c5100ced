"""Dev NDCG@10 of two trained encoders, query by query, with paired bootstrap CIs.

For a change that alters encoder training in the last bits (issue 20's speed-ups) or the states
it reads (``--set states_precision=bfloat16``): is retrieval quality the same? For each model
both encoder directories hold (``maw`` routed by its joint router, ``maw_random`` and the
NON-MAW twin and seeds at their one depth, each MAW model also at its mean over fixed depths),
the mean dev NDCG@10 of each encoder and the paired difference B − A over queries
(``maw_gym.stats``). Each encoder scores the states of its own precision (``--precision-b``:
B's).

    .venv/bin/python scripts/compare_encoders.py A_DIR B_DIR --preset quick --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from maw_gym.encoder.reranker import score_split
from maw_gym.encoder.train import TrainedEncoder
from maw_gym.metrics import ndcg_at_10
from maw_gym.pipeline import split_inputs
from maw_gym.presets import Preset, get_preset
from maw_gym.stats import paired_difference


def per_query_ndcg(encoder_dir: Path, dataset: str, split: str, preset: Preset) -> dict:
    """Model name -> (N,) dev NDCG@10 per query (MAW: routed, and the mean over depths)."""
    encoder = TrainedEncoder.load(encoder_dir)
    inputs = split_inputs(dataset, split, preset.inputs)
    result = {}
    for name, model in encoder.models.items():
        scored = score_split(model, inputs, observe=model.router is not None)
        per_depth = ndcg_at_10(
            scored.depth_scores(), inputs.relevance, inputs.ideal_gains, inputs.candidate_mask
        )  # (N, D)
        if scored.router_logits is not None:
            choice = scored.router_logits.argmax(1)
            result[f"{name} (router)"] = per_depth[np.arange(len(choice)), choice]
        result[name if per_depth.shape[1] == 1 else f"{name} (mean over depths)"] = per_depth.mean(
            1
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path, help="encoder directory A (before)")
    parser.add_argument("b", type=Path, help="encoder directory B (after)")
    parser.add_argument("--dataset", default="nave-kjv")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--precision-b", default="float32", help="precision of B's states")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    preset = get_preset(args.preset)
    before = per_query_ndcg(args.a, args.dataset, args.split, preset)
    preset_b = preset.with_overrides(states_precision=args.precision_b)
    after = per_query_ndcg(args.b, args.dataset, args.split, preset_b)
    rows = {}
    for name in before.keys() & after.keys():
        mean, low, high = paired_difference(after[name], before[name])
        rows[name] = {
            "a": float(before[name].mean()),
            "b": float(after[name].mean()),
            "b_minus_a": mean,
            "ci95": [low, high],
        }
    if args.json:
        print(json.dumps({"split": args.split, "a": str(args.a), "b": str(args.b), **rows}))
        return
    for name, row in sorted(rows.items()):
        print(
            f"{name:28} A {row['a']:.4f}  B {row['b']:.4f}  B-A {row['b_minus_a']:+.4f} "
            f"[{row['ci95'][0]:+.4f}, {row['ci95'][1]:+.4f}]"
        )


if __name__ == "__main__":
    main()
