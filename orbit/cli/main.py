"""``orbit``: the command-line entry point.

Every failure ORBIT anticipates is an :class:`~orbit.errors.OrbitError`; it is printed as
one line on stderr (``orbit: error: …``) with exit status 1. Usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from orbit.errors import OrbitError

EXIT_ERROR = 1
EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one readable line instead of the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from orbit.cli import compute as compute_cli
    from orbit.cli import identity as identity_cli
    from orbit.cli import lab as lab_cli
    from orbit.cli import maintenance as maintenance_cli

    parser = OneLineParser(prog="orbit", description="ORBIT live-migration control plane")
    parser.add_argument("-v", "--verbose", action="store_true", help="log in detail")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    compute_cli.register(sub)
    identity_cli.register(sub)
    maintenance_cli.register(sub)
    lab_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        result: int = args.func(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then caught below
        return result
    except BrokenPipeError:
        # The reader went away (``orbit lab status | head -2``): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OrbitError as err:
        print(f"orbit: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("orbit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
