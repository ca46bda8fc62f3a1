"""The ``posed`` command line.

Each sub-command is thin: parse arguments, build settings, call the library. The commands
live in one module per group, each adding its own sub-parsers: :mod:`~posed.cli.offline`
(synth, train, evaluate, analyze, ...), :mod:`~posed.cli.models` (export, import-dlc,
engines), :mod:`~posed.cli.live` (serve, config, listen, keys) and :mod:`~posed.cli.bench`;
:mod:`~posed.cli.common` holds what they share. Any :class:`~posed.errors.PosedError` is
printed as one ``error: ...`` line on stderr and turned into a non-zero exit status (2 for
configuration errors, 1 otherwise), as is an :class:`OSError` (a folder, read-only path or
full disk where a file is written: the path and the reason, status 1); ``--debug`` or
``POSED_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

import posed
from posed.cli import bench, live, models, offline
from posed.cli.common import EPILOG, Handler
from posed.errors import PosedError

log = logging.getLogger("posed")

# The order of `posed --help`, whichever module a command lives in.
COMMANDS = (
    offline.add_synth, offline.add_train, offline.add_evaluate, offline.add_check_labels,
    offline.add_analyze,
    offline.add_analyze_images, offline.add_create_tracking_dataset, models.add_export,
    models.add_import_dlc, live.add_serve, live.add_config, live.add_listen, live.add_keys,
    bench.add_bench, offline.add_filter, offline.add_label_video, offline.add_plot,
    offline.add_export_nwb, models.add_engines,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``posed`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="posed", description="Pose estimation for animal behaviour labs: train and analyse "
        "DeepLabCut projects offline; stream poses live.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"posed {posed.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    if not debug:
        for noisy in ("timm", "PIL", "matplotlib", "numexpr", "numexpr.utils"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``posed`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("POSED_DEBUG", "") not in ("", "0")
    _setup_logging(debug, args.quiet)
    from posed.engines.memory import keep_freed_memory

    keep_freed_memory()  # every command runs models or trains: reuse big buffers (see module)
    func: Handler = args.func
    try:
        return func(args)
    except PosedError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # A folder, a read-only path or a full disk where a file was to be written or read:
        # one line naming the path, not a traceback.
        if debug:
            raise
        where = exc.filename or ""
        print(f"error: {where}{': ' if where else ''}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
