"""Two ranks, tensor parallel, over MLX's ring backend on loopback: the engine's generator steps
the same batch on each rank's shard and every rank gets exactly the tokens one process gets
(issue 15's premise: ranks in lockstep need only the same inserts in the same order)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.distributed.launch import ROOT, run_ranks
from tests.tiny_model import build_tiny_model

WORKER = "tests/distributed/engine_ranks.py"


def test_two_tensor_parallel_ranks_generate_what_one_process_does(tmp_path):
    model = build_tiny_model(tmp_path / "tiny")
    alone = subprocess.run([sys.executable, WORKER, str(model)], cwd=ROOT, capture_output=True,
                           text=True, timeout=300, check=True)
    (single,) = [line for line in alone.stdout.splitlines() if line.startswith("{")]
    ranks = run_ranks([WORKER, str(model)])
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["size"] == 2 for r in ranks)
    expected = json.loads(single)
    for rank in ranks:
        assert rank["tokens"] == expected["tokens"]  # greedy and seeded rows alike
        assert rank["top"] == expected["top"]  # logprob alternatives too
    assert [len(t) for t in expected["tokens"]] == [12, 16, 20]
