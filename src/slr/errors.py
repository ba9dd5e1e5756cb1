"""The one exception type for bad input a user can fix."""


class UserError(Exception):
    """Bad input a user can fix (a param, a path, a missing file): shown as one line, never a traceback."""
