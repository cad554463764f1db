"""The OpenAPI document against the server: same paths, and every answer fits."""

from __future__ import annotations

import orjson
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from tests.daemon.fake_backend import Served
from tests.daemon.test_api_v1 import RULE, call
from tocsin.daemon.api_v1 import openapi_document

DOCUMENT = orjson.loads(openapi_document())
SILENCE = {"matchers": ['team="ml"'], "duration": "1h"}
WEBHOOK = {"type": "webhook", "name": "hook", "url": "https://hooks.example/x"}

#: (method, documented path, url, body, status): every path, its success and
#: its main errors, in an order where each step finds what it needs.
SCENARIO = [
    ("get", "/-/healthy", "/-/healthy", None, 200),
    ("get", "/-/ready", "/-/ready", None, 200),
    ("post", "/-/reload", "/-/reload", None, 200),
    ("post", "/api/v1/reload", "/api/v1/reload", None, 200),
    ("get", "/api/v1/openapi.json", "/api/v1/openapi.json", None, 200),
    ("get", "/api/v1/alerts", "/api/v1/alerts?label=team=ml", None, 200),
    ("get", "/api/v1/alerts", "/api/v1/alerts?limit=x", None, 400),
    ("get", "/api/v1/alerts", "/api/v1/alerts?state=x", None, 422),
    ("get", "/api/v1/alerts/{ref}", "/api/v1/alerts/uid-1", None, 200),
    ("get", "/api/v1/alerts/{ref}", "/api/v1/alerts/99", None, 404),
    ("post", "/api/v1/alerts/{ref}/{action}", "/api/v1/alerts/1/acknowledge", {}, 200),
    ("post", "/api/v1/alerts/{ref}/{action}", "/api/v1/alerts/1/close", None, 409),
    ("post", "/api/v1/alerts/{ref}/{action}", "/api/v1/alerts/1/nap", None, 404),
    ("post", "/api/v1/alerts/{ref}/{action}", "/api/v1/alerts/1/close", [], 400),
    ("post", "/api/v1/alerts/{ref}/{action}", "/api/v1/alerts/1/close", {"a": 1}, 422),
    ("post", "/api/v1/silences", "/api/v1/silences", SILENCE, 201),
    ("post", "/api/v1/silences", "/api/v1/silences", {"matchers": ["x"]}, 422),
    ("post", "/api/v1/silences", "/api/v1/silences", "x", 400),
    ("get", "/api/v1/silences", "/api/v1/silences?state=active", None, 200),
    ("get", "/api/v1/silences", "/api/v1/silences?state=x", None, 422),
    ("get", "/api/v1/silences/{id}", "/api/v1/silences/s1", None, 200),
    ("get", "/api/v1/silences/{id}", "/api/v1/silences/s9", None, 404),
    ("delete", "/api/v1/silences/{id}", "/api/v1/silences/s1", None, 200),
    ("delete", "/api/v1/silences/{id}", "/api/v1/silences/s9", None, 404),
    ("post", "/api/v1/rules", "/api/v1/rules", RULE, 201),
    ("post", "/api/v1/rules", "/api/v1/rules", RULE, 409),
    ("post", "/api/v1/rules", "/api/v1/rules", {"name": "x", "window": "?"}, 422),
    ("post", "/api/v1/rules", "/api/v1/rules", 3, 400),
    ("get", "/api/v1/rules", "/api/v1/rules", None, 200),
    ("delete", "/api/v1/rules/{name}", "/api/v1/rules/fraud-drift", None, 200),
    ("delete", "/api/v1/rules/{name}", "/api/v1/rules/fraud-drift", None, 404),
    ("delete", "/api/v1/rules/{name}", "/api/v1/rules/latency", None, 409),
    ("post", "/api/v1/integrations", "/api/v1/integrations", WEBHOOK, 201),
    ("post", "/api/v1/integrations", "/api/v1/integrations", WEBHOOK, 409),
    ("post", "/api/v1/integrations", "/api/v1/integrations", {"type": "sms"}, 422),
    ("post", "/api/v1/integrations", "/api/v1/integrations", None, 400),
    ("get", "/api/v1/integrations", "/api/v1/integrations", None, 200),
    (
        "post",
        "/api/v1/integrations/{name}/test",
        "/api/v1/integrations/hook/test",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/integrations/{name}/test",
        "/api/v1/integrations/x/test",
        None,
        404,
    ),
    (
        "get",
        "/api/v1/integrations/{name}/health",
        "/api/v1/integrations/hook/health",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/integrations/{name}/health",
        "/api/v1/integrations/x/health",
        None,
        404,
    ),
    (
        "get",
        "/api/v1/deadletters",
        "/api/v1/deadletters?channel=hook&limit=5",
        None,
        200,
    ),
    ("get", "/api/v1/deadletters", "/api/v1/deadletters?limit=0", None, 400),
    ("get", "/api/v1/audit", "/api/v1/audit?kind=delivery&since=0", None, 200),
    ("get", "/api/v1/audit", "/api/v1/audit?alert=uid-1&limit=1000", None, 200),
    ("get", "/api/v1/audit", "/api/v1/audit?alert=99", None, 404),
    ("get", "/api/v1/audit", "/api/v1/audit?limit=1001", None, 400),
    ("get", "/api/v1/audit", "/api/v1/audit?kind=mail", None, 422),
    ("delete", "/api/v1/integrations/{name}", "/api/v1/integrations/hook", None, 200),
    ("delete", "/api/v1/integrations/{name}", "/api/v1/integrations/hook", None, 404),
    ("delete", "/api/v1/integrations/{name}", "/api/v1/integrations/log", None, 409),
    ("put", "/api/v1/settings/{kind}", "/api/v1/settings/grouping", {}, 200),
    ("put", "/api/v1/settings/{kind}", "/api/v1/settings/dedup", {"keys": ["a"]}, 200),
    (
        "put",
        "/api/v1/settings/{kind}",
        "/api/v1/settings/digest",
        {"interval": 60},
        200,
    ),
    ("put", "/api/v1/settings/{kind}", "/api/v1/settings/dedup", {"keys": 1}, 422),
    ("put", "/api/v1/settings/{kind}", "/api/v1/settings/dedup", [], 400),
    ("put", "/api/v1/settings/{kind}", "/api/v1/settings/nope", {}, 404),
    ("get", "/api/v1/settings/{kind}", "/api/v1/settings/grouping", None, 200),
    ("get", "/api/v1/settings/{kind}", "/api/v1/settings/dedup", None, 200),
    ("get", "/api/v1/settings/{kind}", "/api/v1/settings/digest", None, 200),
    ("get", "/api/v1/settings/{kind}", "/api/v1/settings/nope", None, 404),
    ("get", "/api/v1/routes", "/api/v1/routes", None, 200),
    ("post", "/api/v1/routes/test", "/api/v1/routes/test", {"labels": {}}, 200),
    ("post", "/api/v1/routes/test", "/api/v1/routes/test", {"labels": 1}, 422),
    ("post", "/api/v1/routes/test", "/api/v1/routes/test", None, 400),
    ("get", "/api/v1/groups", "/api/v1/groups", None, 200),
    ("get", "/api/v1/status", "/api/v1/status", None, 200),
]


def documented_operations() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, operations in DOCUMENT["paths"].items()
        for method in operations
    }


def response_schema(method: str, path: str, status: int) -> dict:
    """Return the documented schema of one answer, able to resolve its refs."""
    responses = DOCUMENT["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method} {path} documents no {status}"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    # The references point into the document: give them its components.
    return {**schema, "components": DOCUMENT["components"]}


def test_the_document_is_valid_openapi_3_1():
    assert DOCUMENT["openapi"].startswith("3.1")
    validate(DOCUMENT)


def test_the_router_serves_exactly_the_documented_paths(tmp_path):
    router = Served(tmp_path).control.app.router
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in router.routes()
        # aiohttp answers HEAD on the health paths by itself.
        if route.method != "HEAD"
    }

    assert served == documented_operations()


def test_the_scenario_reaches_every_documented_operation():
    reached = {
        (method, path) for method, path, _, _, status in SCENARIO if status < 300
    }

    assert reached == documented_operations()


async def test_every_answer_of_the_scenario_fits_the_document(served_api):
    for method, path, url, body, status in SCENARIO:
        data = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"}
        answer_status, answer = await call(
            served_api, method.upper(), url, data=data, headers=headers
        )
        assert answer_status == status, (method, url, answer)
        validator = Draft202012Validator(response_schema(method, path, status))
        errors = [error.message for error in validator.iter_errors(answer)]
        assert errors == [], (method, url, answer)


@pytest.mark.parametrize("status", [401, 500])
def test_every_operation_documents_the_errors_any_request_may_get(status):
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/v1") and path != "/api/v1/openapi.json":
                assert str(status) in operation["responses"], (method, path)
