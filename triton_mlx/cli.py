"""Command line: ``python -m triton_mlx`` serves; ``python -m triton_mlx import-gguf`` converts."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from triton_mlx.config import ServerConfig
from triton_mlx.engine.runtime_profile import PROFILE_CHOICES
from triton_mlx.repository.settings import TOOL_CALL_FORMATS

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CONTROL_MODES = ("none", "poll", "explicit")


def _port(text: str) -> int:
    value = _int_at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0-65535)")
    return value


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    return parse


def _finite_float(text: str, *, zero_allowed: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    low_ok = value >= 0 if zero_allowed else value > 0
    if not low_ok or value == float("inf"):
        what = "a number >= 0" if zero_allowed else "a positive number"
        raise argparse.ArgumentTypeError(f"{text} must be {what}")
    return value


def _positive_float(text: str) -> float:
    return _finite_float(text, zero_allowed=False)


def _non_negative_float(text: str) -> float:
    return _finite_float(text, zero_allowed=True)


def _api_key(text: str) -> str:
    """A key that can match: not empty (an empty key would silently turn authentication
    off), printable ASCII without spaces (HTTP header values are not reliably anything else)."""
    if not text:
        raise argparse.ArgumentTypeError("the API key is empty; leave --api-key and "
                                         "TRITON_MLX_API_KEY unset to serve without one")
    if not all("!" <= ch <= "~" for ch in text):
        raise argparse.ArgumentTypeError("the API key must be printable ASCII without spaces")
    return text


def _existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory")
    return path


def _readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a readable file")
    return path


def _level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.upper()


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="triton-mlx",
        description="Serve MLX language models over the OpenAI API and NVIDIA Triton's "
        "HTTP protocol. Subcommand: 'import-gguf FILE DEST' converts a "
        "llama-family GGUF file into a model folder.",
    )
    p.add_argument("--model-repository", type=_existing_dir, required=True, metavar="PATH",
                   help="Model repository: every sub-folder with a config.json is a model, "
                   "named after its folder (required).")
    p.add_argument("--host", default="0.0.0.0", help="Bind address (default: 0.0.0.0).")
    p.add_argument("--openai-port", type=_port, default=9000, metavar="PORT",
                   help="OpenAI API port (default: 9000).")
    p.add_argument("--http-port", type=_port, default=8000, metavar="PORT",
                   help="NVIDIA Triton / KServe v2 HTTP API port, /v2/... (default: 8000).")
    p.add_argument("--metrics-port", type=_port, default=8002, metavar="PORT",
                   help="Prometheus metrics port, GET /metrics, with Triton's nv_* metrics "
                   "and ours (default: 8002). The same text is at /v1/metrics on the OpenAI "
                   "port.")
    p.add_argument("--log-level", type=_level, default="INFO", metavar="LEVEL",
                   help="DEBUG, INFO, WARNING, ERROR (default: INFO). Prompts and outputs "
                   "are logged only at DEBUG.")
    p.add_argument("--max-memory-gb", type=_positive_float, default=None, metavar="GB",
                   help="Memory budget for models and KV caches, in GB (default: the "
                   "device's limit). Sets MLX's memory limit; the auto runtime profile "
                   "dequantizes a model to float32 on a CPU only if its float32 weights fit "
                   "it (default there: half of physical memory), and a quantized model on "
                   "CUDA only if its dense weights fit half of it. Each model's KV caches get what "
                   "is left after its weights: requests wait until theirs fit, and one that "
                   "could never fit gets 400.")
    p.add_argument("--default-max-tokens", type=_int_at_least(1), default=256, metavar="N",
                   help="Tokens generated when a request sets no max_tokens (default: 256; "
                   "trimmed to the model's max_tokens and context).")
    p.add_argument("--chat-template", type=_readable_file, default=None, metavar="PATH",
                   help="Jinja2 chat template that replaces every model's own template.")
    p.add_argument("--tool-call-format", choices=TOOL_CALL_FORMATS, default=None,
                   metavar="FORMAT",
                   help="How every chat model is prompted for tools and its calls parsed, "
                   "overriding what is detected from its chat template (a model's "
                   "triton_mlx.json tool_call_format overrides this): "
                   f"{', '.join(TOOL_CALL_FORMATS)}. "
                   "'default' puts the tool schemas in the system turn and reads "
                   "<tool_call>{...}</tool_call> calls.")
    p.add_argument("--model-control-mode", choices=CONTROL_MODES, default="poll",
                   metavar="MODE",
                   help="none: load every model at start, then never change; poll "
                   "(default): load every model at start, then rescan the repository every "
                   "--repository-poll-secs to load new, reload changed and unload removed "
                   "models; explicit: load only the --load-model ones, then load and unload "
                   "through POST /v2/repository/models/{m}/load|unload and "
                   "POST /v1/models/{m}/load|unload.")
    p.add_argument("--repository-poll-secs", type=_positive_float, default=15.0, metavar="N",
                   help="Seconds between repository scans in poll mode (default: 15); a "
                   "folder is (re)loaded once its files held still over two scans.")
    p.add_argument("--load-model", action="append", default=[], metavar="NAME",
                   dest="load_models",
                   help="In explicit mode, a model folder to load at start (repeatable).")
    p.add_argument("--max-concurrent-requests", type=_int_at_least(1), default=4,
                   metavar="N",
                   help="Sequences generated at once per model: the continuous-batching "
                   "slots (default: 4; a model's max_batch_size caps it further).")
    p.add_argument("--max-queued-requests", type=_int_at_least(0), default=32, metavar="N",
                   help="Requests per model that may wait for a free slot; beyond that "
                   "requests get 429 with Retry-After (default: 32).")
    p.add_argument("--api-key", type=_api_key, default=os.environ.get("TRITON_MLX_API_KEY"),
                   metavar="KEY",
                   help="Require 'Authorization: Bearer KEY' on every route but the health "
                   "checks (default: the TRITON_MLX_API_KEY environment variable; none).")
    p.add_argument("--json-logs", action="store_true",
                   help="One JSON object per log line instead of human-readable text.")
    p.add_argument("--max-request-mb", type=_positive_float, default=8.0, metavar="MB",
                   help="Largest request body accepted; larger ones get 413 (default: 8).")
    p.add_argument("--max-connections", type=_int_at_least(1), default=1000, metavar="N",
                   help="Open connections per port; more are answered 503 and closed "
                   "(default: 1000). Mind the process's file-descriptor limit (ulimit -n).")
    p.add_argument("--header-timeout-secs", type=_positive_float, default=10.0, metavar="N",
                   help="A request's head must arrive within N seconds, else 408 and close "
                   "(default: 10): slow-header clients cannot hold connections.")
    p.add_argument("--body-timeout-secs", type=_positive_float, default=30.0, metavar="N",
                   help="A request's body must arrive within N seconds of its head, else 408 "
                   "(default: 30).")
    p.add_argument("--idle-timeout-secs", type=_positive_float, default=5.0, metavar="N",
                   help="An idle keep-alive connection is closed after N seconds (default: 5).")
    p.add_argument("--write-timeout-secs", type=_positive_float, default=30.0, metavar="N",
                   help="A client that stops reading the response for N seconds is dropped "
                   "(default: 30).")
    p.add_argument("--responses-store-size", type=_int_at_least(0), default=1000, metavar="N",
                   help="Responses API: the most recent N stored responses are kept in memory "
                   "for previous_response_id and GET/DELETE /v1/responses/{id} (default: "
                   "1000; 0 stores none).")
    p.add_argument("--prefix-cache-mb", type=_non_negative_float, default=1024.0, metavar="MB",
                   help="Memory per model for KV caches kept for reuse by later prompts with "
                   "the same beginning (multi-turn chats, shared system prompts); least "
                   "recently used entries go first, and running requests take precedence. "
                   "0 disables it (default: 1024).")
    p.add_argument("--parallel", choices=("tensor", "pipeline"), default=None,
                   help="Under mlx.launch (several ranks: Macs over Thunderbolt, GPUs of one "
                   "box, processes of one machine): split the first chat model tensor-parallel "
                   "(every rank holds a slice of each layer; the default) or as a pipeline "
                   "(each rank holds consecutive layers). Rank 0 serves HTTP; the other ranks "
                   "open no port. Ignored in a single process.")
    p.add_argument("--rank-timeout-secs", type=_positive_float, default=120.0, metavar="N",
                   help="Under mlx.launch: a rank that hears nothing from the others for N "
                   "seconds (one died or hangs) logs why and exits with status 1, rather "
                   "than wait forever (default: 120; longer than any one step must take).")
    p.add_argument("--prefill-chunk-tokens", type=_int_at_least(1), default=None, metavar="N",
                   help="Prompt tokens prefilled between two decode steps, so a long prompt "
                   "never stalls running streams for long (default: 128 on a CPU, 2048 on a "
                   "GPU).")
    p.add_argument("--exit-timeout-secs", type=_non_negative_float, default=30.0,
                   metavar="N",
                   help="On SIGTERM or SIGINT, how long in-flight requests may run on before "
                   "they are cut and the server exits (default: 30; Triton's flag).")
    p.add_argument("--runtime-profile", choices=PROFILE_CHOICES, default="auto",
                   help="How a model's weights run on a CPU (default: auto). fast: dense "
                   "float32 weights through an optimized BLAS (OpenBLAS, loaded at start on "
                   "Linux): several times the throughput with concurrent requests, at ~5x the "
                   "memory of 4-bit weights. small: the weights as stored (quantized stays "
                   "quantized), float32 scales and norms. auto: fast when an optimized BLAS "
                   "is loaded and the float32 weights fit --max-memory-gb (else half of "
                   "RAM), small otherwise. On a GPU, for quantized models only: fast "
                   "dequantizes them to their scales' dtype (bfloat16/float16), small keeps "
                   "them as stored, and auto dequantizes on CUDA (whose quantized matmul is "
                   "slow with more than one row) when the dense weights fit half the memory "
                   "budget, never on Metal. The choice and its reason are logged and shown in "
                   "/v1/models/{id}.")
    return p


def import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="triton-mlx import-gguf",
        description="Convert a llama-family GGUF file (Q4_0, Q4_1, Q8_0, F16, F32 tensors) "
        "into an mlx-lm model folder, keeping its quantization.",
    )
    p.add_argument("gguf", type=Path, help="The .gguf file.")
    p.add_argument("dest", type=Path, help="The model folder to create, e.g. "
                   "model_repository/MyModel.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing folder.")
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        model_repository=args.model_repository,
        host=args.host,
        openai_port=args.openai_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_level=args.log_level,
        max_memory_gb=args.max_memory_gb,
        default_max_tokens=args.default_max_tokens,
        chat_template=args.chat_template,
        tool_call_format=args.tool_call_format,
        model_control_mode=args.model_control_mode,
        repository_poll_secs=args.repository_poll_secs,
        load_models=tuple(args.load_models),
        max_concurrent_requests=args.max_concurrent_requests,
        max_queued_requests=args.max_queued_requests,
        api_key=args.api_key,
        json_logs=args.json_logs,
        max_request_bytes=int(args.max_request_mb * 1024 * 1024),
        runtime_profile=args.runtime_profile,
        prefix_cache_mb=args.prefix_cache_mb,
        prefill_chunk_tokens=args.prefill_chunk_tokens,
        exit_timeout_secs=args.exit_timeout_secs,
        max_connections=args.max_connections,
        header_timeout_secs=args.header_timeout_secs,
        body_timeout_secs=args.body_timeout_secs,
        idle_timeout_secs=args.idle_timeout_secs,
        write_timeout_secs=args.write_timeout_secs,
        responses_store_size=args.responses_store_size,
        parallel=args.parallel,
        rank_timeout_secs=args.rank_timeout_secs,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
    if argv[:1] == ["import-gguf"]:
        return _import_gguf(import_parser().parse_args(argv[1:]))
    from triton_mlx.server import run

    return _leave(run(config_from_args(serve_parser().parse_args(argv))))


def _leave(code: int) -> NoReturn:
    """End the process with ``code`` now that the server has drained, stopped and logged it.

    On MLX's CUDA backend (0.32.4, the lent H100/H200) the interpreter's own teardown, after
    everything of ours has stopped, ended in a C++ ``terminate`` from a native destructor
    (SIGABRT, exit -6, no Python frame left) instead of the clean exit promised on SIGTERM.
    Nothing is left to release at this point, so the process leaves without running native
    destructors, once the logs are flushed.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _import_gguf(args: argparse.Namespace) -> int:
    from triton_mlx.gguf.importer import GGUFImportError, import_gguf

    try:
        report = import_gguf(args.gguf, args.dest, overwrite=args.overwrite)
    except GGUFImportError as exc:
        print(f"import-gguf: error: {exc}", file=sys.stderr)
        return 2
    print(f"imported {args.gguf} -> {args.dest}")
    print("\n".join(report.lines()))
    return 0
