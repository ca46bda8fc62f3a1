"""Live commands: serve, config check, listen and keys generate."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from posed.cli.common import command, group, positive
from posed.errors import ConfigError


def cmd_serve(args: argparse.Namespace) -> int:
    """run the streaming daemon (capture -> inference -> ZeroMQ)

    Serve poses from cameras or files over ZeroMQ with Prometheus metrics, as configured in FILE
    (see configs/). Sends sd_notify READY/WATCHDOG/STATUS under systemd. SIGTERM/SIGINT stop it
    cleanly.
    """

    from posed.daemon.config import load_config
    from posed.daemon.service import serve

    cfg = load_config(args.config)
    if not args.debug:
        logging.getLogger().setLevel(cfg.log_level.upper())
    return serve(cfg)


def add_serve(sub: Any) -> None:
    with command(sub, "serve", cmd_serve) as p:
        p.add_argument("--config", required=True, type=Path, help="daemon config YAML")


def cmd_config_check(args: argparse.Namespace) -> int:
    """validate a daemon config without starting

    Run the checks `posed serve` runs before it starts, without starting a camera or loading
    a model: keys, types and number ranges (errors name the key), camera settings, the model
    bundle's hashes and engine options, the hook, and the CurveZMQ key files. Refuses exactly
    what serve refuses, with the same line and exit status 2; prints a summary when ok.
    """

    from posed.daemon.validate import check_config

    print(check_config(args.file))
    return 0


def add_config(sub: Any) -> None:
    with command(group(sub, "config", "validate daemon configs"), "check", cmd_config_check) as c:
        c.add_argument("file", type=Path)


def _curve_client(args: argparse.Namespace) -> object | None:
    if not (args.client_key or args.server_key):
        return None
    if not (args.client_key and args.server_key):
        raise ConfigError("CurveZMQ needs both --client-key and --server-key")
    from posed.daemon.keys import CurveClient

    return CurveClient(args.client_key, args.server_key)


def _seconds(text: str) -> float:
    """A finite number of seconds > 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got '{text}'") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


def cmd_listen(args: argparse.Namespace) -> int:
    """subscribe to a daemon's poses: print them or record csv/h5

    Subscribe to a posed daemon. Prints one line per pose, or records DeepLabCut-format tables
    with --csv/--h5 (one file per camera when several), rewritten every --flush-every seconds
    and when listening ends: SIGINT (Ctrl-C) and SIGTERM both end it and write the tables.
    Malformed messages are counted, reported once per kind and skipped.
    """

    import threading

    from posed.daemon.listening import listen, stop_on_signals

    with stop_on_signals(threading.Event()) as stop:
        n = listen(args.endpoint, csv=args.csv, h5=args.h5, count=args.count,
                   timeout_s=args.timeout, cameras=args.camera or None,
                   curve=_curve_client(args), stop=stop, flush_every_s=args.flush_every)
    print(f"{n} poses received", file=sys.stderr)
    return 0 if n or args.timeout is None else 1


def add_listen(sub: Any) -> None:
    with command(sub, "listen", cmd_listen) as p:
        p.add_argument("--endpoint", default="tcp://127.0.0.1:5555",
                       help="daemon's ZeroMQ endpoint")
        rec = p.add_mutually_exclusive_group()
        rec.add_argument("--csv", type=Path, help="record to this CSV file")
        rec.add_argument("--h5", type=Path, help="record to this h5 file")
        p.add_argument("--camera", action="append", help="only this camera (repeatable)")
        p.add_argument("--count", type=positive, help="stop after N poses")
        p.add_argument("--timeout", type=float, help="stop after S seconds")
        p.add_argument("--flush-every", type=_seconds, default=10.0, metavar="S",
                       help="rewrite the recording every S seconds (default 10)")
        p.add_argument("--client-key", type=Path, help="CurveZMQ client secret key file")
        p.add_argument("--server-key", type=Path, help="CurveZMQ server public key file")


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """write a CurveZMQ key pair

    Write NAME.key (public) and NAME.key_secret (private, mode 0600) into DIR. Give the server's
    public key to clients; put clients' public keys in the daemon's
    publisher.curve.allowed_clients folder.
    """

    from posed.daemon.keys import generate_keys

    public, secret = generate_keys(args.dir, args.name)
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")
    return 0


def add_keys(sub: Any) -> None:
    with command(group(sub, "keys", "CurveZMQ key pairs"), "generate", cmd_keys_generate) as k:
        k.add_argument("dir", type=Path)
        k.add_argument("--name", default="server", help="key pair name")

