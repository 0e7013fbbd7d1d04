"""The GPU sweep driven by NVIDIA's aiperf as well (issue 14): a second opinion on our bench.

Our bench measures both servers with its own OpenAI-SDK client; aiperf is the client Triton and
vLLM users benchmark with, so its TTFT, inter-token latency and throughput, taken on the same
model and the same kind of load, show that our numbers do not come from our client. aiperf runs
several worker processes of its own, so this belongs on the GPU machine (16 cores), not on the
2-core box, where the client would compete with the server for the CPU.

For each server (ours, then ``mlx_lm.server``, started one at a time with ``bench.servers``) and
each concurrency, one ``aiperf profile`` run: the chat endpoint, streaming, synthetic prompts of
``--isl`` tokens, exactly ``--max-tokens`` output tokens (every special token banned through
``logit_bias``, as ``bench.workload.eos_ban`` does for our bench, identical bodies to both
servers), ``temperature`` 0, server-reported token counts, a warm-up request per stream first.

It works offline: aiperf 0.13 cannot load a tokenizer from a local path under
``HF_HUB_OFFLINE=1`` (it passes the path to ``snapshot_download``), so the model folder's
tokenizer files are laid out as a Hugging Face cache entry ``local/<model>`` and aiperf is
pointed at that cache. Each concurrency uses its own ``--random-seed`` (the same for both
servers), so a server's prefix cache never sees a prompt of an earlier case.

Results stay under ``--results`` (one folder per model, server and concurrency), so the servers
can be run in two separate calls (``--servers ours``, then ``--servers peer``) and the second
prints the table of both. With ``$OUT`` set, the table lands there too, with per server one
JSON-lines file (settings, then each case with aiperf's whole summary export) and its log's tail.
``--time-budget`` keeps one call under the GPU machine's 10 minutes per command.

Usage (on the GPU machine, aiperf installed in /tmp/site3 by .gpuD1/install.sh):
    python3 -m bench.aiperf_run --model-dir /tmp/llama-1b-random --aiperf-site /tmp/site3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import servers, workload

SERVER_NAMES = {"ours": "triton-mlx", "peer": "mlx_lm.server"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "tokenizer.model", "vocab.json", "merges.txt",
                   "added_tokens.json", "chat_template.jinja")
SNAPSHOT = "0" * 40  # the cache entry's only revision
_T0 = time.monotonic()


@dataclass
class Case:
    """One aiperf run: a server at one concurrency."""

    server: str
    concurrency: int
    requests: int
    ttft_p50: float | None = None  # ms
    ttft_p99: float | None = None
    itl_p50: float | None = None  # ms
    itl_p99: float | None = None
    output_tok_s: float | None = None
    request_s: float | None = None
    errors: int = 0
    osl_min: float | None = None  # server-reported completion tokens per request
    osl_max: float | None = None
    failure: str | None = None  # why no numbers came back


def progress(message: str) -> None:
    elapsed = int(time.monotonic() - _T0)
    print(f"[aiperf {elapsed // 60:02d}:{elapsed % 60:02d}] {message}", file=sys.stderr,
          flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.aiperf_run", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True, help="an mlx-lm model folder")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 128, 256],
                   help="concurrent streams per case (default: 1 16 64 128 256)")
    p.add_argument("--servers", nargs="+", choices=sorted(SERVER_NAMES), default=["ours", "peer"],
                   help="which servers to run now (default: both); the table shows every server "
                   "with results for this model under --results")
    p.add_argument("--max-tokens", type=int, default=128, help="output tokens per request")
    p.add_argument("--isl", type=int, default=50, help="synthetic prompt tokens (default: 50)")
    p.add_argument("--requests-per-stream", type=int, default=4,
                   help="measured requests per case = this x concurrency (default: 4) ...")
    p.add_argument("--min-requests", type=int, default=16, help="... but at least this many")
    p.add_argument("--workers-max", type=int, default=8,
                   help="aiperf worker processes at most (default: 8 of the 16 cores: the rest "
                   "is left to the server and aiperf's own services)")
    p.add_argument("--case-timeout", type=float, default=240,
                   help="seconds one aiperf run may take (default: 240); after a timeout or a "
                   "failure the larger concurrencies of that server are skipped")
    p.add_argument("--request-timeout", type=float, default=120,
                   help="seconds one request may take before aiperf counts it as an error "
                   "(default: 120)")
    p.add_argument("--time-budget", type=float, default=540,
                   help="seconds this call may run (default: 540, under the GPU machine's 600 "
                   "per command); no case starts after it and no case runs past it; 0: no limit")
    p.add_argument("--table-only", action="store_true",
                   help="run nothing: print the table of the results under --results")
    p.add_argument("--server-args", default="", help="extra arguments for our server")
    p.add_argument("--peer-args", default="", help="extra arguments for mlx_lm.server")
    p.add_argument("--aiperf-python", default=sys.executable,
                   help="the Python that runs aiperf (default: this one)")
    p.add_argument("--aiperf-site", default="",
                   help="folder(s) holding aiperf, put first on PYTHONPATH for aiperf only "
                   "(os.pathsep-separated), e.g. /tmp/site3")
    p.add_argument("--results", type=Path, default=Path(tempfile.gettempdir()) / "aiperf-results",
                   help="where results stay between calls (default: /tmp/aiperf-results)")
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT")
                   else None, help="copy the table and aiperf's exports here (default: $OUT)")
    args = p.parse_args(argv)
    args.model_dir = args.model_dir.resolve()
    args.concurrency = sorted(set(args.concurrency))
    return args


def request_count(args: argparse.Namespace, concurrency: int) -> int:
    return max(args.requests_per_stream * concurrency, args.min_requests)


# ----- what aiperf needs offline -----

def tokenizer_cache(model_dir: Path, cache_root: Path) -> str:
    """Lay the model folder's tokenizer files out as the Hugging Face cache entry
    ``local/<name>`` under ``cache_root``; return that repo id for ``--tokenizer``."""
    repo_id = f"local/{model_dir.name}"
    entry = cache_root / f"models--local--{model_dir.name}"
    snapshot = entry / "snapshots" / SNAPSHOT
    shutil.rmtree(entry, ignore_errors=True)
    snapshot.mkdir(parents=True)
    copied = [shutil.copy(model_dir / name, snapshot / name)
              for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    if not copied:
        raise SystemExit(f"no tokenizer files in {model_dir}")
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(SNAPSHOT)
    return repo_id


def eos_bias(model_dir: Path) -> dict[str, int]:
    """``logit_bias`` banning every special token of the model (``bench.workload.eos_ban``)."""
    from mlx_lm.utils import load_config, load_tokenizer

    config = load_config(model_dir)
    return workload.eos_ban(load_tokenizer(model_dir, eos_token_ids=config.get("eos_token_id")))


def aiperf_env(args: argparse.Namespace, cache_root: Path) -> dict[str, str]:
    env = {**os.environ, **servers.OFFLINE, "HF_HUB_CACHE": str(cache_root)}
    if args.aiperf_site:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (args.aiperf_site, os.environ.get("PYTHONPATH", "")) if p)
    return env


def aiperf_argv(args: argparse.Namespace, spec: servers.ServerSpec, concurrency: int,
                tokenizer: str, bias: dict[str, int], artifacts: Path) -> list[str]:
    """The ``aiperf profile`` command line of one case."""
    requests = request_count(args, concurrency)
    extra = {"logit_bias": bias, "temperature": 0}
    return [
        args.aiperf_python, "-m", "aiperf", "profile",
        "--model", spec.model, "--url", f"http://127.0.0.1:{spec.port}",
        "--endpoint-type", "chat", "--streaming", "--tokenizer", tokenizer,
        "--isl", str(args.isl), "--isl-stddev", "0",
        "--osl", str(args.max_tokens), "--osl-stddev", "0",
        "--extra-inputs", json.dumps(extra), "--use-server-token-count",
        "--concurrency", str(concurrency), "--request-count", str(requests),
        "--warmup-request-count", str(concurrency),
        "--num-dataset-entries", str(requests + concurrency), "--random-seed", str(concurrency),
        "--workers-max", str(min(args.workers_max, concurrency)),
        "--request-timeout-seconds", str(int(args.request_timeout)),
        "--artifact-dir", str(artifacts), "--ui", "none",
        "--no-server-metrics", "--no-gpu-telemetry",
    ]


# ----- one case -----

def case_from_export(server: str, concurrency: int, requests: int,
                     export: dict[str, Any]) -> Case:
    """The numbers of aiperf's ``profile_export_aiperf.json``."""
    def stat(metric: str, key: str) -> float | None:
        value = export.get(metric, {}).get(key)
        return None if value is None else float(value)

    errors = sum(int(e.get("count", 0)) for e in export.get("error_summary") or [])
    if not errors:
        errors = int(stat("error_request_count", "avg") or 0)
    return Case(server, concurrency, requests,
                stat("time_to_first_token", "p50"), stat("time_to_first_token", "p99"),
                stat("inter_token_latency", "p50"), stat("inter_token_latency", "p99"),
                stat("output_token_throughput", "avg"), stat("request_throughput", "avg"),
                errors, stat("output_sequence_length", "min"),
                stat("output_sequence_length", "max"))


def remaining(args: argparse.Namespace) -> float:
    """Seconds left of ``--time-budget`` (infinite without one)."""
    return args.time_budget - (time.monotonic() - _T0) if args.time_budget else float("inf")


def run_case(args: argparse.Namespace, spec: servers.ServerSpec, concurrency: int,
             tokenizer: str, bias: dict[str, int], env: dict[str, str], folder: Path) -> Case:
    """One ``aiperf profile`` run; its artifacts and a ``case.json`` land in ``folder``."""
    requests = request_count(args, concurrency)
    timeout = min(args.case_timeout, remaining(args))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    argv = aiperf_argv(args, spec, concurrency, tokenizer, bias, folder / "artifacts")
    log_path = folder / "aiperf.log"
    with open(log_path, "w") as log:
        # A session of its own: on a timeout the whole tree of aiperf processes is stopped.
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd=servers.REPO_ROOT, start_new_session=True)
        try:
            rc = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            rc = None
    export_path = folder / "artifacts" / "profile_export_aiperf.json"
    if rc is None:
        case = Case(spec.name, concurrency, requests,
                    failure=f"timed out after {timeout:.0f} s")
    elif export_path.is_file():
        case = case_from_export(spec.name, concurrency, requests,
                                json.loads(export_path.read_text()))
        if rc != 0:
            case.failure = f"aiperf exited with {rc}"
    else:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        case = Case(spec.name, concurrency, requests, failure=f"aiperf exited with {rc}:\n{tail}")
    (folder / "case.json").write_text(json.dumps(asdict(case), indent=2))
    return case


def sweep_server(args: argparse.Namespace, key: str, tokenizer: str, bias: dict[str, int],
                 env: dict[str, str], model_results: Path) -> list[Case]:
    """Start one server, run every concurrency against it, stop it. After a failure, a timeout
    or the end of the time budget the larger concurrencies are not tried."""
    name = SERVER_NAMES[key]
    log_dir = model_results / name
    shutil.rmtree(log_dir, ignore_errors=True)  # no case of an earlier call stays behind
    log_dir.mkdir(parents=True)
    (log_dir / "settings.json").write_text(json.dumps(settings(args)))
    first = args.concurrency[0]

    def give_up(concurrency: int, why: str) -> list[Case]:
        progress(f"{name}: {concurrency} streams: {why}")
        case = Case(name, concurrency, request_count(args, concurrency), failure=why)
        (log_dir / f"c{concurrency}").mkdir()
        (log_dir / f"c{concurrency}" / "case.json").write_text(json.dumps(asdict(case)))
        return [case]

    if remaining(args) < 90:
        return give_up(first, "not started: the --time-budget ran out")
    slots = max(args.concurrency)
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="triton-mlx-aiperf-") as tmp:
        if key == "ours":
            repository = Path(tmp) / "repository"
            repository.mkdir()
            spec = servers.ours(args.model_dir, repository, slots, shlex.split(args.server_args))
        else:
            spec = servers.peer(args.model_dir, slots, shlex.split(args.peer_args))
        progress(f"{name}: starting")
        try:
            with servers.running(spec, log_dir, ready_timeout=min(600, remaining(args))):
                for concurrency in args.concurrency:
                    if remaining(args) < 30:
                        cases += give_up(concurrency, "skipped: the --time-budget ran out")
                        break
                    progress(f"{name}: {concurrency} streams, "
                             f"{request_count(args, concurrency)} requests")
                    case = run_case(args, spec, concurrency, tokenizer, bias, env,
                                    log_dir / f"c{concurrency}")
                    cases.append(case)
                    if case.failure:
                        progress(f"{name}: {concurrency} streams failed: {case.failure}")
                        break
        except servers.ServerFailed as error:
            return give_up(first, f"server failed: {error}")
    return cases


# ----- the table -----

def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What must match for two servers' cases to share a table."""
    return {"aiperf": args.aiperf_version, "model_dir": str(args.model_dir),
            "max_tokens": args.max_tokens, "isl": args.isl,
            "requests_per_stream": args.requests_per_stream, "min_requests": args.min_requests,
            "workers_max": args.workers_max}


def load_cases(args: argparse.Namespace,
               model_results: Path) -> tuple[dict[tuple[int, str], Case], list[str]]:
    """Every case on disk for this model and these settings, from this call or an earlier one;
    and a note for each server whose cases were left out for other settings."""
    found: dict[tuple[int, str], Case] = {}
    skipped: list[str] = []
    for name in SERVER_NAMES.values():
        path = model_results / name / "settings.json"
        if not path.is_file():
            continue
        if json.loads(path.read_text()) != settings(args):
            skipped.append(f"- {name}: results under {path.parent} are of other settings "
                           f"({path.read_text()}), not shown")
            continue
        for c in args.concurrency:
            path = model_results / name / f"c{c}" / "case.json"
            if path.is_file():
                found[(c, name)] = Case(**json.loads(path.read_text()))
    return found, skipped


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(ours: float | None, peer: float | None) -> str:
    return "-" if ours is None or not peer else f"{ours / peer:.2f}x"


FIELDS = ("ttft_p50", "ttft_p99", "itl_p50", "itl_p99", "output_tok_s", "request_s")


def render(args: argparse.Namespace, cases: dict[tuple[int, str], Case], version: str,
           notes: list[str]) -> str:
    """One markdown table: each concurrency, each server, then ours/peer; notes under it."""
    ours, peer = SERVER_NAMES["ours"], SERVER_NAMES["peer"]
    lines = [
        f"## aiperf {version}: {args.model_dir.name}, chat streaming, {args.isl}-token synthetic "
        f"prompts, {args.max_tokens} output tokens per request",
        f"machine: {platform.platform()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; aiperf workers <= {args.workers_max}; requests per case "
        f"max({args.requests_per_stream} x streams, {args.min_requests}) after one warm-up "
        "request per stream; special tokens banned with logit_bias on both sides; "
        "server-reported token counts",
        "",
        "| streams | server | requests | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | output tok/s "
        "| req/s | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = list(notes)
    for c in args.concurrency:
        for name in (ours, peer):
            case = cases.get((c, name))
            if case is None:
                continue
            errors = "-" if case.failure and case.ttft_p50 is None else str(case.errors)
            lines.append(
                f"| {c} | {name} | {case.requests} | {_ms(case.ttft_p50)} | {_ms(case.ttft_p99)} "
                f"| {_ms(case.itl_p50)} | {_ms(case.itl_p99)} | {_num(case.output_tok_s)} "
                f"| {_num(case.request_s, 2)} | {errors} |")
            if case.failure:
                notes.append(f"- {name}, {c} streams: {case.failure.splitlines()[0]}")
            elif case.osl_min != args.max_tokens or case.osl_max != args.max_tokens:
                notes.append(f"- {name}, {c} streams: {_num(case.osl_min, 0)}-"
                             f"{_num(case.osl_max, 0)} output tokens per request, "
                             f"not {args.max_tokens}")
        a, b = cases.get((c, ours)), cases.get((c, peer))
        if a and b and a.ttft_p50 is not None and b.ttft_p50 is not None:
            cells = " | ".join(_ratio(getattr(a, f), getattr(b, f)) for f in FIELDS)
            lines.append(f"| {c} | ours/peer | | {cells} | |")
    lines += ["", "ours/peer: below 1x is better for TTFT and ITL, above 1x for tok/s and req/s. "
              "ITL is aiperf's inter-token latency: (request latency - TTFT) / (tokens - 1), "
              "per request.", *notes]
    return "\n".join(lines) + "\n"


def aiperf_version(args: argparse.Namespace, env: dict[str, str]) -> str:
    probe = "from importlib.metadata import version; print(version('aiperf'))"
    done = subprocess.run([args.aiperf_python, "-c", probe], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"aiperf is not importable by {args.aiperf_python}:\n{done.stderr}")
    return done.stdout.strip()


def copy_out(out: Path, model_results: Path, table: str) -> None:
    """Into ``out`` (the GPU machine's $OUT: at most 8 files come back, none in subfolders
    needed): the table, and per server one JSON-lines file (its settings, then each case with
    aiperf's whole summary export) and the tail of its log."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "aiperf_table.md").write_text(table)
    folders = model_results.iterdir() if model_results.is_dir() else []
    for folder in sorted(p for p in folders if (p / "settings.json").is_file()):
        lines = [json.dumps({"kind": "settings", **json.loads(
            (folder / "settings.json").read_text())})]
        for case_file in sorted(folder.glob("c*/case.json"), key=lambda f: int(f.parent.name[1:])):
            export = case_file.parent / "artifacts" / "profile_export_aiperf.json"
            lines.append(json.dumps({
                "kind": "case", **json.loads(case_file.read_text()),
                "export": json.loads(export.read_text()) if export.is_file() else None}))
        (out / f"aiperf_{folder.name}.jsonl").write_text("\n".join(lines) + "\n")
        log = folder / f"{folder.name}.log"
        tail = log.read_text(errors="replace").splitlines()[-200:] if log.is_file() else []
        if tail:
            (out / f"aiperf_{folder.name}.log").write_text("\n".join(tail) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_results = args.results / args.model_dir.name
    cache_root = args.results / "hf-cache"
    env = aiperf_env(args, cache_root)
    args.aiperf_version = aiperf_version(args, env)
    failed = False
    if not args.table_only:
        tokenizer = tokenizer_cache(args.model_dir, cache_root)
        bias = eos_bias(args.model_dir)
        for key in args.servers:
            cases = sweep_server(args, key, tokenizer, bias, env, model_results)
            failed = failed or any(c.failure or c.errors for c in cases)
    cases, notes = load_cases(args, model_results)
    table = render(args, cases, args.aiperf_version, notes)
    print(table, end="", flush=True)
    if args.out:
        copy_out(args.out, model_results, table)
    progress("done")
    return int(failed)


if __name__ == "__main__":
    raise SystemExit(main())
