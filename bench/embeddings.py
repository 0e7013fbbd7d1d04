"""``python -m bench.embeddings``: sentences per second, ours next to sentence-transformers.

Same machine, same model folder (all-MiniLM-L6-v2 from the model repository), same sentences:

* **batch 1**: one sentence per call, calls one after another (a search box embedding queries);
* **batch 64**: 64 sentences per call (indexing documents).

Ours is measured over HTTP (``/v1/embeddings`` with the OpenAI SDK's default base64 encoding,
a keep-alive connection, the server as a child process) and in-process (the encoder thread
alone, no HTTP), so the HTTP share is visible. sentence-transformers runs ``encode`` with
``batch_size`` 1 and 64 in its own venv (``--reference-python``; ``make bench`` creates
``.venv-st`` with torch's CPU build): once over the whole list (``encode`` sorts it all by
length before cutting batches, which a server cannot do across requests) and once per 64
sentences, as a server receives them. Also printed: the lowest cosine similarity between our
vectors and theirs over all sentences, so speed is never bought with wrong numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import servers
from bench.report import load_line, machine_lines

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / "model_repository" / "all-MiniLM-L6-v2"
BATCH_ONE_CALLS = 256
SENTENCES = 1024
_WORDS = (
    "the a of to and in is that for it on with as was by at be this have from or an they "
    "which one you had not but what all were when we there can been has more if will would "
    "model server search query document vector index memory batch token latency throughput "
    "river mountain city library music garden science history kitchen weather journey "
    "quickly slowly carefully bright quiet ancient modern simple complex useful famous "
    "runs builds reads writes finds measures compares returns stores sends opens explains"
).split()


def make_sentences(count: int = SENTENCES, seed: int = 0) -> list[str]:
    """Deterministic sentences of 4 to 60 words (mostly short, some long): a query/document mix."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        length = min(60, max(4, int(rng.lognormvariate(2.6, 0.6))))
        words = [rng.choice(_WORDS) for _ in range(length)]
        sentences.append(" ".join(words).capitalize() + ".")
    return sentences


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.embeddings", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--reference-python", type=Path,
                        help="a Python with torch and sentence-transformers (make bench: "
                             ".venv-st/bin/python); without it only our side is measured")
    return parser.parse_args(argv)


def _post(connection: http.client.HTTPConnection, model: str, texts: list[str]) -> np.ndarray:
    body = json.dumps({"model": model, "input": texts, "encoding_format": "base64"})
    connection.request("POST", "/v1/embeddings", body,
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"/v1/embeddings answered {response.status}: {data[:300]!r}")
    items = json.loads(data)["data"]
    return np.stack([np.frombuffer(base64.b64decode(i["embedding"]), dtype="<f4")
                     for i in items])


def measure_http(port: int, model: str, sentences: list[str]) -> tuple[dict[int, float],
                                                                      np.ndarray]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    _post(connection, model, sentences[:64])  # warm-up
    rates = {}
    started = time.perf_counter()
    for sentence in sentences[:BATCH_ONE_CALLS]:
        _post(connection, model, [sentence])
    rates[1] = BATCH_ONE_CALLS / (time.perf_counter() - started)
    started = time.perf_counter()
    vectors = [_post(connection, model, sentences[i:i + 64])
               for i in range(0, len(sentences), 64)]
    rates[64] = len(sentences) / (time.perf_counter() - started)
    connection.close()
    return rates, np.concatenate(vectors)


def measure_in_process(model_dir: Path, sentences: list[str]) -> dict[int, float]:
    from triton_mlx.encoders.engine import EmbeddingEngine

    engine = EmbeddingEngine(model_dir, name="bench")
    engine.start()
    engine.wait_loaded()

    async def run() -> dict[int, float]:
        tokens = engine.tokenize(sentences)
        await engine.embed(tokens[:64])
        rates = {}
        started = time.perf_counter()
        for ids in tokens[:BATCH_ONE_CALLS]:
            await engine.embed([ids])
        rates[1] = BATCH_ONE_CALLS / (time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(0, len(tokens), 64):
            await engine.embed(tokens[i:i + 64])
        rates[64] = len(tokens) / (time.perf_counter() - started)
        return rates

    try:
        return asyncio.run(run())
    finally:
        engine.stop()


def measure_reference(python: Path, model_dir: Path, sentences_path: Path,
                      out: Path) -> dict:
    result = subprocess.run(
        [str(python), str(REPO_ROOT / "bench" / "st_reference.py"), str(model_dir),
         str(sentences_path), str(out), "1", "64"],
        capture_output=True, text=True, env={**os.environ, **servers.OFFLINE},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sentence-transformers run failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = load_line()
    model_dir = args.model_dir.resolve()
    if not (model_dir / "config.json").is_file():
        print(f"no model folder at {model_dir} (make embedding-model links it)", file=sys.stderr)
        return 2
    sentences = make_sentences()
    rows: list[tuple[str, dict[int, float]]] = []
    cosine_line = ""
    with tempfile.TemporaryDirectory(prefix="triton-mlx-bench-emb-") as tmp:
        tmp_path = Path(tmp)
        repository = tmp_path / "repository"
        repository.mkdir()
        print("[bench] triton-mlx over HTTP", file=sys.stderr, flush=True)
        spec = servers.ours(model_dir, repository, slots=1, extra=[])
        with servers.running(spec, tmp_path):
            http_rates, ours = measure_http(spec.port, spec.model, sentences)
        rows.append(("triton-mlx, /v1/embeddings over HTTP", http_rates))
        print("[bench] triton-mlx encoder in-process", file=sys.stderr, flush=True)
        rows.append(("triton-mlx encoder thread, in-process", measure_in_process(model_dir,
                                                                                 sentences)))
        reference = None
        if args.reference_python:
            print("[bench] sentence-transformers", file=sys.stderr, flush=True)
            sentences_path = tmp_path / "sentences.json"
            sentences_path.write_text(json.dumps(sentences), encoding="utf-8")
            vectors_path = tmp_path / "reference.npy"
            reference = measure_reference(args.reference_python, model_dir, sentences_path,
                                          vectors_path)
            rates = reference["rates"]
            rows.append((f"sentence-transformers {reference['version']}, one encode call per "
                         f"64 sentences", {1: rates["1"], 64: rates["64/call"]}))
            rows.append((f"sentence-transformers {reference['version']} (torch "
                         f"{reference['torch']}, CPU, {reference['threads']} threads)",
                         {1: rates["1"], 64: rates["64"]}))
            theirs = np.load(vectors_path)
            cosines = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1)
                                                * np.linalg.norm(theirs, axis=1))
            cosine_line = (f"lowest cosine similarity, ours vs sentence-transformers, over "
                           f"{len(sentences)} sentences: {cosines.min():.6f}")
    print(render(rows, args.model_dir.name, len(sentences), load, cosine_line), end="")
    return 0


def render(rows: list[tuple[str, dict[int, float]]], model: str, count: int, load: str,
           cosine_line: str) -> str:
    lengths = [len(s.split()) for s in make_sentences()]
    lines = [f"## Embeddings: {model}, sentences per second (higher is better)", "",
             *[f"- {line}" for line in machine_lines()], f"- {load}",
             f"- sentences: {count} generated ({min(lengths)}-{max(lengths)} words, median "
             f"{int(np.median(lengths))}); batch 1 = {BATCH_ONE_CALLS} calls of one sentence, "
             f"batch 64 = {count // 64} calls of 64", ""]
    reference = rows[-1][1] if len(rows) > 2 else None  # encode over the whole list
    header = "| | batch 1 | batch 64 |" + (" ratio to sentence-transformers (1 / 64) |"
                                           if reference else "")
    lines += [header, "|---|---|---|" + ("---|" if reference else "")]
    for name, rates in rows:
        cells = f"| {name} | {rates[1]:.1f} | {rates[64]:.1f} |"
        if reference:
            cells += f" {rates[1] / reference[1]:.2f}x / {rates[64] / reference[64]:.2f}x |"
        lines.append(cells)
    if cosine_line:
        lines += ["", cosine_line]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
