"""Bounded soak: waves of 1 to 16 concurrent clients on every generation route (OpenAI chat and
completions, streaming or not, n=2, Triton generate and generate_stream), a tenth of them
walking away at a random point. Every client that stays gets a complete, correct answer, and
afterwards nothing is left behind: no slot, queue entry, KV reservation, connection or memory.

``SOAK_REQUESTS`` sets the size (default 2000, well under 90 s on 2 CPU cores; ``make soak``
runs 20000); ``SOAK_SEED`` replays a run. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import time
from dataclasses import dataclass

import mlx.core as mx

from tests.conftest import TINY
from tests.repository.test_poll_mode import wait_for
from tests.soak.client import Answer, exchange

SOAK_REQUESTS = int(os.environ.get("SOAK_REQUESTS", "2000"))
SOAK_SEED = int(os.environ.get("SOAK_SEED", "20240611"))
LEAVE_SHARE = 0.1
MAX_WAVE = 16
SLOTS = 8
QUEUE = 48  # room for a full wave of n=2 requests and the slots of clients still leaving
PREFIX_CACHE_MB = 4  # small, so entries are evicted as well as reused
MEMORY_TOLERANCE = 4 * 2**20
NO_EOS = {"2": -100}  # token 2 ends a sequence: without it every answer has max_tokens tokens
MAX_TOKENS = (1, 3, 8, 16)
PROMPTS = (  # shared beginnings, so the prefix cache serves some and evicts others
    "Hello",
    "Hello world! How are you today?",
    "The quick brown fox",
    "The quick brown fox jumps over the lazy dog.",
    "The capital of France is",
    "def add(a, b):",
    "Numbers like 12345 and accents: café, naïve.",
    "Stop here. STOP. stopping is hard",
)
KINDS = {  # kind: weight
    "chat": 3, "chat_stream": 3, "completion": 2, "completion_stream": 2,
    "completion_n2": 1, "generate": 1, "generate_stream": 1,
}
STREAMING = {"chat_stream", "completion_stream", "generate_stream"}
LEAVE_POINTS = ("mid_body", "before_answer")


@dataclass
class Job:
    kind: str
    prompt: str
    max_tokens: int
    seed: int | None = None
    """None: greedy, so the text is known; else seeded sampling at temperature 0.8."""
    leave: str | None = None
    leave_after_events: int = 1
    leave_delay: float = 0.0
    close: bool = False

    @property
    def triton(self) -> bool:
        return self.kind.startswith("generate")

    def request(self) -> tuple[str, dict]:
        """The path and JSON body."""
        if self.triton:
            parameters = {"max_tokens": self.max_tokens, "temperature": 0,
                          "logit_bias": json.dumps(NO_EOS)}
            if self.kind == "generate_stream":
                parameters["stream"] = True
            return f"/v2/models/{TINY}/{self.kind}", {
                "text_input": self.prompt, "exclude_input_in_output": True,
                "parameters": parameters}
        body: dict = {"model": TINY, "max_tokens": self.max_tokens, "logit_bias": NO_EOS,
                      "temperature": 0}
        if self.seed is not None:
            body.update(temperature=0.8, seed=self.seed)
        if self.kind.startswith("chat"):
            path = "/v1/chat/completions"
            body["messages"] = [{"role": "user", "content": self.prompt}]
        else:
            path = "/v1/completions"
            body["prompt"] = self.prompt
        if self.kind == "completion_n2":
            body["n"] = 2
        if self.kind in STREAMING:
            body.update(stream=True, stream_options={"include_usage": True})
        return path, body


def make_jobs(count: int, rng: random.Random) -> list[Job]:
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=count)
    jobs = []
    for kind in kinds:
        job = Job(kind, rng.choice(PROMPTS), rng.choice(MAX_TOKENS), close=rng.random() < 0.5)
        if not job.triton and kind != "completion_n2" and rng.random() < 0.2:
            job.seed = rng.randrange(1000)
        if rng.random() < LEAVE_SHARE:
            points = LEAVE_POINTS + (("mid_stream",) if kind in STREAMING else ())
            job.leave = rng.choice(points)
            job.leave_after_events = rng.randint(1, 3)
            job.leave_delay = rng.uniform(0, 0.02)
        jobs.append(job)
    return jobs


class Soak:
    def __init__(self, server) -> None:
        self.server = server
        self.references: dict[tuple[str, str, int], str] = {}
        self.completed = 0
        self.left = 0
        self.failures: list[str] = []

    def port(self, job: Job) -> int:
        return self.server.http_port if job.triton else self.server.port

    async def learn_references(self) -> None:
        """The greedy text of every (route family, prompt, max_tokens), one request at a
        time: what every greedy answer under load must equal."""
        for prompt in PROMPTS:
            for max_tokens in MAX_TOKENS:
                for kind in ("chat", "completion"):
                    job = Job(kind, prompt, max_tokens)
                    path, body = job.request()
                    answer = await exchange(self.port(job), path, body, stream=False)
                    assert answer.status == 200, answer.body
                    choice = json.loads(answer.body)["choices"][0]
                    self.references[kind, prompt, max_tokens] = (
                        choice["message"]["content"] if kind == "chat" else choice["text"])

    async def run(self, jobs: list[Job], rng: random.Random) -> None:
        start = 0
        while start < len(jobs):
            wave = jobs[start:start + rng.randint(1, MAX_WAVE)]
            start += len(wave)
            await asyncio.gather(*(self.one(job) for job in wave))

    async def one(self, job: Job) -> None:
        path, body = job.request()
        try:
            answer = await asyncio.wait_for(exchange(
                self.port(job), path, body, stream=job.kind in STREAMING, close=job.close,
                leave=job.leave, leave_after_events=job.leave_after_events,
                leave_delay=job.leave_delay), timeout=120)
        except Exception as exc:
            self.failures.append(f"{job}: {type(exc).__name__}: {exc}")
            return
        if job.leave:
            self.left += 1
            return
        problem = self.check(job, answer)
        if problem:
            self.failures.append(f"{job}: {problem}")
        else:
            self.completed += 1

    def check(self, job: Job, answer: Answer) -> str | None:
        """What is wrong with the answer, if anything."""
        if answer.status != 200:
            return f"status {answer.status}: {answer.body[:300]!r} {answer.events[-2:]}"
        family = "chat" if job.kind.startswith("chat") else "completion"
        expected = None if job.seed is not None else self.references[family, job.prompt,
                                                                     job.max_tokens]
        if job.triton:
            if job.kind == "generate":
                texts = [json.loads(answer.body)["text_output"]]
            else:
                if any("error" in e for e in answer.events):
                    return f"error event: {answer.events}"
                texts = ["".join(e["text_output"] for e in answer.events)]
            return None if texts == [expected] else f"text {texts} != {expected!r}"
        choices_n = 2 if job.kind == "completion_n2" else 1
        if job.kind in STREAMING:
            events = answer.events
            if not events or events[-1] != "[DONE]":
                return f"no [DONE]: {events[-3:]}"
            if any("error" in e for e in events[:-1]):
                return f"error event: {events[-3:]}"
            usage = events[-2]["usage"]
            chunks = [c for e in events[:-2] for c in e["choices"]]
            text = "".join((c["delta"].get("content") or "") if family == "chat"
                           else c["text"] for c in chunks)
            texts = [text]
            finishes = [c["finish_reason"] for c in chunks if c["finish_reason"]]
        else:
            document = json.loads(answer.body)
            usage = document["usage"]
            choices = sorted(document["choices"], key=lambda c: c["index"])
            texts = [c["message"]["content"] if family == "chat" else c["text"]
                     for c in choices]
            finishes = [c["finish_reason"] for c in choices]
        if finishes != ["length"] * choices_n:
            return f"finish reasons {finishes}"
        if usage["completion_tokens"] != job.max_tokens * choices_n:
            return f"usage {usage} for max_tokens {job.max_tokens}"
        if expected is not None and texts != [expected] * len(texts):
            return f"text {texts} != {expected!r}"
        return None


def active_memory_without_prefix_cache(engine) -> int:
    """MLX's active bytes less what the prefix cache holds on purpose."""
    gc.collect()
    return mx.get_active_memory() - engine.stats().prefix_cache_bytes


def test_soak(start_server, tiny_repository):
    server = start_server(tiny_repository, max_concurrent_requests=SLOTS,
                          max_queued_requests=QUEUE, prefix_cache_mb=PREFIX_CACHE_MB)
    engine = server.engine()
    soak = Soak(server)
    rng = random.Random(SOAK_SEED)
    jobs = make_jobs(SOAK_REQUESTS, rng)

    asyncio.run(soak.learn_references())
    memory_before = active_memory_without_prefix_cache(engine)
    started = time.perf_counter()
    asyncio.run(soak.run(jobs, rng))
    duration = time.perf_counter() - started

    # Nothing left behind: slots, queue, KV reservations, connections.
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queued == 0,
             what="the engine to drain")
    wait_for(lambda: server.server.openai.active_connections == 0
             and server.server.http.active_connections == 0, what="the connections to close")
    stats = engine.stats()
    memory_after = active_memory_without_prefix_cache(engine)
    print(f"\nsoak: {len(jobs)} requests (seed {SOAK_SEED}) in {duration:.1f} s "
          f"({len(jobs) / duration:.0f}/s): {soak.completed} completed, {soak.left} left early, "
          f"{len(soak.failures)} failed; MLX active memory without the prefix cache "
          f"{memory_before / 2**20:.2f} MiB before, {memory_after / 2**20:.2f} MiB after "
          f"(prefix cache {stats.prefix_cache_bytes / 2**20:.2f} MiB)")
    assert not soak.failures, "\n".join(soak.failures[:10])
    assert soak.completed + soak.left == len(jobs) and soak.left > 0
    assert stats.kv_reserved_bytes == 0
    assert engine._scheduler.idle and not engine._by_uid
    assert memory_after <= memory_before + MEMORY_TOLERANCE


def test_the_prefix_cache_holds_no_more_memory_than_it_counts(start_server, tiny_repository):
    """Caches taken out of a batch must not keep the batch's KV buffers alive: the memory the
    prefix cache holds is what its byte bound counts."""
    server = start_server(tiny_repository, max_concurrent_requests=SLOTS,
                          max_queued_requests=QUEUE, prefix_cache_mb=PREFIX_CACHE_MB)
    engine = server.engine()
    memory_before = active_memory_without_prefix_cache(engine)

    async def waves() -> list:
        answers = []
        for wave in range(6):
            jobs = [Job("completion", f"{wave} {i} {PROMPTS[i]}", 16) for i in range(SLOTS)]
            answers += await asyncio.gather(*(
                exchange(server.port, *job.request(), stream=False) for job in jobs))
        return answers

    assert {answer.status for answer in asyncio.run(waves())} == {200}
    wait_for(lambda: engine.stats().running == 0, what="the engine to drain")
    assert engine.stats().prefix_cache_bytes > 0
    assert active_memory_without_prefix_cache(engine) <= memory_before + MEMORY_TOLERANCE
