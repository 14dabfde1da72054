"""The one exception class for mistakes a user can make (config, command line, data files).

The CLI prints such an error as one line and exits with code 2; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A mistake in a config, a command line or a data file; the message says what and where."""
