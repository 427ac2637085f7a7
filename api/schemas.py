"""Request and response bodies (OpenAPI is generated from these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.json_schema import JsonDict

from api.service import FILTER_KEY_RE, NAME_RE, TENANT_NAME_RE
from ingest.pipeline import MAX_ID_CHARS, MAX_TEXT_CHARS
from router.experts import NAME_RE as EXPERT_NAME_RE
from store._checks import INT_MAX, INT_MIN

# What each error status means on this API. Every error body is an ``ErrorOut``: the request-validation errors (422)
# too, which the app reports in that shape instead of FastAPI's list of pydantic errors.
ERROR_STATUS = {
    400: "Invalid input: `detail` says what is wrong, `field` names the request field.",
    401: "Missing or unknown API key.",
    403: "This needs the admin key.",
    404: "No such collection, expert, tenant or job (for this key).",
    409: "It exists already, or its state forbids this now (being re-encoded, being backfilled, does not fit).",
    422: "Malformed request: a missing or unknown body field, or a value of the wrong type.",
    503: "The vector store or the task queue is unavailable; what was refused was not changed or queued (a job names "
    "any of its batches that could not be queued).",
}


class ErrorOut(BaseModel):
    """Every error the API returns."""

    detail: str
    field: str | None = Field(None, description="The request field the error is about, when there is one.")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: the error statuses it can answer, each with its meaning and body."""
    return {code: {"model": ErrorOut, "description": ERROR_STATUS[code]} for code in codes}


def json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``errors`` for a route whose own responses are not JSON (the dashboard's HTML): its errors still are."""
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    return {code: {"description": ERROR_STATUS[code], "content": body} for code in codes}


# JSON Schema for what the service checks by hand (it reports a 400 naming the field, not a 422): the schema tells a
# client what is accepted; the service's checks stay the rule. Limits that are settings are filled in by the app.
# Something other than whitespace as Python's str.strip() sees it (ECMA's \s leaves out \x1c-\x1f and \x85).
NON_EMPTY: JsonDict = {"type": "string", "pattern": r"[^\s\x1c-\x1f\x85]"}
_SCALAR: JsonDict = {"type": ["string", "integer", "boolean"], "minimum": INT_MIN, "maximum": INT_MAX}  # bounds: ints
FILTER_VALUE: JsonDict = {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR, "minItems": 1}]}


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer includes 10.0; the strict bodies would refuse it, so take it as 10 (and 10.5 stays
    refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _branch(schema: JsonDict, kind: str) -> JsonDict:
    """The non-null branch of an optional field's schema (``anyOf: [{type: kind, ...}, {type: null}]``)."""
    return next(b for b in cast(list[JsonDict], schema["anyOf"]) if b.get("type") == kind)


def _expert_schema(schema: JsonDict) -> None:
    _branch(schema, "string").update(pattern=EXPERT_NAME_RE.pattern)


def _filter_schema(schema: JsonDict) -> None:
    """A filter is null or an object of metadata key -> value (or non-empty list of values)."""
    _branch(schema, "object").update(
        propertyNames={"pattern": FILTER_KEY_RE.pattern}, additionalProperties=FILTER_VALUE
    )


class Body(BaseModel):
    """A request body: a field it does not know is an error (a misspelt ``top_k`` is not silently the default), and
    values are taken as their JSON types say, not coerced (``"explain": 0`` is not false, ``"top_k": "5"`` not 5)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CollectionIn(Body):
    name: str = Field(
        description="1-60 of a-z, 0-9, '-', '_', starting alphanumeric.", json_schema_extra={"pattern": NAME_RE.pattern}
    )
    expert: str | None = Field(
        None,
        description="Pin one expert (or 'base') instead of routing each query.",
        json_schema_extra=_expert_schema,
    )


class CollectionOut(BaseModel):
    name: str
    tenant: str
    expert: str | None
    documents: int
    vectors: list[str]
    backfill: dict[str, str]
    created_at: float


class DocumentIn(BaseModel):
    """One document of ``DocumentsIn`` (documentation only: the service checks each and names the one at fault)."""

    model_config = ConfigDict(
        extra="forbid",  # a key it does not know (a misspelt "titel") is a 400, not dropped
        # words in the text, or else in the title (a title-only document: Cranfield has some)
        json_schema_extra={
            "anyOf": [{"properties": {"text": NON_EMPTY}}, {"required": ["title"], "properties": {"title": NON_EMPTY}}]
        },
    )

    id: str | int = Field(json_schema_extra={"anyOf": [{**NON_EMPTY, "maxLength": MAX_ID_CHARS}, {"type": "integer"}]})
    title: str | None = Field("", description="null is no title.")
    text: str = Field(
        description=f"May be blank when the title is not. Title and text together at most {MAX_TEXT_CHARS} characters.",
        json_schema_extra={"type": "string", "maxLength": MAX_TEXT_CHARS},
    )
    metadata: dict[str, Any] | None = Field(None, description="Plain JSON; its keys can be filtered on. null is none.")


class DocumentsIn(Body):
    documents: list[Any] = Field(
        description="[{id, title?, text, metadata?}], ids unique in the batch; validated as a whole before queueing.",
        json_schema_extra={"minItems": 1, "items": DocumentIn.model_json_schema()},
    )


class JobAccepted(BaseModel):
    job_id: str


JobStatus = Literal["queued", "running", "done", "failed"]


class JobOut(BaseModel):
    job_id: str
    tenant: str
    collection: str
    status: JobStatus
    done: int
    total: int
    errors: list[dict[str, Any]]
    created_at: float = Field(description="Unix time the job was queued.")


class SearchIn(Body):
    query: Any = Field(description="The query text (non-empty).", json_schema_extra=NON_EMPTY)
    top_k: Annotated[int, BeforeValidator(_whole_number)] = Field(10, json_schema_extra={"minimum": 1})
    filter: dict[str, Any] | None = Field(
        None,
        description="Metadata equality: {key: value or [values]}.",
        json_schema_extra=_filter_schema,
    )
    expert: str = Field(
        "auto",
        description="'auto' routes by the pilots; 'base' or an expert name forces one.",
        json_schema_extra={"pattern": EXPERT_NAME_RE.pattern},
    )
    explain: bool = Field(False, description="Also return each hit's text.")


class Hit(BaseModel):
    id: str
    score: float
    title: str
    metadata: dict[str, Any]
    text: str | None = None


class SearchOut(BaseModel):
    results: list[Hit]
    route: dict[str, Any]
    timings: dict[str, float]


class RouteIn(Body):
    query: Any = Field(description="The query text (non-empty).", json_schema_extra=NON_EMPTY)
    collection: str | None = Field(None, description="Route among the experts ready on this collection.")


class ExpertIn(Body):
    path: str = Field(description="An expert directory on the server (adapter + manifest.json).")
    data: str | None = Field(None, description="A folder of BEIR collections to score it on for its pilots.")


class TenantIn(Body):
    name: str = Field(
        description="1-60 of a-z, 0-9, '-', '_', starting alphanumeric, without '__' and not ending in '_'.",
        json_schema_extra={"pattern": TENANT_NAME_RE.pattern},
    )


class TenantOut(BaseModel):
    tenant: str
    api_key: str = Field(description="Shown once; only its hash is stored.")
    key_id: str = Field(description="The key's public id, to list and revoke it by.")


class KeyOut(BaseModel):
    key_id: str
    created_at: float
