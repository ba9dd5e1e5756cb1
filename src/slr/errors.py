"""The one exception type for bad input, and the wrapper that turns it into a one-line message."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input a user can fix (a param, a path, a missing file): shown as one line, never a traceback."""


def run_main(main: Callable[[], None]) -> None:
    """Run a command's `main`, printing a UserError as `error: ...` and exiting with status 2."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
