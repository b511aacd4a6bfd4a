"""``treason logwatch install|uninstall``: the explained logwatch section."""

from __future__ import annotations

import argparse

from treason.logwatch import install, uninstall


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "logwatch",
        help="install or remove the logwatch service that explains window-shrink reports",
        description=(
            "install: add a logwatch service that lists the kernel's window-shrink reports "
            "as an explained section, and keep the stock kernel service from listing them "
            "too. uninstall: remove exactly what install added."
        ),
    )
    p.add_argument("action", choices=("install", "uninstall"))
    p.add_argument(
        "--root", default="/", metavar="DIR", help="install under DIR/etc/logwatch (default: /)"
    )
    p.add_argument(
        "--python",
        metavar="PATH",
        help="interpreter the service runs treason with (default: this one)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "install":
        for path in install(args.root, args.python):
            print(f"wrote {path}")
    else:
        removed = uninstall(args.root)
        for path in removed:
            print(f"removed or restored {path}")
        if not removed:
            print("nothing of treason's was installed")
    return 0
