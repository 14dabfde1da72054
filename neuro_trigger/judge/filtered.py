"""Whether an expert is judged on its filter's rows: a run is "filtered" where its config's filter can drop
rows, which is decided from the parsed filter's structure, never from the data."""
from __future__ import annotations

from neuro_trigger.data.filters import (
    AndFilter,
    ConCatFilter,
    ExpertFilter,
    Filter,
    IdentityFilter,
    NotFilter,
    OrFilter,
)


def is_identity_filter(f: Filter) -> bool:
    """Whether a parsed filter keeps every row of any data by its structure: IdentityFilter(),
    ExpertFilter(-1), an empty ConCatFilter, `&` / ConCatFilter of identities, `|` with an identity, and
    `~~` of one. Anything else counts as filtering, even where it happens to keep every row of some
    data (a RangeFilter covering all rows, say): whether a run is "filtered" depends on its config only."""
    if isinstance(f, IdentityFilter):
        return True
    if isinstance(f, ExpertFilter):
        return f.expert == -1
    if isinstance(f, ConCatFilter):
        return all(is_identity_filter(g) for g in f.filters)
    if isinstance(f, AndFilter):
        return is_identity_filter(f.left) and is_identity_filter(f.right)
    if isinstance(f, OrFilter):
        return is_identity_filter(f.left) or is_identity_filter(f.right)
    if isinstance(f, NotFilter) and isinstance(f.inner, NotFilter):
        return is_identity_filter(f.inner.inner)
    return False
