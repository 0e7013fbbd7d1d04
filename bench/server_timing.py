"""Where our server's time to first token went during one case, from its own metrics.

Before and after a case the bench reads our server's ``/v1/metrics`` and takes the difference
of three histograms' sums and counts: the wait for a batch slot
(``triton_mlx_request_queue_seconds``), the prefill up to the first text
(``triton_mlx_request_prefill_seconds``) and the whole time to first token from submission
(``triton_mlx_time_to_first_token_seconds``). The client's TTFT less the server's is what the
request spent before the engine saw it: the client, the connection, parsing, the chat template
and tokenization on the event loop. Means, in milliseconds, over the case's requests.
"""

from __future__ import annotations

import urllib.request

FAMILIES = {
    "queue_ms": "triton_mlx_request_queue_seconds",
    "prefill_ms": "triton_mlx_request_prefill_seconds",
    "server_ttft_ms": "triton_mlx_time_to_first_token_seconds",
}


def scrape(base_url: str, timeout: float = 10.0) -> dict[str, tuple[float, float]]:
    """(sum, count) of each family in ``FAMILIES``, summed over models; {} if unreadable."""
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return {}
    totals: dict[str, list[float]] = {}
    for line in text.splitlines():
        for key, family in FAMILIES.items():
            for suffix, slot in (("_sum", 0), ("_count", 1)):
                if line.startswith(family + suffix):
                    totals.setdefault(key, [0.0, 0.0])[slot] += float(line.rsplit(" ", 1)[1])
    return {key: (v[0], v[1]) for key, v in totals.items()}


def mean_parts(before: dict[str, tuple[float, float]],
               after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean milliseconds per request of each family between two scrapes (a family is left out
    when no request was observed between them)."""
    parts = {}
    for key in FAMILIES:
        if key in after:  # a family with no series yet before the case counts from zero
            start = before.get(key, (0.0, 0.0))
            count = after[key][1] - start[1]
            if count > 0:
                parts[key] = 1000 * (after[key][0] - start[0]) / count
    return parts
