"""``maw-gym encoder train``, ``report``, ``study`` and ``study-render``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from maw_gym.cache import read_json, write_json
from maw_gym_leaderboard.command import (
    add_device_argument,
    add_preset_arguments,
    output_dir,
    preset_from_args,
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="encoder_command", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="train the MAW encoder, its NON-MAW twin and controls")
    report = sub.add_parser("report", help="diagnostics: fixed depths, oracle, router, controls")
    study = sub.add_parser("study", help="train encoder variants and measure depth routing")
    render = sub.add_parser("study-render", help="docs page + PNG from study JSON files")
    for command in (train, report, study):
        command.add_argument("--dataset", default="nave-kjv", help="BEIR dataset name or folder")
        add_preset_arguments(command, default="smoke")
        command.add_argument(
            "--seed", type=int, default=None, help="training seed (same as --set seed=N)"
        )
    add_device_argument(train)
    train.add_argument(
        "--out",
        type=output_dir,
        default=None,
        help="encoder directory (default: the cache's, keyed by config)",
    )
    report.add_argument(
        "--encoder",
        type=Path,
        default=None,
        help="encoder directory (default: the preset's, trained if missing)",
    )
    report.add_argument(
        "--out", type=output_dir, default=None, help="directory for report.json and the PNGs"
    )
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    study.add_argument(
        "--variants",
        default=None,
        help="comma-separated variants of maw_gym_leaderboard.study.study.VARIANTS (default: all)",
    )
    study.add_argument("--out", type=Path, required=True, help="the study's JSON file")
    study.add_argument(
        "--worker",
        default=None,
        metavar="I/W",
        help="only train (and cache) every W-th of the study's models from the I-th (0-based), "
        "to run W processes in parallel before the study itself",
    )
    render.add_argument("studies", type=Path, nargs="+", help="JSON files of `encoder study`")
    render.add_argument("--out", type=Path, default=Path("docs/depth-study.md"), help="page")


def run(args: argparse.Namespace) -> int:
    if args.encoder_command == "study-render":
        from maw_gym_leaderboard.study.render import render

        studies = []
        for path in args.studies:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such study JSON; run `maw-gym encoder study`")
            studies.append(read_json(path))
        render(studies, args.out, args.out.with_suffix(".png"))
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
        return 0
    if args.encoder_command == "study":
        return _study(args)
    from maw_gym.build import resolve_encoder

    preset = _preset(args)
    started = time.perf_counter()
    if args.encoder_command == "train":
        from maw_gym.device import resolve_device
        from maw_gym.encoder.train import train_encoder

        device = resolve_device(args.device).type
        directory = train_encoder(
            args.dataset, preset.inputs, preset.encoder, out=args.out, device=device
        )
        config = read_json(directory / "config.json")
        print(
            f"encoder: {directory} (content hash {config['content_hash']}, "
            f"{time.perf_counter() - started:.1f} s)"
        )
        for name, metrics in config["metrics"].items():
            print(
                f"  {name}: dev NDCG@10 {metrics['dev_ndcg10']:.4f} "
                f"after {metrics['epochs']} epochs"
            )
        return 0
    from maw_gym_leaderboard.study.report import encoder_report

    directory = resolve_encoder(args.dataset, preset, args.encoder)
    report = encoder_report(args.dataset, preset, directory, out=args.out)
    report["report_seconds"] = time.perf_counter() - started
    if args.out is not None:
        write_json(Path(args.out) / "report.json", report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for split in ("dev", "test"):
            r = report[split]
            print(
                f"{split}: BM25 {r['bm25']:.4f}  NON-MAW {r['nonmaw']:.4f}  best fixed depth "
                f"{r['best_fixed_depth']} {r['best_fixed']:.4f}  oracle {r['oracle']:.4f}  "
                f"joint router {r['joint_router']:.4f}  probe {r['probe']:.4f}  "
                f"headroom {r['headroom']:+.4f} vs seed control {r['seed_control']:+.4f}"
            )
    return 0


def _preset(args: argparse.Namespace):
    """The preset of ``--preset``/``--set``, with ``--seed`` as the encoder spec's seed."""
    preset = preset_from_args(args)
    return preset if args.seed is None else preset.with_overrides(seed=args.seed)


def _study(args: argparse.Namespace) -> int:
    from maw_gym_leaderboard.study.study import VARIANTS, run_study

    names = list(VARIANTS) if args.variants is None else args.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; choose among {sorted(VARIANTS)}")
    command = " ".join(
        [
            f"maw-gym encoder study --dataset {args.dataset} --preset {args.preset}",
            *(f"--set {item}" for item in args.overrides),
            *([f"--variants {args.variants}"] if args.variants else []),
        ]
    )
    variants = {name: VARIANTS[name] for name in names}
    worker = None
    if args.worker is not None:
        index, _, count = args.worker.partition("/")
        if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
            raise ValueError(f"--worker {args.worker!r}: expected I/W with 0 <= I < W")
        worker = (int(index), int(count))
    study = run_study(args.dataset, _preset(args), variants, args.out, command, worker)
    if worker is not None:
        print(f"worker {args.worker}: models trained and cached")
        return 0
    for name, variant in study["variants"].items():
        test = variant["test"]
        print(
            f"{name}: test best fixed {test['best_fixed']:.4f}  oracle {test['oracle']:.4f}  "
            f"headroom {test['headroom']:+.4f} vs seed control {test['seed_control']:+.4f}"
        )
    return 0
