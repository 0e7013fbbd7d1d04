"""Fuzz target: raw bytes on a connection -> our HTTP server -> the OpenAI and Triton front-ends.

Each input is one client connection. Its first byte picks the set-up (which front-end, whether
an API key is required, the model control mode, how the bytes are cut into reads); the rest is
what the client sends. The bytes go through the real code path, in process and without
sockets: ``Connection`` (h11 parsing, limits, keep-alive, pipelining, 100-continue) over an
in-memory reader and writer, the front-end's ``Router`` and middleware, and the real handlers
and validators, against a repository of fake models (a chat model, an embedding model, one
loading, one unavailable) whose engines answer at once without MLX.

Invariants checked for every input, any failure being reported as a crash:
- nothing is logged at ERROR (an unhandled exception in a handler or on the connection);
- no exchange ends in 500 (501 and 503 are Triton's and the repository's own answers);
- what the server wrote parses as exactly one well-formed HTTP response per logged exchange,
  with the logged status;
- the connection finishes (no hang).

Run: ``python -m fuzz.fuzz_requests [libFuzzer flags] [corpus dirs]``, e.g.
``python -m fuzz.fuzz_requests -max_total_time=600``. Without a corpus directory the seeds are
written to ``build/fuzz/corpus`` (ignored by git; ``FUZZ_WORK_DIR`` moves it) and used from
there; crashes go to ``build/fuzz/``. ``python -m fuzz.fuzz_requests --run FILE...`` replays
inputs without atheris' fuzzing loop (what a crash reproduction needs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import atheris
import numpy as np

# Third-party modules are imported first (through numpy and triton_mlx's own imports, none of
# them matched by ``include``), so only our code and h11's parser are instrumented.
with atheris.instrument_imports(include=["triton_mlx", "h11"]):
    import h11

    from triton_mlx.config import ServerConfig
    from triton_mlx.engine.types import GenerationOutput, TokenLogprob
    from triton_mlx.http import HTTPLimits
    from triton_mlx.http.connection import Connection
    from triton_mlx.observability.logs import ACCESS_LOGGER_NAME, ROOT_LOGGER_NAME
    from triton_mlx.observability.server_metrics import ServerMetrics
    from triton_mlx.openai_port import openai_port_router
    from triton_mlx.repository.repository import ModelEntry, ModelRepository, ModelState
    from triton_mlx.repository.served import ChatModel, EmbeddingModel
    from triton_mlx.serving.prompts import PromptBuilder
    from triton_mlx.triton.app import TritonFrontend

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("FUZZ_WORK_DIR") or ROOT / "build" / "fuzz")
API_KEY = "fuzz-key"
ALLOWED_5XX = {501, 503}  # Triton's UNSUPPORTED; models loading, unloading or unavailable
READ_SIZES = (65536, 1, 7, 300)
# Small enough for fuzz inputs to reach the 413 and 431 paths; every seed fits.
LIMITS = HTTPLimits(max_body_bytes=1024, max_header_bytes=512)

# ----- fake models: real PromptBuilder and front-end code, engines that answer at once ----------

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tool turns') }}"
    "{% endif %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


class FakeTokenizer:
    """Bytes as tokens (id = byte + 2; 0 and 1 are special), strict like a real tokenizer."""

    bos_token, eos_token, unk_token, pad_token = "<s>", "</s>", "", ""
    all_special_ids = [0, 1]
    vocab_size = 258

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [b + 2 for b in text.encode("utf-8")]  # a lone surrogate fails, as in tokenizers
        return [1, *ids] if add_special_tokens else ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(i - 2 for i in ids if 2 <= i < 258).decode("utf-8", "replace")

    def convert_ids_to_tokens(self, token_id: int) -> str | None:
        return f"<0x{token_id - 2:02X}>" if 2 <= token_id < 258 else None

    def convert_tokens_to_ids(self, piece: str) -> int:
        return int(piece[3:5], 16) + 2 if piece.startswith("<0x") else 0


class FakeStream:
    """One sequence: a single output that ends it, with logprobs when asked for."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.admitted_at = time.perf_counter()  # in the batch at once: no queue

    async def __aiter__(self):
        k = self.request.logprobs
        logprobs = () if k is None else tuple(
            TokenLogprob(t, -0.5, tuple((a, -1.0 - a / 100) for a in range(2, 2 + k)))
            for t in (ord("o") + 2, ord("k") + 2))
        yield GenerationOutput(text="ok", completion_tokens=2, finish_reason="length",
                               logprobs=logprobs)

    def cancel(self) -> None:
        pass


class FakeWorker:
    """What the repository and front-ends call on an engine or encoder thread."""

    dimensions = 0
    layout = None  # not split across ranks
    max_seq_length = 16
    max_rows = None
    pooling = SimpleNamespace(mode="mean", normalize=True)

    def __init__(self, slots: int = 2, vocab_size: int = 258) -> None:
        self.slots = slots
        self.vocab_size = vocab_size

    def submit(self, request: Any, n: int = 1) -> list[FakeStream]:
        return [FakeStream(request) for _ in range(n)]

    def stats(self) -> SimpleNamespace:
        return SimpleNamespace(running=0, queued=0)

    def stop(self) -> None:
        pass


class FakeEncoder(FakeWorker):
    dimensions = 4

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [self.truncate([b + 2 for b in t.encode("utf-8")]) for t in texts]

    def truncate(self, ids: list[int]) -> list[int]:
        return ids[: self.max_seq_length]

    async def embed(self, token_id_lists: list[list[int]]) -> np.ndarray:
        return np.array([[1.0, 0.0, 0.0, float(len(ids))] for ids in token_id_lists],
                        dtype=np.float32)


def make_repository(config: ServerConfig) -> ModelRepository:
    repository = ModelRepository(config)
    chat = ChatModel(
        name="chat", display_name="chat", engine=FakeWorker(), context_length=64,
        prompts=PromptBuilder(FakeTokenizer(), CHAT_TEMPLATE), vocab_size=258,
        max_tokens_limit=32, default_temperature=None, created=0,
    )
    embed = EmbeddingModel(name="embed", display_name="embed", encoder=FakeEncoder(),
                           matryoshka=True, created=0)
    root = Path(config.model_repository)
    entries = [
        ModelEntry(name="chat", path=root / "chat", state=ModelState.READY, model=chat),
        ModelEntry(name="embed", path=root / "embed", state=ModelState.READY, model=embed),
        ModelEntry(name="loading", path=root / "loading", state=ModelState.LOADING),
        ModelEntry(name="broken", path=root / "broken", state=ModelState.UNAVAILABLE,
                   reason="config.json: not JSON"),
    ]
    repository._entries = {entry.name: entry for entry in entries}
    return repository


# ----- an in-memory connection -----------------------------------------------------------------


class FuzzReader:
    """The client's bytes in fixed-size reads. The connection's own task gets EOF once they
    are used up; the disconnect watcher (another task) waits instead, so a finished input
    never looks like a client leaving mid-request."""

    def __init__(self, data: bytes, read_size: int) -> None:
        self._data = data
        self._pos = 0
        self._read_size = read_size
        self.owner: asyncio.Task | None = None

    async def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._data):
            if asyncio.current_task() is not self.owner:
                await asyncio.get_running_loop().create_future()  # until cancelled
            return b""
        size = self._read_size if n < 0 else min(n, self._read_size)
        chunk = self._data[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk


class FuzzWriter:
    """Collects what the server writes; never blocks."""

    def __init__(self) -> None:
        self.output = bytearray()
        # What the server asks of a transport: abort, and whether a write left bytes unsent.
        self.transport = SimpleNamespace(abort=self._abort, get_write_buffer_size=lambda: 0,
                                         is_closing=lambda: self.aborted)
        self.aborted = False

    def _abort(self) -> None:
        self.aborted = True

    def write(self, data: bytes) -> None:
        self.output += data

    async def drain(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4242) if name == "peername" else default


class Capture(logging.Handler):
    """Keeps the access log's exchanges and every ERROR record of our loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.exchanges: list[tuple[str, int]] = []
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == ACCESS_LOGGER_NAME:
            self.exchanges.append((getattr(record, "method", "-"), record.status))
        elif record.levelno >= logging.ERROR:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.errors.append(text)


CAPTURE = Capture()


def _install_logging() -> None:
    for name in (ROOT_LOGGER_NAME, ACCESS_LOGGER_NAME):
        logger = logging.getLogger(name)
        logger.handlers = [CAPTURE]
        logger.propagate = False
        logger.setLevel(logging.INFO if name == ACCESS_LOGGER_NAME else logging.WARNING)


# ----- one input --------------------------------------------------------------------------------


class Setup:
    """What the first byte of an input selects."""

    def __init__(self, selector: int) -> None:
        self.triton = bool(selector & 1)
        self.explicit = bool(selector & 2)
        self.read_size = READ_SIZES[(selector >> 2) & 3]
        self.api_key = API_KEY if selector & 16 else None

    def router(self, repository_dir: str):
        config = ServerConfig(
            model_repository=Path(repository_dir), api_key=self.api_key,
            model_control_mode="explicit" if self.explicit else "none",
            default_max_tokens=8, max_request_bytes=LIMITS.max_body_bytes,
        )
        repository = make_repository(config)
        metrics = ServerMetrics()
        if self.triton:
            frontend = TritonFrontend(repository, config, metrics)
            frontend.started = True
            return frontend.router()
        return openai_port_router(repository, config, metrics)


async def serve(setup: Setup, data: bytes, repository_dir: str) -> tuple[bytes, bool]:
    """Serve one connection that sends ``data``; return what was written and whether the
    connection was aborted."""
    reader, writer = FuzzReader(data, setup.read_size), FuzzWriter()
    connection = Connection(
        reader, writer,  # type: ignore[arg-type]
        app=setup.router(repository_dir), limits=LIMITS, closing=lambda: False,
    )
    task = asyncio.get_running_loop().create_task(connection.run())
    reader.owner = task
    try:
        async with asyncio.timeout(30):
            await task
    except TimeoutError:
        raise AssertionError("the connection did not finish within 30 s (a hang)") from None
    return bytes(writer.output), writer.aborted


def parse_responses(output: bytes, methods: list[str]) -> list[int]:
    """The statuses of the responses in ``output``, read by an h11 client that sent
    ``methods`` (HEAD responses have no body); raises on anything malformed."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(output)
    client.receive_data(b"")
    statuses: list[int] = []
    for method in methods:
        client.send(h11.Request(method=method if method != "-" else "GET", target="/",
                                headers=[("host", "fuzz")]))
        client.send(h11.EndOfMessage())
        while True:
            event = client.next_event()
            if isinstance(event, h11.Response):
                statuses.append(event.status_code)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"response {len(statuses) + 1} is missing or cut short")
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
        else:
            break
    return statuses


def check_one(data: bytes, loop: asyncio.AbstractEventLoop, repository_dir: str) -> None:
    """Serve one fuzz input and check the invariants (AssertionError on a violation)."""
    if not data:
        return
    setup = Setup(data[0])
    CAPTURE.exchanges.clear()
    CAPTURE.errors.clear()
    output, aborted = loop.run_until_complete(serve(setup, data[1:], repository_dir))
    if CAPTURE.errors:
        raise AssertionError("logged an error:\n" + "\n".join(CAPTURE.errors))
    statuses = [status for _, status in CAPTURE.exchanges]
    bad = [s for s in statuses if s >= 500 and s not in ALLOWED_5XX]
    if bad:
        raise AssertionError(f"answered {bad}: {output[-600:]!r}")
    if aborted:  # only after an error, which was already reported above
        raise AssertionError("the connection was aborted")
    methods = [method for method, _ in CAPTURE.exchanges]
    try:
        parsed = parse_responses(output, methods)
    except h11.ProtocolError as exc:
        raise AssertionError(f"the output is not valid HTTP ({exc}): {output[-600:]!r}") from None
    if parsed != statuses[: len(parsed)] or len(parsed) != len(statuses):
        raise AssertionError(f"responses {parsed} do not match the exchanges {statuses}")


# ----- seeds ------------------------------------------------------------------------------------


def _http(method: str, path: str, body: bytes = b"", headers: tuple[str, ...] = (),
          version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: fuzz", *headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _json(method: str, path: str, document: Any, *headers: str) -> bytes:
    return _http(method, path, json.dumps(document).encode(),
                 ("Content-Type: application/json", *headers))


def _binary_infer() -> bytes:
    text = b"hello"
    header = json.dumps({"inputs": [
        {"name": "text_input", "datatype": "BYTES", "shape": [1],
         "parameters": {"binary_data_size": 4 + len(text)}},
        {"name": "stream", "datatype": "BOOL", "shape": [1], "data": [False]},
    ], "outputs": [{"name": "text_output", "parameters": {"binary_data": True}}]}).encode()
    body = header + struct.pack("<I", len(text)) + text
    return _http("POST", "/v2/models/chat/infer", body, (
        "Content-Type: application/octet-stream",
        f"Inference-Header-Content-Length: {len(header)}"))


def seeds() -> dict[str, bytes]:
    """Valid requests of every kind: selector byte + the bytes a client sends."""
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    openai = {
        "chat": _json("POST", "/v1/chat/completions", {
            "model": "chat", "messages": messages, "max_tokens": 4, "temperature": 0,
            "stop": ["\n"], "logprobs": True, "top_logprobs": 2}),
        "chat_stream": _json("POST", "/v1/chat/completions", {
            "model": "chat", "messages": messages, "stream": True,
            "stream_options": {"include_usage": True}, "n": 2, "seed": 7}),
        "completion": _json("POST", "/v1/completions", {
            "model": "chat", "prompt": ["a", "b"], "max_tokens": 3, "echo": True,
            "logit_bias": {"5": -100}, "top_p": 0.5}),
        "completion_tokens_stream": _json("POST", "/v1/completions", {
            "model": "chat", "prompt": [[5, 6, 7]], "stream": True, "logprobs": 1}),
        "embeddings": _json("POST", "/v1/embeddings", {
            "model": "embed", "input": ["one", "two"], "encoding_format": "base64",
            "dimensions": 2}),
        "embeddings_ids": _json("POST", "/v1/embeddings", {"model": "embed", "input": [3, 4]}),
        "models_keepalive": _http("GET", "/v1/models") + _http("GET", "/v1/models/chat")
        + _http("HEAD", "/v1/health/ready") + _http("GET", "/v1/metrics"),
        "unload": _http("POST", "/v1/models/chat/unload") + _http("POST", "/v1/models/x/load"),
        "expect_continue": _http("POST", "/v1/completions", json.dumps(
            {"model": "chat", "prompt": "x"}).encode(), ("Expect: 100-continue",)),
        "chunked": b"POST /v1/completions HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\n\r\n" + b"".join(
            b"%x\r\n%s\r\n" % (len(c), c) for c in (b'{"model":"chat",', b'"prompt":"hi"}', b"")),
        "auth": _json("POST", "/v1/chat/completions", {"model": "chat", "messages": messages},
                      f"Authorization: Bearer {API_KEY}"),
    }
    triton = {
        "infer_json": _json("POST", "/v2/models/chat/infer", {
            "id": "7", "inputs": [
                {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["hi"]},
                {"name": "sampling_parameters", "datatype": "BYTES", "shape": [1],
                 "data": [json.dumps({"temperature": 0, "max_tokens": 3})]}],
            "parameters": {"binary_data_output": False}}),
        "infer_binary": _binary_infer(),
        "infer_embed": _json("POST", "/v2/models/embed/infer", {"inputs": [
            {"name": "text_input", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]}),
        "generate": _json("POST", "/v2/models/chat/generate", {
            "text_input": "hi", "parameters": {"max_tokens": 3, "temperature": "0.5"}}),
        "generate_stream": _json("POST", "/v2/models/chat/versions/1/generate_stream", {
            "id": "s", "text_input": "hi", "stream": True, "exclude_input_in_output": True}),
        "metadata": _http("GET", "/v2") + _http("GET", "/v2/models/chat")
        + _http("GET", "/v2/models/chat/config") + _http("GET", "/v2/models/chat/ready")
        + _http("GET", "/v2/models/stats") + _http("GET", "/v2/health/ready"),
        "repository": _json("POST", "/v2/repository/index", {"ready": True})
        + _json("POST", "/v2/repository/models/chat/unload",
                {"parameters": {"unload_dependents": True}}),
    }
    out = {}
    for name, data in openai.items():
        out[f"openai_{name}"] = bytes([2 if name == "unload" else 16 if name == "auth" else 0])
        out[f"openai_{name}"] += data
    for name, data in triton.items():
        out[f"triton_{name}"] = bytes([3 if name == "repository" else 1]) + data
    out["openai_chat_small_reads"] = bytes([4]) + openai["chat"]
    out["triton_infer_byte_reads"] = bytes([5]) + triton["infer_binary"]
    return out


DICTIONARY = [
    "POST ", "GET ", "HEAD ", " HTTP/1.1\r\n", " HTTP/1.0\r\n", "\r\n\r\n", "Host: a\r\n",
    "Content-Length: ", "Transfer-Encoding: chunked\r\n", "Expect: 100-continue\r\n",
    "Connection: close\r\n", "Content-Type: application/json\r\n", "Content-Encoding: gzip\r\n",
    "Inference-Header-Content-Length: ", f"Authorization: Bearer {API_KEY}\r\n",
    "X-Request-ID: ", "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
    "/v1/models/", "/v2/models/chat/infer", "/v2/models/chat/generate",
    "/v2/models/chat/generate_stream", "/v2/models/embed/infer", "/versions/1",
    "/v2/repository/index", "/load", "/unload", "%2F", "%00", '"model"', '"chat"', '"embed"',
    '"messages"', '"role"', '"content"', '"user"', '"prompt"', '"input"', '"stream"',
    '"stream_options"', '"include_usage"', '"max_tokens"', '"temperature"', '"top_p"',
    '"top_k"', '"stop"', '"n"', '"logprobs"', '"top_logprobs"', '"logit_bias"', '"echo"',
    '"seed"', '"dimensions"', '"encoding_format"', '"inputs"', '"outputs"', '"name"',
    '"datatype"', '"shape"', '"data"', '"parameters"', '"binary_data_size"', '"binary_data"',
    '"text_input"', '"sampling_parameters"', '"exclude_input_in_output"', '"BYTES"', '"BOOL"',
    '"FP16"', '"BF16"', '"INT64"', "true", "false", "null", "NaN", "1e999", "\\ud800",
    "18446744073709551616", "-1", "[[[[", "{}", "[]",
]


def _write_seeds(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for name, data in seeds().items():
            (corpus / name).write_bytes(data)


def _write_dictionary(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    def quoted(token: str) -> str:  # libFuzzer's syntax: "...", escapes \\ \" and \xNN only
        return '"' + "".join(
            chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02x}"
            for b in token.encode("utf-8")) + '"'

    path.write_text("".join(quoted(token) + "\n" for token in DICTIONARY), encoding="ascii")


def _libfuzzer_args(argv: list[str]) -> list[str]:
    """Default corpus, dictionary, artifact folder and per-input timeout, unless given."""
    args = list(argv)
    flags = [a for a in args[1:] if a.startswith("-")]
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = WORK / "corpus"
        _write_seeds(corpus)
        args.append(str(corpus))
    if not any(f.startswith("-dict=") for f in flags):
        _write_dictionary(WORK / "requests.dict")
        args.append(f"-dict={WORK / 'requests.dict'}")
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        WORK.mkdir(parents=True, exist_ok=True)
        args.append(f"-artifact_prefix={WORK}/")
    if not any(f.startswith("-timeout=") for f in flags):
        args.append("-timeout=60")
    if not any(f.startswith("-max_len=") for f in flags):  # past the 413 and 431 limits
        args.append(f"-max_len={LIMITS.max_body_bytes + LIMITS.max_header_bytes}")
    return args


def main(argv: list[str]) -> None:
    _install_logging()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    repository_dir = tempfile.mkdtemp(prefix="triton-mlx-fuzz-")  # empty: no folders to load

    def test_one_input(data: bytes) -> None:
        check_one(data, loop, repository_dir)

    if len(argv) > 1 and argv[1] == "--run":  # replay files, e.g. a crash, without fuzzing
        for name in argv[2:]:
            check_one(Path(name).read_bytes(), loop, repository_dir)
            print(f"{name}: ok {[status for _, status in CAPTURE.exchanges]}")
        return
    atheris.Setup(_libfuzzer_args(argv), test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
