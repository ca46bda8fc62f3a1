"""``posed bench``: run the performance suite (:mod:`posed.bench`) and print its table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from posed.cli.common import command, positive, size
from posed.errors import ConfigError


def cmd_bench(args: argparse.Namespace) -> int:
    """run the performance suite (engine, decode, pipeline, ...)

    Run named benchmark cases (all by default) and print a Markdown table; with --out also write
    the full record (machine, versions, config, every figure) as JSON and the table beside it as
    .md.
    """

    from posed import bench

    if args.list:
        for name, what in bench.list_cases():
            print(f"{name:10s} {what}")
        return 0
    opts = bench.BenchOptions(seconds=args.seconds, size=args.size, nets=tuple(args.net or ()),
                              batches=tuple(args.batch or (1, 8)), model=args.model)
    known = dict(bench.list_cases())
    unknown = [c for c in args.case or [] if c not in known]
    if unknown:
        raise ConfigError(f"unknown bench case '{unknown[0]}' (cases: {', '.join(known)})")
    record = bench.run(args.case, opts)
    table = bench.to_markdown(record)
    if args.out:
        import json

        from posed.engines.io import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
        atomic_write_text(args.out.with_suffix(".md"), table)
    print(table, end="")
    return 0


def add_bench(sub: Any) -> None:
    with command(sub, "bench", cmd_bench) as p:
        p.add_argument("--case", action="append", metavar="NAME",
                       help="run this case (repeatable)")
        p.add_argument("--list", action="store_true", help="list the cases and exit")
        p.add_argument("--out", type=Path, help="write the JSON record here (+ a .md beside it)")
        p.add_argument("--model", type=Path, help="model bundle (default: the demo model); "
                       "engine, resources and matmul need a PyTorch bundle, pipeline runs any")
        p.add_argument("--size", type=size, default=(320, 240), help="input size WIDTHxHEIGHT")
        p.add_argument("--seconds", type=float, default=3.0,
                       help="measuring time per measurement")
        p.add_argument("--net", action="append", metavar="NET",
                       help="engine/gpu: also time this architecture, randomly initialised "
                       "(repeatable; e.g. mobilenet_v2_1.0, resnet_50)")
        p.add_argument("--batch", action="append", type=positive, metavar="N",
                       help="engine: batch size (repeatable; default 1 and 8)")
