"""One shared set of given field names for frozen pydantic models.

pydantic gives every model instance its own set of the names of the fields it was given
(``model_fields_set``): 728 bytes for six names, more than the rest of a small model. A
frozen model never adds to that set, and a copy gets one of its own, so models given the
same fields can share one. At 40,000 real servers that is about a hundred MB: every stored
health entry, every real server of the config model.
"""

from __future__ import annotations

from pydantic import BaseModel

_GIVEN: dict[frozenset[str], set[str]] = {}


def share_given(model: BaseModel) -> None:
    """Make ``model`` (frozen) use the one shared set of the field names it was given."""
    names = model.__pydantic_fields_set__
    shared = _GIVEN.setdefault(frozenset(names), names)
    if shared is not names:
        object.__setattr__(model, "__pydantic_fields_set__", shared)
