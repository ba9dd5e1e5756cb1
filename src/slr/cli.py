"""What every command shares: its argument parser's common options, and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from slr.errors import UserError


def stage_parser(doc: str | None, params: bool = True) -> argparse.ArgumentParser:
    """An argument parser described by the command's docstring, with the shared --params option if `params`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if params:
        parser.add_argument(
            "--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)"
        )
    return parser


def run_main(main: Callable[[], None]) -> None:
    """Run a command's `main`, printing a UserError as `error: ...` and exiting with status 2.

    In a torchrun process group every rank meets the same bad input; rank 0 alone says so, once.
    """
    try:
        main()
    except UserError as exc:
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
