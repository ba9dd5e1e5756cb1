"""What every command shares: its argument parser's common options, and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
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


# Set by `slr.distributed.relaunch` for the processes it starts: the launching stage prints their errors.
RELAUNCHED = "SLR_RELAUNCHED"


def run_main(main: Callable[[], None]) -> None:
    """Run a command's `main`, printing a UserError as `error: ...` and exiting with status 2.

    A full disk is one line too, and under DVC a stage whose params changed while it ran fails (params.check_unchanged).
    """
    from slr.params import check_unchanged

    try:
        main()
        check_unchanged()
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        report_error(f"no space left on the device{f' writing {exc.filename}' if exc.filename else ''}: free some "
                     "space and run it again (finished work is kept: preprocessed shards, checkpoints, downloads)")
        sys.exit(2)
    except UserError as exc:
        report_error(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def report_error(message: str) -> None:
    """Say `message` once, however many processes meet the same bad input.

    A torchrun worker also writes it to the error file torchrun gives each worker (TORCHELASTIC_ERROR_FILE), which
    reaches the launcher as `ChildFailedError.failures[rank].message`. Under the stage's own relaunch the launcher
    prints it, whichever rank wrote first: torchrun stops the other ranks as soon as one exits, so waiting for rank 0
    to print would race with that. Under a torchrun started by hand (several nodes), rank 0 prints.
    """
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        with open(error_file, "w") as file:  # torchrun reads it only after this process has exited
            json.dump({"message": message, "timestamp": int(time.time()), "slr": "user_error"}, file)
    if RELAUNCHED not in os.environ and os.environ.get("RANK", "0") == "0":
        print(f"error: {message}", file=sys.stderr)
