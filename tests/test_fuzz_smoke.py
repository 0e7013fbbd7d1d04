"""A short run of the request fuzzer (``fuzz/fuzz_requests.py``), as CI's smoke test.

The fuzzer feeds raw bytes through our HTTP server into both front-ends and fails on any
unhandled exception, any 500, or a malformed response. ``FUZZ_SECONDS`` sets the run's length
(default 20); run with ``-s`` to see how many inputs it executed.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def executions(output: str) -> int | None:
    """libFuzzer's count of executed inputs: its "Done N runs" line, else the last "#N" stat."""
    done = re.search(r"^Done (\d+) runs in", output, re.MULTILINE)
    if done:
        return int(done.group(1))
    stats = re.findall(r"^#(\d+)\s", output, re.MULTILINE)
    return int(stats[-1]) if stats else None


def test_request_fuzzer_runs_clean_for_a_while(tmp_path):
    seconds = int(os.environ.get("FUZZ_SECONDS", "20"))
    env = {**os.environ, "FUZZ_WORK_DIR": str(tmp_path)}
    # libFuzzer reads its peak RSS from getrusage, which a child inherits from its parent at
    # fork: this test process's own peak (models loaded by earlier tests) would count as the
    # fuzzer's. So the limit is libFuzzer's default 2 GB above what it starts with.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.fuzz_requests", f"-max_total_time={seconds}",
         "-print_final_stats=1", f"-rss_limit_mb={inherited_mb + 2048}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 300,
    )
    output = proc.stdout + proc.stderr
    tail = "\n".join(line for line in output.splitlines()
                     if not line.startswith("INFO: Instrumenting"))[-6000:]
    assert proc.returncode == 0, f"the fuzzer found a failure (exit {proc.returncode}):\n{tail}"
    runs = executions(output)
    assert runs is not None, f"no execution count in the fuzzer's output:\n{tail}"
    seeds = re.search(r"seed corpus: files: (\d+)", output)
    assert seeds, f"the fuzzer did not read its seed corpus:\n{tail}"
    corpus = len(list((tmp_path / "corpus").iterdir()))
    print(f"\nfuzz_requests: {runs} executions in {seconds} s "
          f"({seeds.group(1)} seeds, {corpus} corpus entries after)")
    assert runs >= int(seeds.group(1)) > 0  # every seed ran, at least
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
