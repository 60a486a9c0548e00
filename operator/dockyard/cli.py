"""The `dockyard` command.

Subcommands import their implementation lazily: the operator image carries only the
base dependencies, the runtime image adds mlflow/scikit-learn/MLServer, and neither
should pay for the other's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__

# Subcommands whose implementation lives in a module exposing `main(argv) -> int`.
# Each module parses its own arguments so `dockyard train --help` is the trainer's help.
DELEGATED = {
    "operator": ("dockyard.operator_main", "run the operator (kopf)"),
    "profile": ("dockyard.runtime.profile", "profile and validate a Dataset (Job entrypoint)"),
    "train": ("dockyard.runtime.train", "built-in trainer (Job entrypoint)"),
    "fetch-model": ("dockyard.runtime.fetch_model", "download a registered model version (init container)"),
    "serve": ("dockyard.runtime.serve", "run the serving runtime over a fetched model"),
    "approve": ("dockyard.approve", "approve the version a ModelDeployment rollout waits on"),
}


def cmd_crds(args: argparse.Namespace) -> int:
    from .api.crd import all_crds, render

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for filename, crd in all_crds().items():
        (out / filename).write_text(render(crd))
        print(out / filename)
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"dockyard {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockyard", description="Dockyard MLOps operator")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    crds = sub.add_parser("crds", help="write the CustomResourceDefinitions")
    crds.add_argument("--output-dir", default="crds", help="directory to write into (default: crds)")
    crds.set_defaults(func=cmd_crds)
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))
