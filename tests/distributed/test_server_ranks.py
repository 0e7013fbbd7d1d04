"""The server on two ranks (``mlx.launch``, ring over loopback) answers what one process answers.

Issue 15: greedy output of a 2-rank tensor-parallel and a 2-rank pipeline server is token for
token the single-process server's, streamed and not, with concurrent requests, ``n=2``, a
cancelled stream, a prefix-cache hit and prompts prefilled in chunks; rank 0's SIGTERM stops
every rank with status 0; a reload happens on every rank; a killed rank ends rank 0.
Tiny random models (a llama for tensor parallel; a qwen2 for the pipeline, since mlx-lm's llama
has no pipeline()), the OpenAI SDK as the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from openai import AsyncOpenAI, OpenAI

from tests.distributed.launch import RankedServer, free_port_block
from tests.tiny_families import build_family_model
from tests.tiny_model import build_tiny_model
from tests.waiting import wait_for

NO_EOS = {"2": -100}
PROMPTS = ["Hello world", "The quick brown fox", "def add(a, b):", "Numbers like 12345",
           "Once upon a time", "The capital of France"]
LAYOUTS = {"tensor": "llama", "pipeline": "qwen2"}


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def servers(request, tmp_path_factory):
    """(one process, two ranks) on the same repository; the ranks' server split as asked."""
    kind = request.param
    repository = tmp_path_factory.mktemp(f"ranks-{kind}")
    if LAYOUTS[kind] == "llama":
        build_tiny_model(repository / "tiny")
    else:
        build_family_model(repository / "tiny", LAYOUTS[kind])
    flags = ("--max-concurrent-requests", "8", "--prefill-chunk-tokens", "16")  # chunked
    single = RankedServer(repository, *flags)
    ranks = RankedServer(repository, *flags, "--parallel", kind, ranks=2)
    yield kind, single, ranks
    for server in (single, ranks):
        server.kill()


def complete(server: RankedServer, prompt: str, **extra) -> list[str]:
    client = OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    answer = client.completions.create(model="tiny", prompt=prompt, max_tokens=12,
                                       temperature=0, logit_bias=NO_EOS, **extra)
    return [choice.text for choice in sorted(answer.choices, key=lambda c: c.index)]


async def concurrent_chats(server: RankedServer) -> list[str]:
    """Every prompt at once, streamed: the text each stream delivered."""
    client = AsyncOpenAI(base_url=server.base_url, api_key="none", max_retries=0)

    async def chat(prompt: str) -> str:
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": prompt}], max_tokens=16,
            temperature=0, logit_bias=NO_EOS, stream=True)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream
                        if chunk.choices])

    return await asyncio.gather(*(chat(p) for p in PROMPTS))


def test_the_model_card_shows_the_split(servers):
    kind, single, ranks = servers
    card = OpenAI(base_url=ranks.base_url, api_key="none").models.retrieve("tiny")
    assert card.model_extra["parallel"] == {"kind": kind, "ranks": 2, "backend": "ring"}
    alone = OpenAI(base_url=single.base_url, api_key="none").models.retrieve("tiny")
    assert alone.model_extra["parallel"] is None
    assert metric(ranks, "triton_mlx_model_ranks") == 2
    assert metric(single, "triton_mlx_model_ranks") == 1
    complete(ranks, PROMPTS[0])
    complete(single, PROMPTS[0])
    assert metric(ranks, "triton_mlx_rank_exchange_seconds") > 0
    # the model's own collectives, timed on the first step and one in 64 after it
    assert metric(ranks, "triton_mlx_rank_collective_steps") >= 1
    assert metric(ranks, "triton_mlx_rank_collective_seconds") > 0
    assert metric(ranks, "triton_mlx_rank_sampled_step_seconds") > 0
    for name in ("triton_mlx_rank_collective_steps", "triton_mlx_rank_collective_seconds"):
        assert metric(single, name) == 0  # no collectives in one process


def metric(server: RankedServer, name: str) -> float:
    """The sum of a metric's samples on the server's metrics port."""
    url = f"http://127.0.0.1:{server.ports['metrics']}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def test_concurrent_streams_match_one_process(servers):
    _, single, ranks = servers
    expected = asyncio.run(concurrent_chats(single))
    assert all(expected)
    assert asyncio.run(concurrent_chats(ranks)) == expected


def test_n_choices_and_plain_completions_match_one_process(servers):
    _, single, ranks = servers
    for prompt in PROMPTS[:3]:
        assert complete(ranks, prompt) == complete(single, prompt)
    two = complete(ranks, PROMPTS[0], n=2)
    assert two == complete(single, PROMPTS[0], n=2) and len(two) == 2


def structured_chat(server: RankedServer) -> tuple[str, list, str]:
    """A JSON-schema answer with logprobs, and a completion cut by a stop string."""
    client = OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    answer = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "A number, please"}],
        max_tokens=24, temperature=0, logprobs=True, top_logprobs=2,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "n", "schema": schema}})
    tops = [[t.token for t in item.top_logprobs] for item in answer.choices[0].logprobs.content]
    stopped = client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=24,
                                        temperature=0, logit_bias=NO_EOS, stop=["e"])
    return answer.choices[0].message.content, tops, stopped.choices[0].text


def test_structured_output_logprobs_and_stop_strings_match_one_process(servers):
    _, single, ranks = servers
    expected = structured_chat(single)
    assert any(len(top) == 2 for top in expected[1])  # alternatives the grammar allows
    assert structured_chat(ranks) == expected


def test_sampling_without_a_seed_keeps_the_ranks_in_step(servers):
    """Each process seeds MLX's random state from the clock: unless rank 0 gives the request a
    seed, the ranks sample different tokens, store different prefixes, and the next prompt
    that extends the sampled text finds different cached prefixes on each rank."""
    _, single, ranks = servers
    client = OpenAI(base_url=ranks.base_url, api_key="none", max_retries=0, timeout=120)
    prompt = "A long enough beginning for the cache to keep, " * 3
    even = {**NO_EOS, **{str(t): 100 for t in range(40, 56)}}  # 16 near-equal choices a step
    sampled = client.completions.create(model="tiny", prompt=prompt, max_tokens=12,
                                        temperature=1.0, logit_bias=even)
    follow = prompt + sampled.choices[0].text
    again = client.completions.create(model="tiny", prompt=follow, max_tokens=8,
                                      temperature=0, logit_bias=NO_EOS)
    assert again.choices[0].text == complete_long(single, follow)[0]


def test_a_prefix_cache_hit_gives_the_same_text(servers):
    _, single, ranks = servers
    prompt = "A long shared beginning that the cache keeps: " * 4 + "and the end"
    client = OpenAI(base_url=ranks.base_url, api_key="none", max_retries=0)
    first = client.completions.create(model="tiny", prompt=prompt, max_tokens=8,
                                      temperature=0, logit_bias=NO_EOS)
    again = client.completions.create(model="tiny", prompt=prompt + " again", max_tokens=8,
                                      temperature=0, logit_bias=NO_EOS)
    assert again.usage.prompt_tokens_details.cached_tokens > 0
    assert [first.choices[0].text] == complete_long(single, prompt)
    assert [again.choices[0].text] == complete_long(single, prompt + " again")


def complete_long(server: RankedServer, prompt: str) -> list[str]:
    client = OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    answer = client.completions.create(model="tiny", prompt=prompt, max_tokens=8,
                                       temperature=0, logit_bias=NO_EOS)
    return [answer.choices[0].text]


def test_a_cancelled_stream_leaves_every_rank_in_step(servers):
    _, single, ranks = servers
    client = OpenAI(base_url=ranks.base_url, api_key="none", max_retries=0)
    stream = client.completions.create(model="tiny", prompt="Count with me", max_tokens=400,
                                       temperature=0, logit_bias=NO_EOS, stream=True)
    next(iter(stream))  # under way on both ranks
    stream.close()  # the client goes away: rank 0 cancels, and tells rank 1
    wait_for(lambda: metric(ranks, "triton_mlx_requests_running") == 0, 60,
             "the cancelled request to leave the batch")
    assert complete(ranks, PROMPTS[4]) == complete(single, PROMPTS[4])  # still in step


def test_embeddings_match_one_process(servers):
    _, single, ranks = servers
    texts = ["first sentence", "a second, longer sentence to embed"]

    def embed(server: RankedServer) -> list[list[float]]:
        client = OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        return [d.embedding for d in client.embeddings.create(model="tiny", input=texts).data]

    expected, got = embed(single), embed(ranks)
    assert len(got) == 2 and len(got[0]) == len(expected[0])
    assert all(abs(a - b) < 1e-4 for row, want in zip(got, expected, strict=True)
               for a, b in zip(row, want, strict=True))


def test_sigterm_to_rank_0_drains_then_stops_every_rank_with_status_0(servers):
    _, single, ranks = servers
    pids = ranks.rank_pids()
    assert sorted(pids) == [0, 1]
    client = OpenAI(base_url=ranks.base_url, api_key="none", max_retries=0)
    stream = client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=48,
                                       temperature=0, logit_bias=NO_EOS, stream=True)
    chunks = iter(stream)
    text = next(chunks).choices[0].text  # under way on both ranks
    os.kill(pids[0], signal.SIGTERM)  # the request in flight finishes first
    rest = list(chunks)
    text += "".join(chunk.choices[0].text for chunk in rest if chunk.choices)
    assert rest[-1].choices[0].finish_reason == "length"
    alone = OpenAI(base_url=single.base_url, api_key="none", max_retries=0)
    assert text == alone.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=48,
                                            temperature=0, logit_bias=NO_EOS).choices[0].text
    assert ranks.process.wait(120) == 0
    log = ranks.log
    assert "rank 1: rank 0 is done; exiting" in log
    assert "stopped" in log and "exited with code" not in log and "was killed" not in log


def test_a_reload_stops_the_model_on_every_rank_then_loads_it_on_every_rank(tmp_path):
    build_tiny_model(tmp_path / "tiny")
    single = RankedServer(tmp_path)
    ranks = RankedServer(tmp_path, "--model-control-mode", "explicit", "--load-model", "tiny",
                         ranks=2)
    try:
        before = complete(ranks, PROMPTS[0])
        url = f"http://127.0.0.1:{ranks.ports['Triton HTTP API']}/v2/repository/models/tiny/load"
        request = urllib.request.Request(url, data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            assert answer.status == 200
        wait_for(lambda: ranks.log.count("rank 1: model tiny loaded") == 2, 60,
                 "rank 1 to load the model again")
        assert complete(ranks, PROMPTS[0]) == before == complete(single, PROMPTS[0])
    finally:
        ranks.kill()
        single.kill()


def test_a_killed_rank_makes_rank_0_exit_non_zero_saying_why(tmp_path):
    build_tiny_model(tmp_path / "tiny")
    ranks = RankedServer(tmp_path, "--rank-timeout-secs", "2", ranks=2)
    try:
        pids = ranks.rank_pids()
        os.kill(pids[1], signal.SIGKILL)
        ranks.process.wait(120)  # the launcher ends once rank 0 has
        log = ranks.log
        assert "rank 0: the ranks serving model 'tiny' lost each other" in log
        assert "Node with rank 0 exited with code 1" in log
    finally:
        ranks.kill()


def test_a_model_its_architecture_cannot_split_so_is_unavailable_saying_why(tmp_path):
    build_tiny_model(tmp_path / "tiny")  # mlx-lm's llama has shard() but no pipeline()
    ranks = RankedServer(tmp_path, "--parallel", "pipeline", ranks=2)
    try:
        with urllib.request.urlopen(f"{ranks.base_url}/models/tiny", timeout=10) as answer:
            card = json.load(answer)
        assert card["state"] == "UNAVAILABLE"
        assert "cannot split the llama architecture into a pipeline" in card["reason"]
        os.kill(ranks.rank_pids()[0], signal.SIGTERM)  # the other rank still exits with it
        ranks.process.wait(120)
        assert "rank 1: rank 0 is done; exiting" in ranks.log
    finally:
        ranks.kill()


@contextlib.contextmanager
def ranks_by_hand(repository, *flags: str) -> Iterator[tuple[subprocess.Popen,
                                                          subprocess.Popen, int]]:
    """The README's way for containers: each rank started with the environment mlx.launch
    would give it (ring: MLX_RANK and a hostfile of each rank's address). Yields (follower,
    rank 0, rank 0's OpenAI port) once rank 0 serves; both are killed on the way out."""
    build_tiny_model(repository / "tiny")
    first = free_port_block(2)
    hostfile = repository / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{first}"], [f"127.0.0.1:{first + 1}"]]))
    ranks = []
    try:
        for rank in (1, 0):
            env = {**os.environ, "MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile)}
            ranks.append(subprocess.Popen(
                [sys.executable, "-m", "triton_mlx", "--model-repository", str(repository),
                 "--host", "127.0.0.1", "--openai-port", "0", "--http-port", "0",
                 "--metrics-port", "0", "--model-control-mode", "none", *flags],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        follower, leader = ranks
        port = None
        for line in leader.stderr:
            found = re.search(r"OpenAI API listening on http://[^:]+:(\d+)", line)
            port = int(found[1]) if found else port
            if "serving 1 model(s)" in line:
                break
        yield follower, leader, port
    finally:
        for process in ranks:
            process.kill()
            process.wait(30)


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health/ready", timeout=10):
            return 200
    except urllib.error.HTTPError as error:
        return error.code


def test_ranks_started_without_the_launcher_serve_alike(tmp_path):
    with ranks_by_hand(tmp_path) as (follower, leader, port):
        card = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none").models.retrieve(
            "tiny")
        assert card.model_extra["parallel"] == {"kind": "tensor", "ranks": 2, "backend": "ring"}
        leader.send_signal(signal.SIGTERM)
        assert leader.wait(120) == 0 and follower.wait(120) == 0


@pytest.mark.parametrize(("stop", "message"), [
    # a rank whose process ends: the next collective fails at once
    (signal.SIGKILL, "rank 0: the ranks serving model 'tiny' lost each other"),
    # a frozen rank raises nothing: rank 0 hears nothing from it, for too long
    (signal.SIGSTOP, "rank 0: no word from the other ranks for 6 s"),
], ids=["dies", "hangs"])
def test_rank_0_turns_not_ready_then_exits_1_when_another_rank_fails(tmp_path, stop, message):
    """No launcher to signal rank 0 here: it must notice by itself."""
    with ranks_by_hand(tmp_path, "--rank-timeout-secs", "6") as (follower, leader, port):
        assert health(port) == 200
        follower.send_signal(stop)
        wait_for(lambda: health(port) == 503, 60, "rank 0 to report not ready")
        assert leader.wait(120) == 1
        assert message in leader.stderr.read()
