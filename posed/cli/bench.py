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
    out = _out_file(args.out) if args.out else None  # refused before minutes of measuring
    record = bench.run(args.case, opts)
    table = bench.to_markdown(record)
    if out is not None:
        import json

        from posed.engines.io import atomic_write_text

        atomic_write_text(out, json.dumps(record, indent=2) + "\n")
        atomic_write_text(out.with_suffix(".md"), table)
    print(table, end="")
    return 0


def _out_file(out: Path) -> Path:
    """The JSON file for ``--out``: ``DIR/bench.json`` for a folder; its folder is created
    and must be writable."""
    import os

    if out.is_dir():
        out = out / "bench.json"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create its folder ({exc.strerror})") from None
    if not os.access(out.parent, os.W_OK):
        raise ConfigError(f"--out {out}: folder {out.parent} is not writable")
    return out


def add_bench(sub: Any) -> None:
    with command(sub, "bench", cmd_bench) as p:
        p.add_argument("--case", action="append", metavar="NAME",
                       help="run this case (repeatable)")
        p.add_argument("--list", action="store_true", help="list the cases and exit")
        p.add_argument("--out", type=Path, help="write the JSON record here (+ a .md beside it); a folder gets bench.json")
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
