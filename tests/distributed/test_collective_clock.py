"""``CollectiveClock`` times the collectives of one step in N and changes nothing else.

In one process ``mx.distributed.init()`` is a group of one whose all-sum and all-gather work:
a sampled step counts and times each call and returns what the unpatched call returns; an
unsampled step leaves the functions alone; a step that raises puts them back. On two ranks
(``mlx.launch``, ring over loopback; tensor parallel and pipeline) the engine's generator
stepped under a clock sampling every other step gives exactly the tokens one process gives,
and both ranks time the same number of collectives on the same steps.

Run as ``python -m tests.distributed.test_collective_clock MODEL_DIR KIND`` it is one rank of
that run (alone: the unsplit model, no clock).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading

import mlx.core as mx
import pytest

from triton_mlx.distributed.collective_clock import CollectiveClock

EVERY = 2  # on two ranks: sampled and unsampled steps alternate


def test_a_sampled_step_times_each_collective_and_returns_the_same_values():
    group = mx.distributed.init()
    values = mx.array([1.5, -2.0, 3.25])
    expected = (mx.distributed.all_sum(values, group=group).tolist(),
                mx.distributed.all_gather(values, group=group).tolist())
    original = mx.distributed.all_sum
    clock = CollectiveClock(every=4)
    with clock.step():
        assert mx.distributed.all_sum is not original  # timed while the step runs
        summed = mx.distributed.all_sum(values * 1, group=group)  # pending input: evaluated
        gathered = mx.distributed.all_gather(values, group=group)
        again = mx.distributed.all_sum(summed, group=group)
    assert (summed.tolist(), gathered.tolist()) == expected
    assert again.tolist() == expected[0]
    assert mx.distributed.all_sum is original
    assert clock.sampled_steps == 1 and clock.collectives == 3
    assert clock.collective_seconds > 0
    assert clock.step_seconds >= clock.collective_seconds


def test_only_every_nth_step_is_sampled_and_the_others_time_nothing():
    group = mx.distributed.init()
    original = mx.distributed.all_sum
    clock = CollectiveClock(every=3)
    patched = []
    for _ in range(7):  # steps 0, 3 and 6 are sampled
        with clock.step():
            patched.append(mx.distributed.all_sum is not original)
            mx.distributed.all_sum(mx.array([1.0]), group=group).item()
    assert patched == [True, False, False, True, False, False, True]
    assert clock.sampled_steps == 3 and clock.collectives == 3
    with clock.step():  # step 7: not sampled
        assert mx.distributed.all_sum is original
        mx.distributed.all_sum(mx.array([1.0]), group=group).item()
    assert clock.sampled_steps == 3 and clock.collectives == 3


def test_the_originals_are_back_when_a_sampled_step_raises():
    originals = {name: getattr(mx.distributed, name)
                 for name in ("all_sum", "all_gather", "send", "recv", "recv_like")}
    clock = CollectiveClock()
    with pytest.raises(RuntimeError, match="step failed"), clock.step():
        assert mx.distributed.all_gather is not originals["all_gather"]
        raise RuntimeError("step failed")
    assert {name: getattr(mx.distributed, name) for name in originals} == originals
    assert clock.sampled_steps == 1 and clock.collectives == 0
    with clock.step():  # the next step is not sampled and still runs
        assert mx.distributed.all_sum is originals["all_sum"]


def test_calls_from_another_thread_go_straight_through():
    group = mx.distributed.init()
    clock = CollectiveClock(every=1)
    results = []
    with clock.step():
        worker = threading.Thread(target=lambda: results.append(
            mx.distributed.all_sum(mx.array([2.0]), group=group).item()))
        worker.start()
        worker.join()
    assert results == [2.0]
    assert clock.sampled_steps == 1 and clock.collectives == 0


def test_sampling_less_than_every_step_needs_a_positive_interval():
    with pytest.raises(ValueError, match="at least 1"):
        CollectiveClock(every=0)


@pytest.mark.parametrize(("kind", "family"), [("tensor", "llama"), ("pipeline", "qwen2")])
def test_two_ranks_timed_every_other_step_generate_what_one_process_does(tmp_path, kind,
                                                                         family):
    from tests.distributed.launch import ROOT, run_ranks
    from tests.tiny_families import build_family_model

    model = build_family_model(tmp_path / "tiny", family)
    worker = ["-m", "tests.distributed.test_collective_clock", str(model), kind]
    alone = subprocess.run([sys.executable, *worker], cwd=ROOT, capture_output=True,
                           text=True, timeout=300, check=True)
    (single,) = [json.loads(line) for line in alone.stdout.splitlines() if line.startswith("{")]
    ranks = run_ranks(["--", *worker])
    assert [r["rank"] for r in ranks] == [0, 1] and single["size"] == 1
    assert [len(t) for t in single["tokens"]] == [12, 16]
    steps = single["steps"]
    for rank in ranks:
        assert rank["tokens"] == single["tokens"]
        assert rank["steps"] == steps and rank["sampled"] == -(-steps // EVERY)
        assert rank["collectives"] >= rank["sampled"] and rank["seconds"] > 0
    assert ranks[0]["collectives"] == ranks[1]["collectives"]


def rank_main(model_dir: str, kind: str) -> None:
    """One rank's run: two greedy requests, prefilled in chunks, stepped to the end."""
    from mlx_lm.utils import load

    from triton_mlx.engine import batch_generator
    from triton_mlx.engine.constraints import GrammarCache
    from triton_mlx.engine.types import GenerationRequest, SamplingParams

    group = mx.distributed.init()
    model, tokenizer = load(model_dir)
    if group.size() > 1:
        model.shard(group) if kind == "tensor" else model.model.pipeline(group)
    eos = list(tokenizer.eos_token_ids)
    generator = batch_generator.new_generator(model, eos, 4, 4,
                                              mx.default_stream(mx.default_device()))
    vocab = batch_generator.vocab_size(model)
    greedy = SamplingParams(temperature=0.0, logit_bias=dict.fromkeys(eos, -100.0))
    uids = [batch_generator.insert(generator, GenerationRequest(
        tokenizer.encode(text), max_tokens, greedy), None, 0, vocab, eos,
        GrammarCache(tokenizer, eos))[0]
        for text, max_tokens in [("Hello world, how are you", 12), ("def add(a, b):", 16)]]
    clock = CollectiveClock(every=EVERY)
    tokens: dict[int, list[int]] = {uid: [] for uid in uids}
    finished: set[int] = set()
    steps = 0
    while len(finished) < len(uids):
        with clock.step() if group.size() > 1 else contextlib.nullcontext():
            responses = generator.next()[1]
        steps += 1
        for response in responses:
            tokens[response.uid].append(response.token)
            if response.finish_reason is not None:
                finished.add(response.uid)
    print(json.dumps({"rank": group.rank(), "size": group.size(), "steps": steps,
                      "tokens": [tokens[u] for u in uids], "sampled": clock.sampled_steps,
                      "collectives": clock.collectives,
                      "seconds": clock.collective_seconds}), flush=True)


if __name__ == "__main__":
    rank_main(sys.argv[1], sys.argv[2])
