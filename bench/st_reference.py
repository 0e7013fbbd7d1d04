"""sentence-transformers' side of the embeddings bench; runs in its own venv (torch, CPU).

``python bench/st_reference.py MODEL_DIR SENTENCES_JSON OUT_NPY BATCH...`` prints one JSON
line: {"version": ..., "torch": ..., "threads": ..., "rates": {batch: sentences per second, and
"64/call": batch 64 with one encode call per 64 sentences}},
and saves the batch-64 vectors to OUT_NPY so the caller can compare them with ours.
Not imported by the bench package (it needs torch, which our venv never has).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model_dir, sentences_path, out_path, *batches = sys.argv[1:]
    sentences = json.loads(open(sentences_path, encoding="utf-8").read())
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(sentences[:64], batch_size=64)  # warm-up
    rates: dict[str, float] = {}
    vectors = None
    for batch in map(int, batches):
        count = len(sentences) if batch > 1 else min(len(sentences), 256)
        started = time.perf_counter()
        result = model.encode(sentences[:count], batch_size=batch, convert_to_numpy=True)
        rates[str(batch)] = count / (time.perf_counter() - started)
        if count == len(sentences):
            vectors = result
    # As a server sees them: one encode call per 64 sentences, sorted within the call only
    # (encode sorts its whole input by length before cutting batches).
    started = time.perf_counter()
    for i in range(0, len(sentences), 64):
        model.encode(sentences[i:i + 64], batch_size=64, convert_to_numpy=True)
    rates["64/call"] = len(sentences) / (time.perf_counter() - started)
    if vectors is not None:
        np.save(out_path, vectors.astype(np.float32))
    print(json.dumps({"version": sentence_transformers.__version__, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "rates": rates}))


if __name__ == "__main__":
    main()
