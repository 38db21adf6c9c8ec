"""The flags both searches share: the training budget of a trial, and the workers' speed and sharing settings."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from effnet.cli._args import non_negative_int


def add_budget_group(parser: argparse.ArgumentParser, title: str, *, val_help: str, set_example: str):
    """The trainer settings of every trial (they are part of the study's identity); returns the group."""
    budget = parser.add_argument_group(title)
    budget.add_argument("--epochs", type=float, default=None, help="epochs per trial (default 1)")
    budget.add_argument("--steps", type=int, default=None, help="optimizer steps per trial (instead of --epochs)")
    budget.add_argument("--batch-size", type=int, default=None, help="default 64")
    budget.add_argument("--train-subset", type=int, default=None, help="train on this many images (fixed subset)")
    budget.add_argument("--val-subset", type=int, default=None, help=val_help)
    budget.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's 0.016 x B/256)")
    budget.add_argument("--optimizer", default=None, help="rmsproptf (default) or sgd")
    budget.add_argument("--augment", default=None, help="autoaugment, randaugment or none (default none)")
    budget.add_argument("--seed", type=int, default=None, help="training seed, the same for every trial")
    budget.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"any other effnet.train.TrainConfig field, e.g. --set {set_example}")
    return budget


def add_worker_groups(parser: argparse.ArgumentParser, *, stale_help: str) -> None:
    """Speed (not part of the study's identity) and the leases of workers sharing one study."""
    speed = parser.add_argument_group("speed only (not part of the study's identity)")
    speed.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    speed.add_argument("--workers", dest="loader_workers", type=non_negative_int, default=0, metavar="N",
                       help="data-loading processes per worker (default 0)")
    speed.add_argument("--loader-workers", dest="loader_workers", type=non_negative_int, default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)  # older spelling
    lease = parser.add_argument_group("sharing")
    lease.add_argument("--heartbeat", type=float, default=10.0, help="seconds between a worker's heartbeats")
    lease.add_argument("--grace", type=float, default=60.0, help=stale_help)
    lease.add_argument("--poll", type=float, default=5.0, help="seconds between looks while others finish")


def worker_flags(args: argparse.Namespace, given: Sequence[str]) -> list[str]:
    """The flags a spawned worker repeats from its parent's `args`: the leases and loader workers, each of `given`
    (dest names) that was set, and every --set."""
    argv = ["--heartbeat", repr(args.heartbeat), "--grace", repr(args.grace), "--poll", repr(args.poll),
            "--workers", str(args.loader_workers)]
    for flag in given:
        value = getattr(args, flag)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    for item in args.set:
        argv += ["--set", item]
    return argv
