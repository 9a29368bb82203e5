"""The OpenAPI 3.1 description of the REST API (served at /openapi.json).

Kept next to the handlers and checked by tests against the routes the app
serves, so an endpoint cannot be added without being described.
"""

from __future__ import annotations

from typing import Any

STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["status", "message"],
                             "properties": {"status": {"type": "integer"}, "message": STRING,
                                            "field": STRING}}},
}

AGENT_STATE = {
    "type": "object",
    "required": ["agent", "state"],
    "properties": {"agent": STRING, "state": STRING, "reason": NULLABLE_STRING, "since": NULLABLE_STRING},
}
AGENT = {
    "type": "object",
    "required": ["id", "name", "state"],
    "properties": {"id": STRING, "name": STRING, "team": NULLABLE_STRING, "skills": {"type": "object"},
                   "state": STRING, "reason": NULLABLE_STRING, "since": NULLABLE_STRING,
                   "endpoint": NULLABLE_STRING, "calls": {"type": "array", "items": STRING}},
}
CALL = {
    "type": "object",
    "required": ["call_id", "direction", "state"],
    "properties": {
        "call_id": STRING, "tenant": STRING, "provider": STRING, "direction": STRING, "state": STRING,
        "outcome": NULLABLE_STRING, "from_number": NULLABLE_STRING, "to_number": NULLABLE_STRING,
        "queue": NULLABLE_STRING, "agent": NULLABLE_STRING, "created_at": NULLABLE_STRING,
        "answered_at": NULLABLE_STRING, "ended_at": NULLABLE_STRING, "ring_s": {"type": "number"},
        "talk_s": {"type": "number"}, "hold_s": {"type": "number"}, "wait_s": {"type": "number"},
        "contact": {"type": ["object", "null"]}, "disposition": NULLABLE_STRING,
    },
}


def _resp(schema: dict[str, Any] | None, description: str = "OK") -> dict[str, Any]:
    r: dict[str, Any] = {"description": description}
    if schema is not None:
        r["content"] = {"application/json": {"schema": schema}}
    return r


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad request", 401: "Missing or invalid token", 404: "Not found (or not yours)",
            409: "Conflict with the call's or agent's state", 422: "Invalid parameter (the message names it)",
            429: "Rate limited (see Retry-After)", 502: "The provider refused the command"}
    return {str(c): _resp(ERROR, text[c]) for c in codes}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _q(name: str, schema: dict[str, Any] | None = None, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema or STRING, "description": description}


def _p(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": STRING}


STATS_PARAMS = [
    _q("from", description="ISO date or datetime (site time zone)"),
    _q("to", description="ISO date or datetime, exclusive"),
    _q("bucket", {"type": "string", "enum": ["hour", "day", "week"]}),
    _q("agent"), _q("team"), _q("queue"),
    _q("direction", {"type": "string", "enum": ["inbound", "outbound", "internal"]}),
    _q("format", {"type": "string", "enum": ["json", "csv"]}),
]
STATS_REPORTS = ["agents", "queues", "hourly", "typology", "calls-list", "customers", "at-risk", "contacted", "live"]

ACTION_BODIES: dict[str, dict[str, Any]] = {
    "answer": {"type": "object"},
    "hangup": {"type": "object"},
    "hold": {"type": "object"},
    "unhold": {"type": "object"},
    "transfer": {"type": "object", "required": ["target"],
                 "properties": {"target": STRING,
                                "mode": {"type": "string", "enum": ["blind", "consult", "complete", "cancel"]}}},
    "record": {"type": "object",
               "properties": {"action": {"type": "string", "enum": ["start", "stop", "pause", "resume"]}}},
    "voicemail-drop": {"type": "object", "required": ["message"], "properties": {"message": STRING}},
    "monitor": {"type": "object", "properties": {
        "mode": {"type": "string", "enum": ["listen", "whisper", "barge", "takeover", "stop"]},
        "endpoint": STRING}},
    "dtmf": {"type": "object", "required": ["digits"], "properties": {"digits": STRING}},
    "wrap-up": {"type": "object", "properties": {"disposition": NULLABLE_STRING, "notes": NULLABLE_STRING}},
}


def spec(public_url: str = "http://127.0.0.1:8080") -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/v1/me": {"get": {"summary": "Who am I", "responses": {"200": _resp({"type": "object"}),
                                                                   **_errors(401)}}},
        "/api/v1/agents": {"get": {"summary": "Agents I may see",
                                   "responses": {"200": _resp({"type": "array", "items": AGENT}), **_errors(401)}}},
        "/api/v1/agents/{agent_id}/state": {
            "parameters": [_p("agent_id")],
            "get": {"summary": "An agent's state", "responses": {"200": _resp(AGENT_STATE), **_errors(401, 404)}},
            "put": {"summary": "Change an agent's state",
                    "requestBody": _body({"type": "object", "required": ["state"], "properties": {
                        "state": {"type": "string", "enum": ["available", "away", "offline"]},
                        "reason": NULLABLE_STRING}}),
                    "responses": {"200": _resp(AGENT_STATE), **_errors(400, 401, 404, 409, 422)}},
        },
        "/api/v1/queues": {"get": {"summary": "Queues with live figures",
                                   "responses": {"200": _resp({"type": "array", "items": {"type": "object"}}),
                                                 **_errors(401)}}},
        "/api/v1/dispositions": {"get": {"summary": "Wrap-up codes",
                                         "responses": {"200": _resp({"type": "array", "items": STRING}),
                                                       **_errors(401)}}},
        "/api/v1/voicemail-messages": {"get": {"summary": "Pre-recorded voicemail drops",
                                               "responses": {"200": _resp({"type": "array",
                                                                           "items": {"type": "object"}}),
                                                             **_errors(401)}}},
        "/api/v1/calls": {
            "get": {"summary": "Calls I may see",
                    "parameters": [_q("since"), _q("until"), _q("agent"), _q("queue"),
                                   _q("direction"), _q("state", {"type": "string", "enum": ["active", "ended"]}),
                                   _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                                   _q("offset", {"type": "integer", "minimum": 0})],
                    "responses": {"200": _resp({"type": "array", "items": CALL}), **_errors(401, 422)}},
            "post": {"summary": "Click-to-call: ring the agent, then the number",
                     "requestBody": _body({"type": "object", "required": ["to"],
                                           "properties": {"to": STRING, "agent": STRING}}),
                     "responses": {"201": _resp({"type": "object", "required": ["call_id"],
                                                 "properties": {"call_id": STRING, "state": STRING}}, "Created"),
                                   **_errors(400, 401, 404, 422, 429, 502)}},
        },
        "/api/v1/calls/{call_id}": {
            "parameters": [_p("call_id")],
            "get": {"summary": "A call with its events, activity, transcript, summary and routing decisions",
                    "responses": {"200": _resp(CALL), **_errors(401, 404)}},
        },
        "/api/v1/contacts": {"post": {
            "summary": "Create a contact from the pop's new-contact form (local CRM, or a CRM that can)",
            "requestBody": _body({"type": "object", "required": ["phone"], "properties": {
                "phone": STRING, "first_name": STRING, "last_name": STRING, "email": STRING,
                "account_name": STRING, "call_id": STRING}}),
            "responses": {"201": _resp({"type": "object"}, "Created"), **_errors(400, 401, 404, 422)}}},
        "/api/v1/calls/{call_id}/contact": {
            "parameters": [_p("call_id")],
            "put": {"summary": "The contact the agent chose in the pop's chooser",
                    "requestBody": _body({"type": "object", "required": ["contact_id"], "properties": {
                        "contact_id": STRING, "account_id": STRING}}),
                    "responses": {"200": _resp({"type": "object"}), **_errors(400, 401, 404, 422)}}},
        "/api/v1/monitor-sessions": {"get": {"summary": "Supervision audit",
                                             "parameters": [_q("limit", {"type": "integer", "minimum": 1,
                                                                         "maximum": 1000})],
                                             "responses": {"200": _resp({"type": "array",
                                                                         "items": {"type": "object"}}),
                                                           **_errors(401, 422)}}},
        "/api/v1/admin/routing": {
            "get": {"summary": "The routing configuration (admin)",
                    "responses": {"200": _resp({"type": "object"}), **_errors(401, 404)}},
            "put": {"summary": "Change queues, skills, strategies, rules, scripts, dispositions at run time (admin); "
                               "refused whole with 422 on any problem",
                    "requestBody": _body({"type": "object", "properties": {
                        "queues": {"type": "array", "items": {"type": "object"}},
                        "agents": {"type": "array", "items": {"type": "object"}},
                        "priority_rules": {"type": "array", "items": {"type": "object"}},
                        "dispositions": {"type": "array", "items": STRING}}}),
                    "responses": {"200": _resp({"type": "object"}), **_errors(400, 401, 404, 422)}},
        },
        "/api/v1/admin/tokens/revoke": {"post": {
            "summary": "Revoke a token (admin); its open sockets close",
            "requestBody": _body({"type": "object", "properties": {"token": STRING, "token_sha256": STRING}}),
            "responses": {"200": _resp({"type": "object"}), **_errors(400, 401, 404, 422)}}},
    }
    for action, body in ACTION_BODIES.items():
        paths[f"/api/v1/calls/{{call_id}}/{action}"] = {
            "parameters": [_p("call_id")],
            "post": {"summary": f"{action} on a call", "requestBody": _body(body, required=False),
                     "responses": {"200": _resp({"type": "object"}), **_errors(400, 401, 404, 409, 422, 502)}},
        }
    for report in STATS_REPORTS:
        paths[f"/api/v1/stats/{report}"] = {"get": {
            "summary": f"Statistics: {report}", "parameters": STATS_PARAMS,
            "responses": {"200": {"description": "JSON, or CSV with format=csv",
                                  "content": {"application/json": {"schema": {}}, "text/csv": {"schema": STRING}}},
                          **_errors(401, 404, 422)}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "CTI middleware API", "version": "1.0.0",
                 "description": "Calls, agents, queues, supervision and statistics. See docs/api.md."},
        "servers": [{"url": public_url}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"Error": ERROR, "Call": CALL, "Agent": AGENT}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
