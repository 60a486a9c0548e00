"""``python -m tests.kubeapi serve --crds crds/ --port 0 --kubeconfig-out PATH``"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import pathlib
import sys

from .server import Emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kubeapi", description="Kubernetes API emulator")
    subs = parser.add_subparsers(dest="command", required=True)
    serve = subs.add_parser("serve", help="run the emulator until Ctrl-C")
    serve.add_argument(
        "--crds",
        action="append",
        type=pathlib.Path,
        default=None,
        help="directory or file of CRD YAML (repeatable; default: the repo's crds/)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--kubeconfig-out", type=pathlib.Path, default=None, help="write a kubeconfig here")
    serve.add_argument("--namespace", default="default", help="namespace of the kubeconfig context")
    serve.add_argument(
        "--no-foreign-crds",
        action="store_true",
        help="do not preload HTTPRoute / VirtualService / SeldonDeployment CRDs",
    )
    serve.add_argument("--history-limit", type=int, default=1000)
    serve.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )

    async def run() -> None:
        emu = Emulator(
            crd_dirs=args.crds, history_limit=args.history_limit, foreign_crds=not args.no_foreign_crds
        )
        url = await emu.start(args.host, args.port)
        if args.kubeconfig_out:
            emu.write_kubeconfig(args.kubeconfig_out, args.namespace)
            print(f"kubeconfig: {args.kubeconfig_out}", file=sys.stderr, flush=True)
        print(url, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await emu.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
