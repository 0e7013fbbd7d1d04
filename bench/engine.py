"""The raw engine, no server: mlx-lm's ``generate_step`` and ``BatchGenerator`` in one process.

``bench.run`` keeps this up as a long-lived child process (``python -m bench.engine``) beside
both servers, so each round can measure the raw engine and the servers in turn. The child loads
the model, answers a ``setup`` line, then reads one JSON command per line on stdin and answers
one JSON line on stdout; between commands it blocks on stdin, idle. Progress goes to stderr.

The model is loaded exactly as our server loads it: ``triton_mlx`` is imported before
``mlx.core`` (so the same BLAS is in place) and ``load_model_folder`` applies the same runtime
profile. The server/engine ratio then measures the server, not a different weight layout.

Commands (``round`` picks the same chats the servers get in that round):

- ``{"op": "generate_step", "round": r, "max_tokens": n}``: mlx-lm's single-sequence loop on
  the single-stream chat; decode tok/s is the tokens after the first over their time.
- ``{"op": "batch", "size": b, "round": r, "max_tokens": n}``: one ``BatchGenerator`` (what our
  engine thread drives) with the b prompts of the servers' b-stream case inserted at once (the
  single-stream chat when ``"single": true``). Decode tok/s counts the tokens after the step in
  which every sequence had its first one, over their time; output tok/s is every token over the
  time from insert (prefill included).
- ``{"op": "warm", "size": b}``: short prompts at batch b, not timed; ``{"op": "quit"}``.

Both are greedy and ban EOS with the same logit bias as the HTTP requests, so they generate the
same tokens as the servers do.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.workload import eos_ban, single_messages, sweep_messages, warmup_messages


def load(model_dir: Path, runtime_profile: str) -> tuple[Any, Any, dict[str, str]]:
    """(model, tokenizer, facts) loaded the way ``python -m triton_mlx`` loads them."""
    import triton_mlx  # noqa: F401  (loads the optimized BLAS; must precede mlx.core)
    from triton_mlx.blas import blas_status
    from triton_mlx.repository.loading import load_model_folder

    chosen: list[Any] = []
    model, tokenizer = load_model_folder(
        model_dir, runtime_profile=runtime_profile, on_profile=chosen.append)
    import mlx.core as mx

    profile = chosen[0].describe() if chosen else "unknown"
    return model, tokenizer, {"profile": profile, "blas": blas_status(),
                              "device": str(mx.default_device())}


def chat_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def generate_step_tps(model: Any, prompt: list[int], tokens: int, processors: list) -> float:
    """Decode tok/s of ``generate_step`` at batch 1: tokens after the first over their time."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    stamps = []
    for _ in generate_step(mx.array(prompt), model, max_tokens=tokens,
                           logits_processors=processors):
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def batch_tps(
    model: Any, prompts: list[list[int]], tokens: int, processors: list, timeout: float
) -> dict[str, Any]:
    """Decode and output tok/s of one ``BatchGenerator`` running ``len(prompts)`` sequences."""
    from mlx_lm.generate import BatchGenerator

    size = len(prompts)
    generator = BatchGenerator(model, completion_batch_size=size, prefill_batch_size=size)
    inserted = time.perf_counter()
    generator.insert(prompts, max_tokens=[tokens] * size, logits_processors=[processors] * size)
    deadline = inserted + timeout
    started: set[int] = set()
    finished: set[int] = set()
    decode_start = now = None
    counted = total = 0
    try:
        while len(finished) < size:
            if time.perf_counter() > deadline:
                return {"error": f"timed out after {timeout:.0f} s"}
            _, responses = generator.next()
            now = time.perf_counter()
            for response in responses:
                total += 1
                if decode_start is not None:
                    counted += 1
                started.add(response.uid)
                if response.finish_reason is not None:
                    finished.add(response.uid)
            if decode_start is None and len(started) == size:
                decode_start = now
    finally:
        generator.close()
    if not counted:
        return {"error": "no decode steps to time (max tokens 1?)"}
    return {"decode_tps": counted / (now - decode_start), "output_tps": total / (now - inserted),
            "tokens": total}


class Child:
    """The child's side: the loaded model and the commands it answers."""

    def __init__(self, model_dir: Path, runtime_profile: str, timeout: float) -> None:
        self.model, self.tokenizer, self.facts = load(model_dir.resolve(), runtime_profile)
        from mlx_lm.sample_utils import make_logits_processors  # after load: see its docstring

        self.processors = make_logits_processors(
            logit_bias={int(k): v for k, v in eos_ban(self.tokenizer).items()})
        self.timeout = timeout

    def answer(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "warm":
            size = command["size"]
            warm = [chat_tokens(self.tokenizer, m)[-8:] for m in warmup_messages(size)]
            if size == 1:
                generate_step_tps(self.model, warm[0], 4, self.processors)
            batch_tps(self.model, warm, 3, self.processors, self.timeout)
            return {}
        if op == "generate_step":
            prompt = chat_tokens(self.tokenizer, single_messages(command["round"]))
            return {"decode_tps": generate_step_tps(self.model, prompt, command["max_tokens"],
                                                    self.processors),
                    "prompt_tokens": len(prompt)}
        if op == "batch":
            chats = ([single_messages(command["round"])] if command.get("single")
                     else sweep_messages(command["size"], command["round"]))
            prompts = [chat_tokens(self.tokenizer, m) for m in chats]
            return batch_tps(self.model, prompts, command["max_tokens"], self.processors,
                             self.timeout)
        return {"error": f"unknown op {op!r}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--runtime-profile", default="auto")
    parser.add_argument("--case-timeout", type=float, default=300)
    args = parser.parse_args(argv)
    # The answers own stdout; anything else that prints (MLX, a library) goes to stderr.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    print(f"  [engine] loading {args.model_dir.name} (runtime profile {args.runtime_profile})",
          file=sys.stderr, flush=True)
    child = Child(args.model_dir, args.runtime_profile, args.case_timeout)
    answers.write(json.dumps({"op": "setup", **child.facts}) + "\n")
    for line in sys.stdin:  # blocks, idle, until the parent asks
        command = json.loads(line)
        if command["op"] == "quit":
            break
        try:
            reply = child.answer(command)
        except Exception as exc:  # reported to the parent, which drops the engine
            reply = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        answers.write(json.dumps({"op": command["op"], **reply}) + "\n")
    return 0


# ----- the parent's side -----

class EngineFailed(RuntimeError):
    """The child exited, or did not answer in time."""


class EngineProcess:
    """``python -m bench.engine`` as a child that stays up; ``ask`` sends one command."""

    def __init__(self, model_dir: Path, runtime_profile: str, timeout: float) -> None:
        argv = [sys.executable, "-m", "bench.engine", "--model-dir", str(model_dir),
                "--runtime-profile", runtime_profile, "--case-timeout", str(timeout)]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            cwd=Path(__file__).resolve().parent.parent)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.facts: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)  # the child closed its stdout: it exited

    def _answer(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.process.kill()  # busy or hung: a quit command would wait behind it
            self.process.wait()
            raise EngineFailed(f"no answer within {timeout:.0f} s; stopped") from None
        if line is None:
            code = self.process.wait()
            raise EngineFailed(f"the engine process exited with {code}")
        return json.loads(line)

    def wait_ready(self, timeout: float = 600) -> dict[str, Any]:
        """The child's setup facts (runtime profile, BLAS, device), once the model is loaded."""
        self.facts = self._answer(timeout)
        self.facts.pop("op", None)
        return self.facts

    def ask(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one command and wait for its answer (``EngineFailed`` after ``timeout``)."""
        if self.process.poll() is not None:
            raise EngineFailed(f"the engine process exited with {self.process.returncode}")
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        reply = self._answer(timeout)
        reply.pop("op", None)
        return reply

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


if __name__ == "__main__":
    raise SystemExit(main())
