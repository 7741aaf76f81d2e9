"""The ``taler-ops`` command line.

Each sub-command lives in a module of this package with ``add_parser(subparsers)``;
the handler it registers returns an exit code or raises TalerOpsError, whose
exit code (Taler's numbering) ends the process with one clear line on stderr.
"""

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import EXIT_FAILURE, TalerOpsError

COMMAND_MODULES = ("dbinit", "generate", "sync", "audit", "status", "report", "link")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 too; keep Taler's wording
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: invalid arguments: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="taler-ops",
                     description="Operate the database side of a GNU Taler auditor.")
    parser.add_argument("-v", "--version", action="version", version=f"taler-ops {__version__}")
    parser.add_argument("-L", "--log", default="WARNING", metavar="LOGLEVEL",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level (default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.handler(args) or 0     # each handler returns its exit code
        return code
    except TalerOpsError as exc:
        print(f"taler-ops {args.command}: ERROR: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"taler-ops {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILURE

