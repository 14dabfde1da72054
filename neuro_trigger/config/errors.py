"""The error of a config or `-m` override that cannot be used, and the "did you mean" its messages end with."""
from __future__ import annotations

import difflib
from collections.abc import Sequence

from neuro_trigger.errors import QUOTE_LIMIT, UserError, clip


class ConfigError(UserError):
    """A config or override that cannot be used."""


LIST_CONFIGS = "every config: python neuro_trigger/main.py --list"


def suggest(word: str, options: Sequence[str], otherwise: str | None = None) -> str:
    """The closest of `options` to a misspelt `word` as "; did you mean ...?"; else `otherwise` (where to look),
    or every option where none is given."""
    close = difflib.get_close_matches(word[:QUOTE_LIMIT], [str(o) for o in options], n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{clip(close[0])}'?"
    if otherwise:
        return f"; {otherwise}"
    return f"; known: {clip(', '.join(sorted(map(str, options))))}"
