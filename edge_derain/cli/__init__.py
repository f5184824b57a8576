"""The ``edge-derain`` command. Thin: each sub-command parses arguments and calls one library function.

One module per group of sub-commands (training, quality, inference, deploy, measure, info), each with a
``register(subparsers)``; the argument groups several of them share live in :mod:`.common`.
"""
from __future__ import annotations

import argparse
import logging
import sys

from . import deploy, inference, info, measure, quality, training

#: What the library raises for a person to read (one line naming the problem and the fix): printed as one
#: ``edge-derain CMD: error: ...`` line with exit code 2. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, FloatingPointError, ImportError)

#: In the order ``edge-derain --help`` lists them: model -> ONNX -> quant -> engine -> runtime.
_COMMAND_GROUPS = (training, quality, inference, deploy, measure, info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-derain", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in _COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        # Errors raised by the library are written to be read by a person: one line, no traceback.
        if args.verbose:
            raise
        print(f"edge-derain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-derain {args.command}: interrupted", file=sys.stderr)
        return 130
