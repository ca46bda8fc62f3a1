"""Pieces every command module of the ``posed`` command line shares: argument types, common
option groups, the sub-parser factory and the per-file error loop."""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from posed.errors import ConfigError, PosedError

EPILOG = "Docs: README.md. Errors print one line; add --debug for a traceback."

Handler = Callable[[argparse.Namespace], int]
T = TypeVar("T")


# ----------------------------------------------------------------------------- argument types

def size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as (width, height), at least 16×16."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got '{text}'") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size {text} is too small (minimum 16x16)")
    return w, h


def positive(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def snapshot(text: str) -> int | str:
    """A snapshot epoch, or ``last``."""
    return text if text == "last" else positive(text)


# ----------------------------------------------------------------------------- parsers

def add_common(p: argparse.ArgumentParser) -> None:
    """``--debug`` and ``-q``, which every command takes."""
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, fewer logs")


@contextmanager
def command(sub: Any, name: str, func: Handler, *,
            formatted: bool = True) -> Iterator[argparse.ArgumentParser]:
    """A sub-command's parser: add its own options in the ``with`` block; ``--debug``/``-q``
    and the handler are added when the block ends (so they come last in ``--help``).

    The handler's docstring is the command's help: its first line for the command list, the
    paragraph after it for ``posed NAME --help``.

    Args:
        sub: The sub-parsers action to add to.
        name: The command's name.
        func: The handler, ``func(args) -> exit status``.
        formatted: Show defaults in ``--help`` and the docs epilog (``engines`` has neither).
    """
    summary, _, paragraph = inspect.cleandoc(func.__doc__ or "").partition("\n")
    extra: dict[str, Any] = {"help": summary}
    if formatted:
        extra.update(formatter_class=argparse.ArgumentDefaultsHelpFormatter, epilog=EPILOG)
    if paragraph.strip():
        extra["description"] = paragraph.strip()
    p = sub.add_parser(name, **extra)
    yield p
    add_common(p)
    p.set_defaults(func=func)


def group(sub: Any, name: str, help: str) -> Any:  # noqa: A002 (argparse's name)
    """A command group (``posed config ACTION``): its own sub-parsers for the actions."""
    p = sub.add_parser(name, help=help)
    return p.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Which trained model: ``--engine``, ``--shuffle``, ``--snapshot``, ``--layout``."""
    p.add_argument("--engine", help="engine: pytorch|torch, tensorflow|tf, onnx "
                   "(default: the bundle's, else the project's 'engine', else pytorch)")
    p.add_argument("--shuffle", type=positive, default=1, help="shuffle number (default 1)")
    p.add_argument("--snapshot", type=snapshot, default=None,
                   help="snapshot epoch to use, or 'last' (default)")
    p.add_argument("--layout", choices=("posed", "deeplabcut"),
                   help="a project's shuffle: posed's (posed-models-*) or DeepLabCut's "
                        "(dlc-models-pytorch, served in place); default: the one that exists")


def add_source(p: argparse.ArgumentParser) -> None:
    """The project or model bundle a command runs."""
    p.add_argument("source", help="project folder/config.yaml, or a model bundle folder")


def add_batching(p: argparse.ArgumentParser) -> None:
    """``--batch-size`` (frames) and ``--device`` of commands that run a model on videos."""
    p.add_argument("--batch-size", type=positive, default=8, help="frames per batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def add_out_bundle(p: argparse.ArgumentParser) -> None:
    """``--out``: the bundle folder a command creates."""
    p.add_argument("--out", type=Path, required=True, help="bundle folder to create")


def add_overwrite(p: argparse.ArgumentParser) -> None:
    """``--overwrite`` of commands that create ``--out``."""
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def add_csv(p: argparse.ArgumentParser) -> None:
    """``--csv``: also write a .csv beside the h5."""
    p.add_argument("--csv", action="store_true", help="also write a .csv")


def add_tables(p: argparse.ArgumentParser, dest: str) -> None:
    """Positional analysed pose tables (files, folders or globs)."""
    p.add_argument(dest, nargs="+", help="analysed .h5/.csv files, folders or globs")


# ----------------------------------------------------------------------------- handlers

def analysed_tables(patterns: Iterable[str], *, include_filtered: bool = True) -> list[Path]:
    """Analysed pose tables among files, folders and globs: ``_meta`` files (and, unless
    ``include_filtered``, ``_filtered`` tables) left out, and a table analysed with ``--csv``,
    which exists twice, taken once (its h5)."""
    from posed.engines.offline.analyze import expand_inputs

    skip = ("_meta",) if include_filtered else ("_filtered", "_meta")
    found = [p for p in expand_inputs(patterns, (".h5", ".csv")) if not p.stem.endswith(skip)]
    return [p for p in found if p.suffix != ".csv" or p.with_suffix(".h5") not in found]


def each_file(items: Iterable[T], work: Callable[[T], None]) -> int:
    """Run ``work`` on every item; a failed file is one ``error:`` line and the loop goes on
    (a :class:`ConfigError` stops it). Exit status 1 when any failed."""
    failed = 0
    for item in items:
        try:
            work(item)
        except PosedError as exc:
            if isinstance(exc, ConfigError):
                raise
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
