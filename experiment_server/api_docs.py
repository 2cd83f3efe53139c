"""The OpenAPI document of the participant and admin API, built from the pydantic bodies.

Served at ``/api/openapi.json``; ``docs/api.md`` is generated from it
(``python -m experiment_server.api_docs > docs/api.md``) and a test keeps the two in step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from experiment_server import schemas
from experiment_server.config import admin_cookie_name

blueprint = Blueprint("api_docs", __name__)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    ok: tuple[int, type[BaseModel] | None] = (200, None)
    errors: dict[int, str] = field(default_factory=dict)
    admin: bool = False
    media: str | None = None  # a success body that is not JSON (images)
    also_ok: dict[int, str] = field(default_factory=dict)  # other success codes, with the same body


_WRITE_ERRORS = {
    400: "malformed body: not JSON, nested too deep, a wrong type, a non-finite number or a control character "
    "(the detail names the field)",
    413: "body larger than the server's max_request_bytes",
    415: "Content-Type is not application/json",
    429: "rate limit reached; Retry-After says when to try again",
}
_MAIN_CONFLICT = (
    "practice not finished, or session already over; or refused by a rule (rule: fetch_first, the trial was never "
    "fetched; in_order, an earlier trial is unanswered)"
)
_TOO_EARLY = (
    "answered sooner than min_single_trial_s after the trial was fetched (rule: min_single_trial_s): nothing is "
    "stored; send it again after retry_after_s"
)
_SESSION_ERRORS = {**_WRITE_ERRORS, 404: "unknown session token"}
_BEACON_ERRORS = {k: v for k, v in _SESSION_ERRORS.items() if k != 415}  # sendBeacon posts text/plain
ENDPOINTS = (
    Endpoint(
        "post",
        "/api/sessions",
        "Start a session after consent: reserves the least-filled task",
        schemas.StartSession,
        (201, schemas.SessionOut),
        {
            **_WRITE_ERRORS,
            400: "malformed body, MTurk preview, or a platform id missing or not in its platform's format",
            403: "phone or tablet, a worker not on the allow-list, one who took part in a study of the same group, "
            "or a direct link where direct links are off",
            409: "the worker already has a session (or declined), or the consent text changed",
        },
    ),
    Endpoint(
        "post",
        "/api/declines",
        "Record that a worker declined consent",
        schemas.Decline,
        (201, None),
        {
            **_WRITE_ERRORS,
            400: "malformed body, or a platform id missing or not in its platform's format",
            403: "a direct link where direct links are off, or a worker not on the allow-list",
            409: "already recorded, or the consent text changed since the page loaded",
        },
    ),
    Endpoint(
        "get",
        "/api/sessions/{token}",
        "Session state: where to resume",
        ok=(200, schemas.SessionOut),
        errors=_SESSION_ERRORS,
    ),
    Endpoint(
        "post",
        "/api/sessions/{token}/phase",
        "Record when instructions, practice or main trials began",
        schemas.PhaseBody,
        errors={**_SESSION_ERRORS, 409: "the session is over", 410: "reservation expired"},
    ),
    Endpoint(
        "get",
        "/api/sessions/{token}/practice/{block}/{index}",
        "One practice trial of the current block",
        ok=(200, schemas.TrialOut),
        errors={**_SESSION_ERRORS, 409: "not the current practice block"},
    ),
    Endpoint(
        "get",
        "/api/sessions/{token}/practice/{block}/{index}/images/{slot}.png",
        "One image slot of a practice trial (max0.., min0.., q0..), re-encoded and padded for this trial",
        errors={**_SESSION_ERRORS, 404: "unknown session, or no such slot", 409: "not the current practice block"},
        media="image/png",
    ),
    Endpoint(
        "post",
        "/api/sessions/{token}/practice/{block}/responses",
        "Store a practice response; the reply says whether it was correct and how the block went",
        schemas.ResponseBody,
        (201, schemas.StoredOut),
        {**_SESSION_ERRORS, 409: "not the current block, or the session is over", 410: "reservation expired"},
        also_ok={200: "a retry of a response already stored (duplicate: true)"},
    ),
    Endpoint(
        "get",
        "/api/sessions/{token}/trials/{index}",
        "One main trial; its first fetch starts the trial's time on the server's clock",
        ok=(200, schemas.TrialOut),
        errors=_SESSION_ERRORS,
    ),
    Endpoint(
        "get",
        "/api/sessions/{token}/trials/{index}/images/{slot}.png",
        "One image slot of a main trial: the URL names the slot, never the image; 304 on a matching If-None-Match",
        errors={404: "unknown session, trial or slot", 409: "the session has no task"},
        media="image/png",
    ),
    Endpoint(
        "get",
        "/api/sessions/{token}/example/images/{slot}.png",
        "One image slot of the instructions' example trial",
        errors={404: "unknown session, or no such slot"},
        media="image/png",
    ),
    Endpoint(
        "post",
        "/api/sessions/{token}/responses",
        "Store a main-trial response, committed before the reply; a retry of a stored one answers 200",
        schemas.ResponseBody,
        (201, schemas.StoredOut),
        {**_SESSION_ERRORS, 409: _MAIN_CONFLICT, 410: "reservation expired", 425: _TOO_EARLY},
        also_ok={200: "a retry of a response already stored (duplicate: true)"},
    ),
    Endpoint(
        "post",
        "/api/sessions/{token}/responses/batch",
        "Store several queued responses at once (navigator.sendBeacon on page hide); all or none",
        schemas.ResponseBatch,
        errors={
            **_BEACON_ERRORS,
            400: "a malformed item: the detail starts with responses.N, the item's position",
            409: _MAIN_CONFLICT,
            410: "reservation expired",
            425: _TOO_EARLY,
        },
    ),
    Endpoint(
        "post",
        "/api/sessions/{token}/events",
        "Focus, blur, fullscreen and resize events (text/plain from sendBeacon is taken too)",
        schemas.EventBatch,
        (201, None),
        {**_BEACON_ERRORS, 409: "the session is over, or has stored its max_events_per_session", 410: "expired"},
    ),
    Endpoint(
        "post",
        "/api/sessions/{token}/feedback",
        "Optional free-text feedback, before completion",
        schemas.FeedbackBody,
        errors={**_SESSION_ERRORS, 409: "the session is over", 410: "reservation expired"},
    ),
    Endpoint(
        "post",
        "/api/sessions/{token}/complete",
        "Finish: checks every main trial is stored, then issues the completion code (or the failed one)",
        ok=(200, schemas.CompletionOut),
        errors={**_SESSION_ERRORS, 409: "trials still unanswered"},
    ),
    Endpoint(
        "get",
        "/api/admin/progress",
        "Per task: reserved, in progress, completed, excluded, expired",
        admin=True,
        errors={401: "not logged in"},
    ),
    Endpoint(
        "get",
        "/api/admin/participants",
        "One page of sessions, newest first (?page=N&per_page=M, up to 1,000): status and the exclusion "
        "checks previewed",
        admin=True,
        errors={400: "page or per_page is not a whole number", 401: "not logged in"},
    ),
    Endpoint(
        "get",
        "/api/admin/dashboard",
        "The dashboard's panels: totals, tasks, the funnel, the hourly series and feedback",
        admin=True,
        errors={401: "not logged in"},
    ),
)


def _json_body(model: type[BaseModel]) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}


def openapi_document(cookie_name: str = admin_cookie_name("<study_id>")) -> dict:
    models = {m for e in ENDPOINTS for m in (e.body, e.ok[1]) if m is not None} | {schemas.ErrorOut}
    _, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict] = {}
    for e in ENDPOINTS:
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer" if name in ("block", "index") else "string"},
            }
            for name in ("token", "block", "index", "slot")
            if "{" + name + "}" in e.path
        ]
        status, out = e.ok
        responses = {
            str(status): {
                "description": "OK",
                **({"content": _json_body(out)} if out else {}),
                **({"content": {e.media: {"schema": {"type": "string", "format": "binary"}}}} if e.media else {}),
            }
        }
        for code, text in e.also_ok.items():
            responses[str(code)] = {"description": text, **({"content": _json_body(out)} if out else {})}
        for code, text in e.errors.items():
            error = _json_body(schemas.ErrorOut)
            responses[str(code)] = {"description": text, "content": error}
        operation = {
            "summary": e.summary,
            "parameters": params,
            "responses": responses,
            "tags": ["admin" if e.admin else "participant"],
        }
        if e.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": _json_body(e.body),
            }
        if e.admin:
            operation["security"] = [{"adminSession": []}]
        paths.setdefault(e.path, {})[e.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "psychinterp experiment server", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"adminSession": {"type": "apiKey", "in": "cookie", "name": cookie_name}},
        },
    }


def markdown(document: dict) -> str:
    lines = [
        "# HTTP API",
        "",
        "Generated from `experiment_server/api_docs.py` (`python -m experiment_server.api_docs > docs/api.md`);",
        "the server serves the same document at `/api/openapi.json`. Every request body is validated: a bad",
        'one gets a 400 with `{"error": ..., "detail": ...}` naming the field. Admin endpoints need the',
        "session cookie (`psychinterp_admin_<study_id>`) of a login at `/admin/login`.",
        "",
        "| method | path | what it does | body | success |",
        "|---|---|---|---|---|",
    ]
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            status = next(iter(op["responses"]))
            body_name = body.get("$ref", "").rsplit("/", 1)[-1] or "-"
            lines.append(f"| {method.upper()} | `{path}` | {op['summary']} | {body_name} | {status} |")
    lines += ["", "## Schemas", ""]
    for name, schema in document["components"]["schemas"].items():
        lines += [f"### {name}", "", "```json", json.dumps(schema, indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)


@blueprint.get("/api/openapi.json")
def openapi_json():
    return jsonify(openapi_document(current_app.config["SESSION_COOKIE_NAME"]))


if __name__ == "__main__":
    print(markdown(openapi_document()), end="")
