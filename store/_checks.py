"""Input checks shared by both engines.

Both engines validate before they write, with the same rules and messages, because the engines themselves
disagree: qdrant-edge and Qdrant's local mode silently accept a NaN vector or re-creating an existing named vector,
and they report a wrong dimension with different exception types. Checking here keeps the engines congruent.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.errors import InvalidInput, NotFound
from core.text import UNICODE_HINT, is_unicode

from .base import Filter, FilterValue, Hit, SearchRequest, Vector

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def check_name(name: str, what: str = "collection") -> str:
    """Names become directory names (edge) and URL parts (server), so keep them to a safe alphabet."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"{what} name {name!r} is invalid: use 1-128 letters, digits, '_', '-' or '.' (not first)",
            field=what,
        )
    return name


def check_dim(dim: int, vector_name: str) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
        raise InvalidInput(f"dimension of vector {vector_name!r} must be an int in 1..65536, got {dim!r}", field="dim")
    return dim


def check_vector_config(vectors: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(vectors, Mapping) or not vectors:
        raise InvalidInput("a collection needs at least one named vector: {name: dimension}", field="vectors")
    return {check_name(n, "vector"): check_dim(d, n) for n, d in vectors.items()}


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit must be a positive int, got {limit!r}", field="limit")
    return limit


def check_offset(offset: str | None) -> str | None:
    """Offsets are the point ids the engines hand out; local mode would silently accept garbage."""
    if offset is None:
        return None
    try:
        return str(uuid.UUID(str(offset)))
    except ValueError:
        raise InvalidInput(f"offset {offset!r} is not one returned by scroll", field="offset") from None


def dim_of(dims: Mapping[str, int], collection: str, vector_name: str) -> int:
    """The dimension of a named vector, or InvalidInput naming the ones that exist."""
    try:
        return dims[vector_name]
    except KeyError:
        raise InvalidInput(
            f"collection {collection!r} has no vector named {vector_name!r}; it has {sorted(dims)}",
            field="vector_name",
        ) from None


def as_vector(vector: Vector, dim: int, vector_name: str) -> list[float]:
    """A plain list of finite floats of the right length (engines take lists; numpy arrays are welcome in)."""
    try:
        arr = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"vector {vector_name!r} is not a sequence of numbers: {e}", field="vector") from None
    if arr.ndim != 1 or arr.shape[0] != dim:
        raise InvalidInput(f"vector {vector_name!r} must have shape ({dim},), got {arr.shape}", field="vector")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"vector {vector_name!r} contains NaN or infinity", field="vector")
    return arr.tolist()


def check_payload_key(key: str, field: str = "key") -> str:
    """A payload key as filters and indexes name it: non-empty, dotted for nested keys."""
    if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
        raise InvalidInput(f"payload key {key!r} must be a non-empty key, dotted for nested keys", field=field)
    return key


def check_batch(requests: Sequence[SearchRequest]) -> list[SearchRequest]:
    """A search batch as a list of requests, each with a valid limit and filter (the vectors are checked by the
    engine, which knows the dimension)."""
    if isinstance(requests, SearchRequest) or not isinstance(requests, Sequence):
        raise InvalidInput("requests must be a sequence of SearchRequest", field="requests")
    for i, r in enumerate(requests):
        if not isinstance(r, SearchRequest):
            raise InvalidInput(f"request {i} is a {type(r).__name__}, not a SearchRequest", field="requests")
        check_limit(r.limit)
        check_filter(r.filter)
    return list(requests)


INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # the engines' integer: a payload outside it comes back a float, a filter fails


def check_filter(filter: Filter | None) -> list[tuple[str, list[FilterValue]]]:
    """A filter as (key, accepted values) pairs, all of which must hold; one value is a one-element list."""
    if filter is None:
        return []
    if not isinstance(filter, Mapping):
        raise InvalidInput(f"filter must be a mapping of payload key to value, got {type(filter).__name__}", "filter")
    out: list[tuple[str, list[FilterValue]]] = []
    for key, value in filter.items():
        check_payload_key(key, "filter")
        values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        if not values:
            raise InvalidInput(f"filter on {key!r} lists no values; give at least one or drop the key", "filter")
        for v in values:
            if not isinstance(v, str | int):
                raise InvalidInput(
                    f"filter on {key!r}: values must be str, int or bool (or a list of them), got {v!r}",
                    field="filter",
                )
            if not isinstance(v, bool) and isinstance(v, int) and not INT_MIN <= v <= INT_MAX:
                raise InvalidInput(
                    f"filter on {key!r}: {v} is outside the 64-bit integers ({INT_MIN}..{INT_MAX}) a payload holds",
                    field="filter",
                )
        out.append((key, values))
    return out


def first_non_json(value: Any, path: str = "") -> tuple[str, Any] | None:
    """Where ``value`` stops being the plain JSON a payload must be: (the dotted path, with [i] for list items, and
    the offending value or key), or None when it is all plain JSON. NaN and infinity are not JSON numbers; an
    integer must fit in 64 bits (signed), which is what the engines store exactly; a string (or key) must be
    Unicode text (:func:`core.text.is_unicode`)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return None if is_unicode(value) else (path, value)
    if isinstance(value, int):
        return None if INT_MIN <= value <= INT_MAX else (path, value)
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if (bad := first_non_json(v, f"{path}[{i}]")) is not None:
                return bad
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not is_unicode(k):
                return path, k
            if (bad := first_non_json(v, f"{path}.{k}" if path else k)) is not None:
                return bad
        return None
    return path, value


def non_json_problem(value: Any) -> str:
    """What is wrong with the value :func:`first_non_json` found, for an error message."""
    if isinstance(value, float):
        return f"is {value!r}: NaN and infinity are not JSON numbers; send a finite number or null"
    if isinstance(value, bool) or not isinstance(value, int | str):
        return f"holds {value!r}: it must be plain JSON (string keys; strings, numbers, booleans, null, lists, objects)"
    if isinstance(value, int):
        return f"is {value}: integers must fit in 64 bits (signed); send it as a string or a float"
    return UNICODE_HINT


def _is_json(value: Any) -> bool:
    return first_non_json(value) is None


def check_payload(doc_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload to store: plain JSON (no NaN, no numpy scalars, string keys) plus ``doc_id``.

    Checked here because the engines disagree: qdrant-edge takes a numpy float, a server's JSON encoder does not.
    """
    out = {**payload, "doc_id": doc_id}
    if not _is_json(out):
        raise InvalidInput(
            f"payload of document {doc_id!r} must be plain JSON: str keys; str, 64-bit int, finite float, bool, None, "
            "lists and objects of those",
            field="payload",
        )
    return out


def unique(doc_ids: Sequence[str]) -> list[str]:
    """Doc ids in first-seen order without repeats; a lone string is refused (it would be read as characters)."""
    if isinstance(doc_ids, str):
        raise InvalidInput("doc_ids must be a sequence of ids, not one string", field="doc_ids")
    seen: dict[str, None] = {}
    for d in doc_ids:
        if not isinstance(d, str) or not d:
            raise InvalidInput(f"doc ids must be non-empty strings, got {d!r}", field="doc_ids")
        seen.setdefault(d, None)
    return list(seen)


def missing_docs(collection: str, missing: Sequence[str]) -> NotFound:
    shown = ", ".join(repr(d) for d in list(missing)[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return NotFound(f"collection {collection!r} has no documents {shown}{more}; upsert them first")


def doc_id_of(payload: Mapping[str, Any] | None, point_id: Any) -> str:
    """The caller's document id of a stored point (kept in the payload; the engine's id is a uuid5 of it)."""
    return str((payload or {}).get("doc_id", point_id))


def hits_of(found: Sequence[Any], with_payload: bool) -> list[Hit]:
    """An engine's scored points as hits: the caller's document id, the score, the payload if it was asked for."""
    return [
        Hit(doc_id_of(p.payload, p.id), float(p.score), dict(p.payload or {}) if with_payload else {}) for p in found
    ]
