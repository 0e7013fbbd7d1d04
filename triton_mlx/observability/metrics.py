"""Prometheus metrics without a prometheus_client dependency.

A small, thread-safe registry that renders the text exposition format 0.0.4.
Metrics are updated from the engine thread and the asyncio thread, so every
metric guards its samples with its own lock; rendering copies under the lock
and formats outside it.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import pairwise
from typing import TypeVar

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "TOKEN_LATENCY_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
]

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Whole-request latency in seconds: from a cached short completion to a long generation.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
)  # fmt: skip
# Per-token latency in seconds: dense around the 10-100 ms where decode steps land.
TOKEN_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Key = tuple[str, ...]


def _format_value(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class _Metric(ABC):
    type: str
    # Label names that would shadow a keyword parameter of the update methods.
    _reserved: frozenset[str] = frozenset()

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        labelnames = tuple(labelnames)
        for label in labelnames:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} for metric {name!r}")
            if label in self._reserved:
                raise ValueError(f"label name {label!r} is reserved for a {self.type}")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"duplicate label names for metric {name!r}: {labelnames}")
        self.name = name
        self.help = help
        self.labelnames = labelnames
        self._labelset = frozenset(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, object]) -> Key:
        if labels.keys() != self._labelset:
            raise ValueError(
                f"metric {self.name!r} takes labels {sorted(self._labelset)}, got {sorted(labels)}"
            )
        if not labels:
            return ()
        return tuple(str(labels[n]) for n in self.labelnames)

    def _exposed_names(self) -> set[str]:
        """Names this family claims; Prometheus clients treat a clash as a duplicate."""
        return {self.name}

    def _render(self) -> Iterator[str]:
        escaped_help = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        yield f"# HELP {self.name} {escaped_help}"
        yield f"# TYPE {self.name} {self.type}"
        yield from self._samples()

    @abstractmethod
    def _samples(self) -> Iterator[str]:
        """The sample lines of this family (each metric type has its own)."""


class CounterChild:
    """A counter bound to one label-value tuple, so the hot path skips label checks."""

    __slots__ = ("_metric", "_key")

    def __init__(self, metric: Counter, key: Key) -> None:
        self._metric = metric
        self._key = key

    def inc(self, amount: float = 1.0) -> None:
        self._metric._inc(self._key, amount)


class Counter(_Metric):
    """A monotonically increasing value, exposed as ``<name>_total``."""

    type = "counter"
    _reserved = frozenset({"amount"})

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), *, total_suffix: bool = True
    ) -> None:
        # In format 0.0.4 HELP, TYPE and samples share one name, the suffixed one
        # (OpenMetrics would put the bare name on TYPE; that is a different format).
        # ``total_suffix=False`` keeps the name as given, for families whose established
        # name has no suffix (Triton's ``nv_inference_request_success``, ...).
        super().__init__(name, help, labelnames)
        if total_suffix and not name.endswith("_total"):
            self.name = name + "_total"
        self._values: dict[Key, float] = {} if self.labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        self._inc(self._key(labels), amount)

    def labels(self, **labels: object) -> CounterChild:
        """Bind label values; the series is exposed (at 0) from now on."""
        key = self._key(labels)
        with self._lock:
            self._values.setdefault(key, 0.0)
        return CounterChild(self, key)

    def _exposed_names(self) -> set[str]:
        return {self.name, self.name.removesuffix("_total")}

    def _inc(self, key: Key, amount: float) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name!r} cannot decrease (got {amount})")
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def _samples(self) -> Iterator[str]:
        with self._lock:
            items = list(self._values.items())
        for key, value in items:
            labels = _format_labels(self.labelnames, key)
            yield f"{self.name}{labels} {_format_value(value)}"


class GaugeChild:
    """A gauge bound to one label-value tuple."""

    __slots__ = ("_metric", "_key")

    def __init__(self, metric: Gauge, key: Key) -> None:
        self._metric = metric
        self._key = key

    def set(self, value: float) -> None:
        self._metric._set(self._key, value)

    def inc(self, amount: float = 1.0) -> None:
        self._metric._add(self._key, amount)

    def dec(self, amount: float = 1.0) -> None:
        self._metric._add(self._key, -amount)


GaugeFunction = Callable[[], float] | Callable[[], Mapping[Key, float]]


class Gauge(_Metric):
    """A value that goes up and down, or is computed at render time."""

    type = "gauge"
    _reserved = frozenset({"value", "amount"})

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[Key, float] = {} if self.labelnames else {(): 0.0}
        self._function: GaugeFunction | None = None

    def set(self, value: float, **labels: object) -> None:
        self._set(self._key(labels), value)

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        self._add(self._key(labels), amount)

    def dec(self, amount: float = 1.0, **labels: object) -> None:
        self._add(self._key(labels), -amount)

    def labels(self, **labels: object) -> GaugeChild:
        key = self._key(labels)
        with self._lock:
            self._values.setdefault(key, 0.0)
        return GaugeChild(self, key)

    def set_function(self, fn: GaugeFunction) -> None:
        """Compute the gauge at render time instead of from stored values.

        ``fn`` returns a float, or for a labelled gauge a mapping from
        label-value tuples to floats (one sample each). A failing ``fn`` only
        drops this gauge's samples from the scrape.
        """
        self._function = fn

    def _set(self, key: Key, value: float) -> None:
        with self._lock:
            self._values[key] = float(value)

    def _add(self, key: Key, amount: float) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def _current(self) -> list[tuple[Key, float]]:
        if self._function is None:
            with self._lock:
                return list(self._values.items())
        try:
            result = self._function()
            if isinstance(result, Mapping):
                items = [(tuple(map(str, k)), float(v)) for k, v in result.items()]
            else:
                items = [((), float(result))]
            for key, _ in items:
                if len(key) != len(self.labelnames):
                    raise ValueError(f"label values {key} do not match {self.labelnames}")
        except Exception:
            logger.debug("gauge %s: set_function failed, sample skipped", self.name, exc_info=True)
            return []
        return items

    def _samples(self) -> Iterator[str]:
        for key, value in self._current():
            labels = _format_labels(self.labelnames, key)
            yield f"{self.name}{labels} {_format_value(value)}"


class _HistogramSeries:
    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket, not cumulative; the count is their total
        self.sum = 0.0


class HistogramChild:
    """A histogram bound to one label-value tuple."""

    __slots__ = ("_metric", "_key")

    def __init__(self, metric: Histogram, key: Key) -> None:
        self._metric = metric
        self._key = key

    def observe(self, value: float) -> None:
        self._metric._observe(self._key, value)


class Histogram(_Metric):
    """Observations counted into cumulative ``le`` buckets, plus their sum and count."""

    type = "histogram"
    _reserved = frozenset({"value", "le"})

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help, labelnames)
        bounds = [float(b) for b in buckets]
        if any(a >= b for a, b in pairwise(bounds)):
            raise ValueError(f"histogram {name!r}: buckets must be strictly increasing")
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = bounds
        # Floats as Prometheus 3 normalises ``le`` ("1.0", not "1"), so series stay stable.
        self._le = ["+Inf" if b == math.inf else repr(b) for b in bounds]
        self._series: dict[Key, _HistogramSeries] = (
            {} if self.labelnames else {(): _HistogramSeries(len(bounds))}
        )

    def observe(self, value: float, **labels: object) -> None:
        self._observe(self._key(labels), value)

    def labels(self, **labels: object) -> HistogramChild:
        key = self._key(labels)
        with self._lock:
            if key not in self._series:
                self._series[key] = _HistogramSeries(len(self._bounds))
        return HistogramChild(self, key)

    def _exposed_names(self) -> set[str]:
        return {self.name + suffix for suffix in ("", "_bucket", "_sum", "_count")}

    def _observe(self, key: Key, value: float) -> None:
        index = bisect.bisect_left(self._bounds, value)  # first bucket with value <= le
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _HistogramSeries(len(self._bounds))
            series.counts[index] += 1
            series.sum += value

    def _samples(self) -> Iterator[str]:
        with self._lock:
            items = [(key, list(s.counts), s.sum) for key, s in self._series.items()]
        bucket_names = (*self.labelnames, "le")
        for key, counts, total in items:
            cumulative = 0
            for le, count in zip(self._le, counts, strict=True):
                cumulative += count
                yield f"{self.name}_bucket{_format_labels(bucket_names, (*key, le))} {cumulative}"
            labels = _format_labels(self.labelnames, key)
            yield f"{self.name}_sum{labels} {_format_value(total)}"
            yield f"{self.name}_count{labels} {cumulative}"


M = TypeVar("M", bound=_Metric)


class Registry:
    """A set of metric families, rendered in registration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: list[_Metric] = []
        self._names: set[str] = set()

    def counter(
        self, name: str, help: str, labelnames: Sequence[str] = (), *, total_suffix: bool = True
    ) -> Counter:
        return self._register(Counter(name, help, labelnames, total_suffix=total_suffix))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._register(Gauge(name, help, labelnames))

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        return self._register(Histogram(name, help, labelnames, buckets))

    def render(self) -> str:
        """The exposition text for a scrape, served with ``CONTENT_TYPE``."""
        with self._lock:
            metrics = list(self._metrics)
        return "".join(line + "\n" for metric in metrics for line in metric._render())

    def _register(self, metric: M) -> M:
        names = metric._exposed_names()
        with self._lock:
            if clash := names & self._names:
                raise ValueError(f"metric name(s) {sorted(clash)} already registered")
            self._names |= names
            self._metrics.append(metric)
        return metric
