"""The bench's summaries: medians with their spread, per-round ratios, and the target verdicts."""

from __future__ import annotations

import math

from bench.clients import CaseResult, Part, StreamResult, client_processes, merge
from bench.results import GENERATE_STEP, OURS, PEER, RAW, Measure, Run
from bench.stats import cross_ratio, paired_ratios, ratio_summary, show, show_ratio, spread
from bench.targets import evaluate


def test_spread_is_the_median_and_range_of_the_numbers_only() -> None:
    s = spread([3.0, None, 1.0, math.nan, 2.0, 10.0])
    assert (s.median, s.low, s.high, s.n) == (2.5, 1.0, 10.0, 4)
    assert spread([None, math.nan]) is None
    assert show(spread([1.0, 2.0, 4.0])) == "2.0 (1.0-4.0)"


def test_ratios_pair_rounds_and_skip_failed_ones() -> None:
    assert paired_ratios([2.0, None, 9.0, 4.0], [1.0, 5.0, 0.0, 8.0]) == [2.0, 0.5]
    r = ratio_summary([2.0, 4.0, 6.0], [1.0, 4.0, 2.0])
    assert r.rounds.median == 2.0 and (r.rounds.low, r.rounds.high) == (1.0, 3.0)
    assert r.of_medians == 4.0 / 2.0
    assert show_ratio(r) == "2.00x (1.00x-3.00x); of medians 2.00x"


def test_cross_ratio_spans_the_extremes() -> None:
    r = cross_ratio([12.0, 15.0, 13.0], [10.0, 8.0, 10.0])
    assert r.of_medians == 1.3
    assert (r.rounds.low, r.rounds.high) == (1.2, 15.0 / 8.0)


def _stream(start: float, tokens: int) -> StreamResult:
    return StreamResult(start, start + 0.1, start + 1.1, start + 1.2, tokens, tokens, True,
                        "length")


def test_merge_counts_failed_unfinished_and_lost_streams() -> None:
    parts = [Part(10.0, [_stream(10.0, 11)], failures=["ConnectionError()"]),
             Part(9.5, [_stream(9.6, 11)], unfinished=1)]
    case = merge("s", 5, 11, parts, 30)
    assert case.failed == 3  # one failure, one unfinished, one lost with its process
    assert case.elapsed == 11.2 - 9.5
    assert "timed out" in case.error and not case.ok
    clean = merge("s", 1, 11, [Part(10.0, [_stream(10.0, 11)])], 30)
    assert clean.ok and clean.failed == 0 and clean.decode_tps_sum == 10.0


def test_client_processes_split_from_64_streams_within_the_cap() -> None:
    assert client_processes(16, 32, cap=14) == 1
    assert client_processes(64, 32, cap=14) == 2
    assert client_processes(256, 32, cap=14) == 8
    assert client_processes(256, 32, cap=1) == 1


def _run(single: dict[str, list[float]], sweep: dict[int, dict[str, list[float]]],
         failed: int = 0) -> Run:
    run = Run("m", 32, sorted(sweep), {}, repeats=3, sweep_repeats=3)
    for system, rates in single.items():
        run.single[system] = [Measure(system, 1, i, {"decode_tps": r, "ttft_p50": 1 / r},
                                      requests=1) for i, r in enumerate(rates)]
    for streams, systems in sweep.items():
        for system, rates in systems.items():
            run.sweep.setdefault(streams, {})[system] = [
                Measure(system, streams, i, {"decode_tps": r, "output_tps": 0.85 * r},
                        requests=0 if system == RAW else streams) for i, r in enumerate(rates)]
    if failed:
        run.sweep[64][OURS][0].failed = failed
    return run


def test_targets_pass_and_fail_on_the_median_of_per_round_ratios() -> None:
    run = _run({GENERATE_STEP: [100, 100, 100], OURS: [96, 90, 99], PEER: [100, 95, 90]},
               {64: {OURS: [95, 80, 92], RAW: [100, 100, 100]},
                128: {OURS: [100, 120, 110]}})
    step, peer, ttft, decode64, output64, level128, failed = evaluate(run)
    assert (step.value, step.verdict, step.rounds_met) == (0.96, "PASS", "2/3")
    assert (peer.value, peer.verdict, peer.rounds_met) == (0.96, "FAIL", "1/3")
    assert ttft.verdict == "PASS" and math.isclose(ttft.value, 95 / 96)  # p50 over p50
    assert (decode64.value, decode64.verdict) == (0.92, "PASS")
    assert output64.verdict == "FAIL" and math.isclose(output64.value, 0.85 * 0.92)
    assert level128.verdict == "FAIL" and math.isclose(level128.value, 110 / 92)
    assert failed.verdict == "PASS" and failed.detail == "0 of 579"  # 3 + 3 x 64 + 3 x 128


def test_level_targets_appear_only_for_levels_that_ran() -> None:
    run = _run({}, {64: {OURS: [100.0], RAW: [100.0]}})
    labels = [t.label for t in evaluate(run)]
    assert not any(label.startswith(("128", "256")) for label in labels)
    both = _run({}, {64: {OURS: [100.0] * 3}, 128: {OURS: [140.0] * 3}, 256: {OURS: [149] * 3}})
    by_level = {t.label[:3]: t for t in evaluate(both)}
    assert by_level["128"].verdict == "PASS" and by_level["256"].verdict == "FAIL"


def test_failed_requests_fail_their_target() -> None:
    run = _run({}, {64: {OURS: [100.0] * 3, RAW: [100.0] * 3}}, failed=2)
    failed = evaluate(run)[-1]
    assert failed.verdict == "FAIL" and failed.detail == "2 of 192"
    assert evaluate(_run({}, {64: {OURS: [100.0] * 3}}))[-1].verdict == "PASS"
    assert all(t.verdict == "not measured" for t in evaluate(_run({}, {}))
               if t.label.startswith("1 stream"))


def test_a_failed_case_is_not_a_figure() -> None:
    case = CaseResult("s", 2, 8, streams=[_stream(0.0, 8)], error="1 streams failed: x",
                      failed=1)
    assert not case.ok
