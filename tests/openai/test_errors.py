"""Every error a client can cause: status, OpenAI's error shape, the parameter named."""

import json
import shutil

import openai
import pytest

from tests.conftest import TINY
from tests.openai.http_client import request
from tests.tiny_model import build_tiny_model
from tests.waiting import wait_for

HELLO = [{"role": "user", "content": "Hello"}]


def assert_error(status, body, expected_status, param=None, words=()):
    assert status == expected_status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    for word in words:
        assert word in error["message"]


def test_invalid_json_is_400(tiny_server):
    status, _, body = request(tiny_server.port, "POST", "/v1/chat/completions", raw=b"{nope")
    assert_error(status, body, 400, words=("not valid JSON",))


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("temperature", "hot", ("temperature", "number")),
        ("temperature", 3, ("between 0 and 2",)),
        ("top_p", 1.5, ("top_p",)),
        ("max_tokens", 0, ("max_tokens",)),
        ("max_tokens", 2.5, ("integer",)),
        ("stop", [1, 2], ("stop",)),
        ("stream", "yes", ("boolean",)),
        ("frequency_penalty", -3, ("frequency_penalty",)),
        ("logit_bias", {"abc": 1}, ("token id",)),
        ("logit_bias", {"999999": 1}, ("out of range",)),
        ("seed", "x", ("seed",)),
        ("messages", [], ("messages",)),
        ("n", 0, ("n",)),
        ("n", 5, ("batch slots",)),  # the tiny server has 4 slots
        ("logprobs", 3, ("boolean",)),
        ("top_logprobs", 2, ("requires logprobs",)),
        ("top_logprobs", 21, ("top_logprobs",)),
        ("response_format", {"type": "json_xml"}, ("response_format",)),
        ("tools", [{"type": "function", "function": {"name": "two words"}}], ("name",)),
        ("tool_choice", "required", ("requires tools",)),
        ("frobnicate", 1, ("frobnicate",)),
    ],
)
def test_bad_parameter_is_400_naming_it(tiny_server, field, value, words):
    body = {"model": TINY, "messages": HELLO, field: value}
    status, _, answer = request(tiny_server.port, "POST", "/v1/chat/completions", body)
    assert_error(status, answer, 400, param=field, words=words)


def test_echo_with_logprobs_is_refused_naming_echo(tiny_server):
    body = {"model": TINY, "prompt": "Hi", "echo": True, "logprobs": 2}
    status, _, answer = request(tiny_server.port, "POST", "/v1/completions", body)
    assert_error(status, answer, 400, param="echo", words=("echo",))


def test_bad_message_shape_names_the_message(tiny_server):
    body = {"model": TINY, "messages": [{"role": "user", "content": 5}]}
    status, _, answer = request(tiny_server.port, "POST", "/v1/chat/completions", body)
    assert status == 400 and "messages[0]" in answer["error"]["param"]


def test_unknown_model_is_404(tiny_server):
    client = openai.OpenAI(base_url=tiny_server.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert info.value.body["param"] == "model"


def test_prompt_longer_than_context_names_both_numbers(tiny_server):
    long_prompt = "Hello world " * 400  # the tiny model's context is 512 tokens
    body = {"model": TINY, "prompt": long_prompt, "max_tokens": 4}
    status, _, answer = request(tiny_server.port, "POST", "/v1/completions", body)
    assert_error(status, answer, 400, param="prompt", words=("512",))
    prompt_tokens = len(tiny_server.engine().tokenizer.encode(long_prompt))
    assert str(prompt_tokens) in answer["error"]["message"]


def test_prompt_plus_max_tokens_beyond_context_is_400(tiny_server):
    body = {"model": TINY, "prompt": "Hello", "max_tokens": 600}
    status, _, answer = request(tiny_server.port, "POST", "/v1/completions", body)
    assert_error(status, answer, 400, param="max_tokens", words=("512", "600"))


def test_unknown_route_404_and_wrong_method_405_in_openai_shape(tiny_server):
    status, _, body = request(tiny_server.port, "GET", "/v1/nothing-here")
    assert status == 404 and "error" in body and "message" in body["error"]
    status, headers, body = request(tiny_server.port, "GET", "/v1/chat/completions")
    assert status == 405 and "POST" in headers["allow"] and "message" in body["error"]


def test_body_too_large_is_413(tiny_repository, start_server):
    server = start_server(tiny_repository, max_request_bytes=1024)
    body = {"model": TINY, "prompt": "x" * 4096}
    status, _, answer = request(server.port, "POST", "/v1/completions", body)
    assert status == 413 and "message" in answer["error"]


def test_chat_with_a_model_without_template_is_400(tmp_path, start_server):
    build_tiny_model(tmp_path / "plain", chat_template=None)
    server = start_server(tmp_path)
    status, _, answer = request(server.port, "POST", "/v1/chat/completions",
                                {"model": "plain", "messages": HELLO})
    assert_error(status, answer, 400, param="messages", words=("chat template",))
    # ...while completions on the same model work.
    status, _, answer = request(server.port, "POST", "/v1/completions",
                                {"model": "plain", "prompt": "Hello", "max_tokens": 2})
    assert status == 200


def test_chat_template_flag_overrides_the_models_template(tmp_path, start_server):
    build_tiny_model(tmp_path / "plain", chat_template=None)
    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}")
    server = start_server(tmp_path, chat_template=template)
    status, _, answer = request(server.port, "POST", "/v1/chat/completions",
                                {"model": "plain", "messages": HELLO, "max_tokens": 2})
    assert status == 200, answer


def test_model_that_failed_to_load_is_503_and_others_keep_serving(tmp_path, start_server):
    build_tiny_model(tmp_path / "good")
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "good", broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    server = start_server(tmp_path)
    status, _, answer = request(server.port, "POST", "/v1/chat/completions",
                                {"model": "broken", "messages": HELLO})
    assert_error(status, answer, 503, param="model", words=("not ready",))
    status, _, _ = request(server.port, "POST", "/v1/chat/completions",
                           {"model": "good", "messages": HELLO, "max_tokens": 2})
    assert status == 200


def test_request_whose_kv_cache_can_never_fit_is_400_with_numbers(tiny_repository, start_server):
    from triton_mlx.engine.kv_budget import KVBudget

    server = start_server(tiny_repository)
    engine = server.engine()
    room = engine.budget.need(200)  # the cache allocation step makes it 256 tokens
    engine.budget = KVBudget(engine.budget.bytes_per_token, room)
    status, _, answer = request(server.port, "POST", "/v1/completions",
                                {"model": TINY, "prompt": "Hello", "max_tokens": 400})
    assert_error(status, answer, 400, param="max_tokens", words=("MiB", "KV cache"))
    status, _, _ = request(server.port, "POST", "/v1/completions",
                           {"model": TINY, "prompt": "Hello", "max_tokens": 100})
    assert status == 200


def test_queue_full_is_429_with_retry_after(tiny_repository, start_server):
    server = start_server(tiny_repository, max_concurrent_requests=1, max_queued_requests=1)
    import socket

    long = json.dumps({"model": TINY, "prompt": "Hello", "max_tokens": 400,
                       "logit_bias": {"2": -100}}).encode()
    held = []
    for _ in range(2):  # one running, one queued
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n" % len(long) + long)
        held.append(sock)
    engine = server.engine()
    wait_for(lambda: engine.stats().running == 1 and engine.stats().queued == 1,
             what="one request running and one queued")
    status, headers, answer = request(server.port, "POST", "/v1/completions",
                                      {"model": TINY, "prompt": "Hello", "max_tokens": 2})
    assert_error(status, answer, 429, words=("busy",))
    assert headers["retry-after"] == "1"
    for sock in held:
        sock.close()
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queued == 0,
             what="the held requests to end")
