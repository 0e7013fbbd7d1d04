"""System-wide RAM, as Triton's ``nv_cpu_memory_*_bytes`` gauges report it."""

from __future__ import annotations

import os


def total_bytes() -> float:
    """Physical memory of the machine."""
    return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def used_bytes() -> float:
    """``MemTotal - MemAvailable`` from ``/proc/meminfo``, as Triton computes it.

    Raises ``OSError`` where there is no ``/proc`` (macOS); the gauge is then left out of the
    scrape rather than reporting a made-up number.
    """
    fields: dict[str, int] = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            name, _, rest = line.partition(":")
            value = rest.split()
            if value:
                fields[name] = int(value[0]) * 1024
    return float(fields["MemTotal"] - fields["MemAvailable"])
