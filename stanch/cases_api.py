"""The cases HTTP API on ``stanch serve``: incidents for ticketing systems and portals.

``GET /v1/incidents``, ``GET /v1/incidents/{id}`` and ``POST /v1/incidents/{id}/notes``,
``/assign``, ``/close``, ``/reopen``, described by the OpenAPI 3.1 document at
``GET /openapi.json``. Every request carries ``Authorization: Bearer <token>``; each token
belongs to one tenant and sees and changes only that tenant's incidents (another tenant's
incident is a 404, as if it did not exist). Changes are recorded as ``api:<token name>``.

Errors are JSON ``{"error": …, "field": …}``: 400 malformed JSON, 401 no or wrong token,
404 unknown incident, 409 the case's state refuses the change, 413 body too large, 422 a
field is missing or invalid. Nothing is changed by a refused request.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from flows.detect import TENANT_PATTERN
from flows.errors import CaseConflict, CaseError, CaseInputError, UnknownIncident
from flows.models import CaseStatus
from flows.record import NOTE_MAX_CHARS, CaseBook, CaseFile, CaseListing, CaseRecord, Store

MAX_BODY_BYTES = 256 * 1024
"""Request bodies above this get 413: a note is at most 10,000 characters."""


class ApiToken(BaseModel):
    """One API token: the tenant it belongs to and its secret (at least 32 characters)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(pattern=TENANT_PATTERN)
    token: SecretStr

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("API tokens must be at least 32 characters")
        return value


# Request bodies -------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


_B = TypeVar("_B", bound=_Body)


class NoteBody(_Body):
    """``POST /v1/incidents/{id}/notes``."""

    text: str = Field(min_length=1, max_length=NOTE_MAX_CHARS)


class AssignBody(_Body):
    """``POST /v1/incidents/{id}/assign``."""

    assignee: str = Field(min_length=1, max_length=200)


class CloseBody(_Body):
    """``POST /v1/incidents/{id}/close``; ``duplicate_of`` only with ``duplicate``."""

    disposition: Literal["true-positive", "benign-true-positive", "false-positive", "duplicate"]
    summary: str = Field(min_length=1, max_length=4000)
    duplicate_of: str | None = Field(default=None, pattern=r"^INC-\d{8}-\d{4,}$")


class ReopenBody(_Body):
    """``POST /v1/incidents/{id}/reopen``."""

    reason: str = Field(min_length=1, max_length=2000)


class IncidentList(BaseModel):
    """``GET /v1/incidents``: the token's tenant's incidents, newest first."""

    incidents: list[CaseListing]


class ApiError(BaseModel):
    """Every error response."""

    error: str
    field: str | None = None


class _Refused(Exception):
    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.field = status, error, field


def _error(status: int, error: str, field: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        ApiError(error=error, field=field).model_dump(), status_code=status, headers=headers
    )


Handler = Callable[[Request, str, str], Awaitable[JSONResponse]]
"""``(request, tenant, token name) -> response``, for an authenticated request."""


class CasesApi:
    """The routes of the cases API, over one store.

    Args:
        store: the incident store (``stanch serve``'s).
        tokens: the API tokens by name; the name is what the record shows (``api:<name>``).
        case_file: reads one incident for ``GET /v1/incidents/{id}`` (with its SLA).
    """

    def __init__(
        self,
        store: Store,
        tokens: Mapping[str, ApiToken],
        *,
        case_file: Callable[[CaseBook, str, str], Awaitable[CaseFile]],
    ) -> None:
        self.book = CaseBook(store)
        self._tokens = dict(tokens)
        self._case_file = case_file

    def routes(self) -> list[Route]:
        """The Starlette routes to mount on the service."""
        return [
            Route("/v1/incidents", self._guard(self.list_incidents), methods=["GET"]),
            Route("/v1/incidents/{incident_id}", self._guard(self.get_incident), methods=["GET"]),
            Route(
                "/v1/incidents/{incident_id}/{change}",
                self._guard(self.change_incident),
                methods=["POST"],
            ),
            Route("/openapi.json", self._guard(self.openapi), methods=["GET"]),
        ]

    def _caller(self, request: Request) -> tuple[str, str] | None:
        """``(tenant, token name)`` of the request's bearer token, or ``None``."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        presented = given.strip().encode()
        found = None
        # Every token is compared, so the time taken does not tell which one came close.
        for name, token in self._tokens.items():
            if hmac.compare_digest(presented, token.token.get_secret_value().encode()):
                found = (token.tenant, name)
        return found

    def _guard(self, handler: Handler) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def endpoint(request: Request) -> JSONResponse:
            caller = self._caller(request)
            if caller is None:
                return _error(401, "missing or wrong API token")
            try:
                return await handler(request, *caller)
            except _Refused as exc:
                return _error(exc.status, exc.error, exc.field)
            except UnknownIncident as exc:
                return _error(404, str(exc))
            except CaseInputError as exc:
                return _error(422, exc.reason, exc.field)
            except CaseConflict as exc:
                return _error(409, str(exc))
            except CaseError as exc:
                return _error(409, str(exc))

        return endpoint

    async def list_incidents(self, request: Request, tenant: str, _name: str) -> JSONResponse:
        """``GET /v1/incidents?status=&assignee=&since=&limit=``."""
        from flows.policy import parse_duration

        query = request.query_params
        status = query.get("status")
        if status is not None and status not in {s.value for s in CaseStatus}:
            raise _Refused(422, f"{status[:40]!r} is not a case status", "status")
        since = None
        if "since" in query:
            try:
                since = datetime.now(UTC) - parse_duration(query["since"])
            except ValueError as exc:
                raise _Refused(422, str(exc), "since") from exc
        limit_text = query.get("limit", "100")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 500:
            raise _Refused(422, "limit is a number from 1 to 500", "limit")
        rows = await self.book.list(
            tenant=tenant,
            status=status,
            assignee=query.get("assignee"),
            since=since,
            limit=int(limit_text),
        )
        return JSONResponse(IncidentList(incidents=rows).model_dump(mode="json"))

    async def get_incident(self, request: Request, tenant: str, _name: str) -> JSONResponse:
        """``GET /v1/incidents/{id}``: the case file."""
        incident_id = request.path_params["incident_id"]
        await self.book.get(incident_id, tenant=tenant)  # 404 before any other read
        found = await self._case_file(self.book, incident_id, tenant)
        return JSONResponse(found.model_dump(mode="json"))

    async def change_incident(self, request: Request, tenant: str, name: str) -> JSONResponse:
        """``POST /v1/incidents/{id}/notes|assign|close|reopen``."""
        incident_id = request.path_params["incident_id"]
        change = request.path_params["change"]
        actor = f"api:{name}"
        if change == "notes":
            note = await _body(request, NoteBody)
            await self.book.note(incident_id, note.text, actor=actor, tenant=tenant)
            status = 201
        elif change == "assign":
            assign = await _body(request, AssignBody)
            await self.book.assign(incident_id, assign.assignee, actor=actor, tenant=tenant)
            status = 200
        elif change == "close":
            close = await _body(request, CloseBody)
            await self.book.close(
                incident_id,
                disposition=close.disposition,
                summary=close.summary,
                duplicate_of=close.duplicate_of,
                actor=actor,
                tenant=tenant,
            )
            status = 200
        elif change == "reopen":
            reopen = await _body(request, ReopenBody)
            await self.book.reopen(incident_id, reason=reopen.reason, actor=actor, tenant=tenant)
            status = 200
        else:
            raise _Refused(404, f"no such change {change[:40]!r}: notes, assign, close, reopen")
        case = await self.book.get(incident_id, tenant=tenant)
        return JSONResponse(case.model_dump(mode="json"), status_code=status)

    async def openapi(self, _request: Request, _tenant: str, _name: str) -> JSONResponse:
        """``GET /openapi.json``."""
        return JSONResponse(openapi_document())


async def _body(request: Request, model: type[_B]) -> _B:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _Refused(413, f"request body larger than {MAX_BODY_BYTES} bytes", "body")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _Refused(413, f"request body larger than {MAX_BODY_BYTES} bytes", "body")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Refused(400, f"malformed JSON: {exc}", "body") from exc
    if not isinstance(data, dict):
        raise _Refused(400, "the body must be a JSON object", "body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise _Refused(422, str(first["msg"]), field) from exc


def _json_body(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _answer(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_ERRORS = {
    code: _answer(what, "ApiError")
    for code, what in (
        ("401", "missing or wrong API token"),
        ("404", "no such incident for this token's tenant"),
        ("422", "a field is missing or invalid (named in `field`)"),
    )
}
_CHANGE_ERRORS = {
    **_ERRORS,
    "400": _answer("malformed JSON", "ApiError"),
    "409": _answer("the case's state refuses the change", "ApiError"),
    "413": _answer("body too large", "ApiError"),
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the cases API, its schemas from the models it uses."""
    _, schemas = models_json_schema(
        [(model, "serialization") for model in (IncidentList, CaseFile, CaseRecord, ApiError)]
        + [(model, "validation") for model in (NoteBody, AssignBody, CloseBody, ReopenBody)],
        ref_template="#/components/schemas/{model}",
    )
    incident = {"name": "incident_id", "in": "path", "required": True, "schema": {"type": "string"}}

    def change(body: str, summary: str, ok: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "parameters": [incident],
                "requestBody": _json_body(body),
                "responses": {
                    ok: _answer("the case after the change", "CaseRecord"),
                    **_CHANGE_ERRORS,
                },
            }
        }

    query = [
        {"name": "status", "in": "query", "schema": {"enum": [s.value for s in CaseStatus]}},
        {"name": "assignee", "in": "query", "schema": {"type": "string"}},
        {"name": "since", "in": "query", "schema": {"type": "string", "example": "7d"}},
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
        },
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "stanch cases API",
            "version": "1",
            "description": "Incidents of the token's tenant, as cases. Changes are recorded "
            "in the hash-chained ledger as api:<token name>.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/incidents": {
                "get": {
                    "summary": "List incidents, newest first",
                    "parameters": query,
                    "responses": {"200": _answer("the incidents", "IncidentList"), **_ERRORS},
                }
            },
            "/v1/incidents/{incident_id}": {
                "get": {
                    "summary": "One incident: case, alerts, actions, approvals, clocks, SLA",
                    "parameters": [incident],
                    "responses": {"200": _answer("the case file", "CaseFile"), **_ERRORS},
                }
            },
            "/v1/incidents/{incident_id}/notes": change("NoteBody", "Add a note", "201"),
            "/v1/incidents/{incident_id}/assign": change("AssignBody", "Assign", "200"),
            "/v1/incidents/{incident_id}/close": change("CloseBody", "Close", "200"),
            "/v1/incidents/{incident_id}/reopen": change("ReopenBody", "Reopen", "200"),
        },
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
