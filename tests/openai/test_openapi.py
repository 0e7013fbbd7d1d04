"""The OpenAPI document of the OpenAI port: served as written, valid, complete, and honest.

Honest means that schemathesis, generating requests from the document (valid and invalid
ones, in all its phases) against a live server with the tiny model, finds no 5xx and no
status, content type, header, body or stream event the document does not declare, and no
request the document forbids that the server accepts. ``SCHEMATHESIS_EXAMPLES`` sets the
examples per operation and phase (default 10: about 10 s on two cores); e.g.
``SCHEMATHESIS_EXAMPLES=300`` for a long run.

The server runs in explicit model-control mode so load and unload answer 200: they are
pointed at a second folder, ``spare``, never at ``tiny``, which the generation cases need
loaded (unloading it would turn the rest of the run into 503s: documented, but untested).

Schemathesis' pytest plugin (``from_fixture``) does not work with pytest 9, so the test drives
its engine, the one behind ``schemathesis run``, and fails with every failure it reports.
"""

from __future__ import annotations

import collections
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field

import jsonschema_rs
import pytest
import schemathesis
from schemathesis.engine import events, from_schema
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

from tests.conftest import TINY, RunningServer, make_config
from tests.openai.http_client import request
from tests.tiny_model import build_tiny_model
from triton_mlx.openai.openapi import DOCUMENT

API_KEY = "contract-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SPARE = "spare"
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))
MAX_TOKENS = 3
CONTEXT = 512  # the tiny model's
_PLAUSIBLE_NAME = re.compile(r"[A-Za-z0-9._-]+")


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract-repository")
    build_tiny_model(root / TINY)
    build_tiny_model(root / SPARE, seed=1)
    config = make_config(root, api_key=API_KEY, model_control_mode="explicit",
                         load_models=(TINY,), default_max_tokens=MAX_TOKENS)
    with RunningServer(config) as running:
        yield running


def _document() -> dict:
    return json.loads(json.dumps(DOCUMENT))  # a copy, as a client reads it


def test_served_document_is_the_document(contract_server):
    status, headers, body = request(contract_server.port, "GET", "/openapi.json", headers=AUTH)
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert body == _document()


def test_the_document_needs_the_api_key_as_every_route_but_health(contract_server):
    status, _, body = request(contract_server.port, "GET", "/openapi.json")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert request(contract_server.port, "GET", "/v1/health/live")[0] == 200


def test_document_is_valid_openapi_3_1():
    document = _document()
    schemathesis.openapi.from_dict(document).validate()  # the OAS 3.1 meta-schema
    for schema in document["components"]["schemas"].values():
        jsonschema_rs.meta.validate(schema)  # each a valid JSON Schema 2020-12
    refs = list(_refs(document))
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"]


def test_every_route_is_documented_and_nothing_else(contract_server):
    router = contract_server.server.openai.app
    served = {(method, route.pattern.replace(":path}", "}"))
              for route in router._routes for method in route.methods}
    documented = {(method.upper(), path)
                  for path, item in DOCUMENT["paths"].items() for method in item}
    assert served == documented


def test_unknown_parameters_are_refused_as_documented(contract_server):
    """The request schemas say ``additionalProperties: false``; the server agrees."""
    schemas = DOCUMENT["components"]["schemas"]
    for path, name in (("/v1/chat/completions", "ChatCompletionRequest"),
                       ("/v1/completions", "CompletionRequest"),
                       ("/v1/embeddings", "EmbeddingRequest")):
        assert schemas[name]["additionalProperties"] is False
        status, _, body = request(contract_server.port, "POST", path,
                                  {"model": TINY, "bogus": 1}, headers=AUTH)
        assert status == 400 and body["error"]["param"] == "bogus", body


_HI = [{"role": "user", "content": "hi"}]


def _validator(name: str) -> jsonschema_rs.Validator:
    document = _document()
    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": document["components"]})


@pytest.mark.parametrize("path, schema, body, param", [
    # Each was accepted (200) before the validation fixes found by schemathesis.
    ("/v1/chat/completions", "ChatCompletionRequest",
     {"model": TINY, "messages": _HI, "tools": {}}, "tools"),
    ("/v1/chat/completions", "ChatCompletionRequest",
     {"model": TINY, "messages": [{**_HI[0], "tool_calls": {}}]}, "messages[0]"),
    ("/v1/chat/completions", "ChatCompletionRequest",
     {"model": TINY, "messages": [{**_HI[0], "function_call": False}]}, "messages[0]"),
    ("/v1/completions", "CompletionRequest",
     {"model": TINY, "prompt": "hi", "best_of": True}, "best_of"),
    *[("/v1/chat/completions", "ChatCompletionRequest",
       {"model": TINY, "messages": _HI, "logit_bias": {key: 1}}, "logit_bias")
      for key in (" 5", "+5", "1_0", "\u0663")],
])
def test_the_server_refuses_what_the_document_forbids(contract_server, path, schema, body, param):
    assert not _validator(schema).is_valid(body)
    status, _, answer = request(contract_server.port, "POST", path,
                                {**body, "max_tokens": 1}, headers=AUTH)
    assert status == 400 and answer["error"]["param"] == param, answer


def test_the_no_op_values_the_document_allows_are_accepted(contract_server):
    body = {"model": TINY, "messages": [{**_HI[0], "tool_calls": []}], "tools": [],
            "tool_choice": "none", "response_format": {"type": "text"}, "max_tokens": 1,
            "logit_bias": {"5": 1}}
    assert _validator("ChatCompletionRequest").is_valid(body)
    status, _, answer = request(contract_server.port, "POST", "/v1/chat/completions", body,
                                headers=AUTH)
    assert status == 200, answer
    assert _validator("ChatCompletion").is_valid(answer)


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


# ----- schemathesis against the live server -----


def contract_config(port: int, examples: int) -> schemathesis.Config:
    """Every phase and check, valid and invalid data, with two exceptions:

    - ``positive_data_acceptance``: a request the document allows may still be refused with a
      400 for what depends on the model (token ids beyond its vocabulary, a prompt that
      tokenizes to nothing, ``n`` above its batch slots, ``max_tokens`` beyond its context,
      ``dimensions`` below its size, ...) or on two parameters together (``max_tokens`` and
      ``max_completion_tokens`` that differ); the descriptions say so.
    - ``allow_header_conformance`` on load and unload: ``/v1/models/spare/load`` is also the
      documented ``GET /v1/models/{model_id}`` with the id ``spare/load`` (that route takes
      the rest of the path), so ``Allow: GET, HEAD, POST`` is right, but schemathesis reads
      GET as extra.
    """
    return schemathesis.Config.from_dict({
        "generation": {"mode": "all", "max-examples": examples, "database": "none"},
        "checks": {"positive_data_acceptance": {"enabled": False}},
        "operations": [{"include-path-regex": "/(load|unload)$",
                        "checks": {"allow_header_conformance": {"enabled": False}}}],
        "auth": {"openapi": {"bearerAuth": {"bearer": API_KEY}}},
        "base-url": f"http://127.0.0.1:{port}",
        "request-timeout": 60,
    })


def aim(context, case, kwargs) -> None:
    """Point generated requests where they exercise the server without disturbing the run
    (a ``before_call`` hook: it sees every phase's requests just before they are sent).

    A plausible model name (letters, digits, ``.``, ``_``, ``-``) becomes the tiny model, so
    the request reaches the engine; other names stay and get 404. ``max_tokens`` up to the
    context is cut to 3 so generations finish fast (larger values are refused at once, so
    they stay). Load and unload only ever touch ``spare``; model cards are asked for tiny or
    spare. Half the plausible response ids become a response stored just before, so reading
    and deleting stored responses is exercised (links alone reach them too rarely)."""
    body = case.body
    if isinstance(body, dict):
        model = body.get("model")
        if isinstance(model, str) and _PLAUSIBLE_NAME.fullmatch(model):
            body["model"] = TINY
        for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            value = body.get(key)
            if isinstance(value, int) and MAX_TOKENS < value <= CONTEXT:
                body[key] = MAX_TOKENS
    response_id = (case.path_parameters or {}).get("response_id")
    if isinstance(response_id, str) and _PLAUSIBLE_NAME.fullmatch(response_id) and \
            len(response_id) % 2:  # half of them: a response stored just now, to read or delete
        case.path_parameters["response_id"] = _stored_response(case)
    model_id = (case.path_parameters or {}).get("model_id")
    if isinstance(model_id, str) and _PLAUSIBLE_NAME.fullmatch(model_id):
        if case.operation.path.endswith(("/load", "/unload")) or len(model_id) % 2:
            case.path_parameters["model_id"] = SPARE
        else:
            case.path_parameters["model_id"] = TINY


def _stored_response(case) -> str:
    """The id of a response stored now on the server the case goes to (``/v1/responses``)."""
    port = urllib.parse.urlsplit(case.operation.schema.get_base_url()).port
    status, _, body = request(port, "POST", "/v1/responses",
                              {"model": TINY, "input": "Hi", "max_output_tokens": 1},
                              headers=AUTH)
    assert status == 200, body
    return body["id"]


@dataclass
class ContractRun:
    """What one schemathesis run did: requests per operation and status, and its failures."""

    statuses: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())


def run_contract(port: int, examples: int) -> ContractRun:
    schema = schemathesis.openapi.from_dict(_document(), config=contract_config(port, examples))
    run = ContractRun()
    seen: set[tuple] = set()
    GLOBAL_HOOK_DISPATCHER.register_hook_with_name(aim, "before_call")
    try:
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                _record(event.recorder, run, seen)
            elif isinstance(event, events.NonFatalError | events.FatalError):
                run.failures.append(f"engine error: {event!r}")
            elif isinstance(event, events.EngineFinished):
                run.failures.extend(f"after the run: {f.title}" for f in event.failures)
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(aim)
    return run


def _record(recorder, run: ContractRun, seen: set[tuple]) -> None:
    for case_id, interaction in recorder.interactions.items():
        if interaction.response is not None:
            case = recorder.cases[case_id].value
            run.statuses[(f"{case.method} {case.operation.path}",
                          interaction.response.status_code)] += 1
    for checks in recorder.checks.values():
        for check in checks:
            info = check.failure_info
            if info is None or (recorder.label, check.name, info.failure.title) in seen:
                continue
            seen.add((recorder.label, check.name, info.failure.title))
            run.failures.append(f"{recorder.label}: {check.name}: {info.failure.title}\n"
                                f"{info.failure.message}\n{info.code_sample}")


def test_server_honours_the_document(contract_server):
    run = run_contract(contract_server.port, EXAMPLES)
    assert not run.failures, "\n\n".join(run.failures)
    # Not vacuous: every operation was answered 2xx at least once.
    answered = {operation for (operation, status) in run.statuses if 200 <= status < 300}
    documented = {f"{method.upper()} {path}"
                  for path, item in DOCUMENT["paths"].items() for method in item}
    assert answered == documented, sorted(documented - answered)
    # And the model the generation cases need is still there.
    assert request(contract_server.port, "GET", f"/v1/models/{TINY}",
                   headers=AUTH)[2]["state"] == "READY"
