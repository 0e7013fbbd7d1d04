import math
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from triton_mlx.observability.metrics import (
    CONTENT_TYPE,
    DEFAULT_BUCKETS,
    TOKEN_LATENCY_BUCKETS,
    Registry,
)


def parse(registry: Registry) -> dict:
    text = registry.render()
    assert text.endswith("\n")
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def test_content_type_and_buckets():
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    for buckets in (DEFAULT_BUCKETS, TOKEN_LATENCY_BUCKETS):
        assert list(buckets) == sorted(set(buckets))
    assert DEFAULT_BUCKETS[0] == 0.005 and DEFAULT_BUCKETS[-1] == 60
    assert TOKEN_LATENCY_BUCKETS[0] == 0.001 and TOKEN_LATENCY_BUCKETS[-1] == 2.5


def test_families_in_registration_order():
    registry = Registry()
    registry.gauge("b_gauge", "B.")
    registry.counter("a_requests", "A.")
    registry.histogram("c_latency_seconds", "C.")
    assert list(parse(registry)) == ["b_gauge", "a_requests", "c_latency_seconds"]


def test_counter_total_suffix():
    registry = Registry()
    plain = registry.counter("requests", "Requests.")
    suffixed = registry.counter("tokens_total", "Tokens.")
    plain.inc()
    suffixed.inc(2.5)
    text = registry.render()
    # Format 0.0.4 names HELP, TYPE and the sample alike (the parser strips _total from the family).
    assert (
        "# HELP requests_total Requests.\n# TYPE requests_total counter\nrequests_total 1\n" in text
    )
    assert "# TYPE tokens_total counter\ntokens_total 2.5\n" in text
    assert "total_total" not in text
    families = parse(registry)
    assert list(families) == ["requests", "tokens"]
    assert families["requests"].type == "counter"
    assert families["requests"].documentation == "Requests."
    assert samples(families["requests"]) == {("requests_total", ()): 1.0}
    assert samples(families["tokens"]) == {("tokens_total", ()): 2.5}


def test_unlabelled_metrics_start_at_zero_and_labelled_ones_empty():
    registry = Registry()
    registry.counter("c", "C.")
    registry.gauge("g", "G.")
    registry.histogram("h", "H.", buckets=[1])
    registry.counter("lc", "LC.", ["model"])
    registry.histogram("lh", "LH.", ["model"])
    families = parse(registry)
    assert samples(families["c"]) == {("c_total", ()): 0}
    assert samples(families["g"]) == {("g", ()): 0}
    assert samples(families["h"])[("h_count", ())] == 0
    assert families["lc"].samples == [] and families["lh"].samples == []
    text = registry.render()
    assert "# HELP lc_total LC.\n# TYPE lc_total counter\n# HELP lh" in text


def test_labelled_counter_and_child():
    registry = Registry()
    counter = registry.counter("requests", "Requests.", ["model", "status"])
    counter.inc(model="llama", status=200)
    counter.inc(3, model="llama", status="200")
    child = counter.labels(model="qwen", status="500")
    child.inc()
    child.inc(0.5)
    counter.labels(model="idle", status="200")
    assert samples(parse(registry)["requests"]) == {
        ("requests_total", (("model", "llama"), ("status", "200"))): 4,
        ("requests_total", (("model", "qwen"), ("status", "500"))): 1.5,
        ("requests_total", (("model", "idle"), ("status", "200"))): 0,
    }


def test_tricky_label_values_and_help_are_escaped():
    registry = Registry()
    tricky = 'back\\slash "quoted"\nnew line'
    gauge = registry.gauge("g", 'Help with \\ and\nnewline and "quotes".', ["v"])
    gauge.set(1, v=tricky)
    text = registry.render()
    assert '# HELP g Help with \\\\ and\\nnewline and "quotes".\n' in text
    assert 'g{v="back\\\\slash \\"quoted\\"\\nnew line"} 1\n' in text
    family = parse(registry)["g"]
    assert family.documentation == 'Help with \\ and\nnewline and "quotes".'
    assert family.samples[0].labels == {"v": tricky}


def test_gauge_set_inc_dec():
    registry = Registry()
    gauge = registry.gauge("inflight", "In flight.", ["model"])
    gauge.inc(model="m")
    gauge.inc(2, model="m")
    gauge.dec(model="m")
    gauge.set(7.25, model="other")
    child = gauge.labels(model="child")
    child.set(5)
    child.dec(0.5)
    child.inc()
    assert samples(parse(registry)["inflight"]) == {
        ("inflight", (("model", "m"),)): 2,
        ("inflight", (("model", "other"),)): 7.25,
        ("inflight", (("model", "child"),)): 5.5,
    }


def test_special_float_values():
    registry = Registry()
    gauge = registry.gauge("g", "G.", ["k"])
    gauge.set(math.inf, k="pos")
    gauge.set(-math.inf, k="neg")
    gauge.set(math.nan, k="nan")
    gauge.set(1e-7, k="small")
    text = registry.render()
    assert 'g{k="pos"} +Inf\n' in text
    assert 'g{k="neg"} -Inf\n' in text
    assert 'g{k="nan"} NaN\n' in text
    values = {s.labels["k"]: s.value for s in parse(registry)["g"].samples}
    assert values["pos"] == math.inf and values["neg"] == -math.inf
    assert math.isnan(values["nan"]) and values["small"] == 1e-7


def test_set_function_scalar_and_mapping():
    registry = Registry()
    scalar = registry.gauge("queue_depth", "Queue depth.")
    depth = [3]
    scalar.set_function(lambda: depth[0])
    per_model = registry.gauge("kv_blocks", "KV blocks.", ["model", "state"])
    per_model.set_function(lambda: {("a", "used"): 10, ("b", "free"): 2.5})
    families = parse(registry)
    assert samples(families["queue_depth"]) == {("queue_depth", ()): 3}
    assert samples(families["kv_blocks"]) == {
        ("kv_blocks", (("model", "a"), ("state", "used"))): 10,
        ("kv_blocks", (("model", "b"), ("state", "free"))): 2.5,
    }
    depth[0] = 9  # computed at render time, not at registration
    assert samples(parse(registry)["queue_depth"]) == {("queue_depth", ()): 9}


def test_failing_set_function_does_not_break_render(caplog):
    registry = Registry()
    registry.counter("before", "Before.").inc()
    broken = registry.gauge("broken", "Broken.")
    broken.set_function(lambda: 1 / 0)
    wrong_arity = registry.gauge("wrong_arity", "Wrong arity.", ["a", "b"])
    wrong_arity.set_function(lambda: {("only-one",): 1})
    registry.gauge("after", "After.").set(4)
    with caplog.at_level("DEBUG", logger="triton_mlx.observability.metrics"):
        families = parse(registry)
    assert families["broken"].samples == [] and families["wrong_arity"].samples == []
    assert samples(families["after"]) == {("after", ()): 4}
    assert samples(families["before"]) == {("before_total", ()): 1}
    failures = [r for r in caplog.records if "set_function failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.levelname == "DEBUG" for r in failures)
    assert failures[0].exc_info is not None


def test_histogram_buckets_are_cumulative():
    registry = Registry()
    histogram = registry.histogram("latency_seconds", "Latency.", ["model"], buckets=[0.1, 1, 10])
    for value in (0.05, 0.1, 0.5, 2, 20, 30):
        histogram.observe(value, model="m")
    histogram.labels(model="child").observe(1)
    family = parse(registry)["latency_seconds"]
    assert family.type == "histogram"
    got = samples(family)

    def bucket(model, le):
        return got[("latency_seconds_bucket", (("le", le), ("model", model)))]

    assert [bucket("m", le) for le in ("0.1", "1.0", "10.0", "+Inf")] == [2, 3, 4, 6]
    assert got[("latency_seconds_count", (("model", "m"),))] == 6
    assert got[("latency_seconds_sum", (("model", "m"),))] == pytest.approx(52.65)
    assert [bucket("child", le) for le in ("0.1", "1.0", "10.0", "+Inf")] == [0, 1, 1, 1]
    text = registry.render()
    assert 'latency_seconds_bucket{model="m",le="+Inf"} 6\n' in text
    assert 'latency_seconds_bucket{model="m",le="0.1"} 2\n' in text


def test_histogram_default_buckets_and_inf_equals_count():
    registry = Registry()
    histogram = registry.histogram("h", "H.")
    for i in range(100):
        histogram.observe(i / 10)
    got = samples(parse(registry)["h"])
    buckets = [v for (name, _), v in got.items() if name == "h_bucket"]
    assert len(buckets) == len(DEFAULT_BUCKETS) + 1
    assert buckets == sorted(buckets)
    assert buckets[-1] == got[("h_count", ())] == 100


def test_explicit_inf_bucket_is_not_duplicated():
    registry = Registry()
    registry.histogram("h", "H.", buckets=[1, math.inf]).observe(5)
    assert registry.render().count('le="+Inf"') == 1


def test_negative_counter_increment_rejected():
    counter = Registry().counter("c", "C.", ["k"])
    with pytest.raises(ValueError):
        counter.inc(-1, k="v")
    with pytest.raises(ValueError):
        counter.labels(k="v").inc(-0.1)


@pytest.mark.parametrize("name", ["", "1abc", "has-dash", "has space", "é"])
def test_bad_metric_names_rejected(name):
    with pytest.raises(ValueError):
        Registry().gauge(name, "Bad.")


@pytest.mark.parametrize("label", ["", "1abc", "a:b", "__reserved", "has-dash"])
def test_bad_label_names_rejected(label):
    with pytest.raises(ValueError):
        Registry().counter("c", "C.", [label])


def test_label_names_clashing_with_parameters_rejected():
    registry = Registry()
    with pytest.raises(ValueError):
        registry.histogram("h", "H.", ["le"])
    with pytest.raises(ValueError):
        registry.counter("c", "C.", ["amount"])
    with pytest.raises(ValueError):
        registry.gauge("g", "G.", ["value"])
    with pytest.raises(ValueError):
        registry.gauge("g", "G.", ["a", "a"])


def test_duplicate_registration_rejected():
    registry = Registry()
    registry.counter("requests", "Requests.")
    with pytest.raises(ValueError):
        registry.gauge("requests", "Again.")
    with pytest.raises(ValueError):
        registry.counter("requests_total", "Same family.")
    with pytest.raises(ValueError):
        registry.gauge("requests_total", "Same sample name.")
    registry.histogram("latency", "Latency.")
    with pytest.raises(ValueError):
        registry.gauge("latency_count", "Clashes with the histogram's count.")
    assert list(parse(registry)) == ["requests", "latency"]


def test_bad_buckets_rejected():
    with pytest.raises(ValueError):
        Registry().histogram("h", "H.", buckets=[1, 1, 2])
    with pytest.raises(ValueError):
        Registry().histogram("h", "H.", buckets=[2, 1])


def test_wrong_labels_rejected():
    registry = Registry()
    counter = registry.counter("c", "C.", ["model"])
    gauge = registry.gauge("g", "G.")
    histogram = registry.histogram("h", "H.", ["model"])
    with pytest.raises(ValueError):
        counter.inc()
    with pytest.raises(ValueError):
        counter.inc(model="m", extra="x")
    with pytest.raises(ValueError):
        counter.labels(other="m")
    with pytest.raises(ValueError):
        gauge.set(1, model="m")
    with pytest.raises(ValueError):
        histogram.observe(1, modle="m")


def test_concurrent_updates_add_up_exactly():
    registry = Registry()
    counter = registry.counter("c", "C.", ["worker"])
    shared = registry.counter("shared", "Shared.")
    gauge = registry.gauge("g", "G.")
    histogram = registry.histogram("h", "H.", buckets=[0.5])
    threads, per_thread = 8, 5000
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        child = counter.labels(worker=str(n % 2))
        start.wait()
        for i in range(per_thread):
            child.inc()
            shared.inc()
            gauge.inc()
            histogram.observe(1)
            if i % 1000 == 0:
                registry.render()  # scrapes interleave with updates

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    families = parse(registry)
    total = threads * per_thread
    assert samples(families["c"]) == {
        ("c_total", (("worker", "0"),)): total / 2,
        ("c_total", (("worker", "1"),)): total / 2,
    }
    assert samples(families["shared"]) == {("shared_total", ()): total}
    assert samples(families["g"]) == {("g", ()): total}
    got = samples(families["h"])
    assert got[("h_count", ())] == got[("h_bucket", (("le", "+Inf"),))] == total
    assert got[("h_sum", ())] == total
