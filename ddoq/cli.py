"""The `ddoq` command line: a thin layer over the package (no maths here).

Each sub-command lives in one `_cmd_*` function registered in `build_parser`.
Errors a user can cause are reported as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ddoq import __version__


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="ddoq",
        description="Dataset Distillation by Optimal Quantization.",
    )
    parser.add_argument("--version", action="version", version=f"ddoq {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ddoq` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ValueError as err:  # user-caused: one readable line, no traceback
        print(f"ddoq {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
