"""The one exception class for mistakes a user can make (config, command line, data files).

The CLI prints such an error as one line and exits with code 2; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A mistake in a config, a command line or a data file; the message says what and where."""


QUOTE_LIMIT = 200  # at most this many characters of a user's value in a message


def clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` if it has at most `limit` characters, else its start and how long it was (`limit` in all).

    Every message that quotes a value, a key or a list a user wrote goes through this, so that a
    10,000-character value cannot make a 10,000-character error line.
    """
    text = str(text)
    if len(text) <= limit:
        return text
    tail = f"...[{len(text)} chars]"
    return text[: max(0, limit - len(tail))] + tail
