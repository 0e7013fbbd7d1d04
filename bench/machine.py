"""What the bench ran on, for the report's header: figures mean little without the machine.

The card and its driver (``nvidia-smi`` where there is one), the CPU model and cores, memory,
the MLX device and the versions of what is compared, and how busy the machine was at start.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess


def load_line() -> str:
    """The 1-minute load average before the bench starts: other work skews every number."""
    load = os.getloadavg()[0]
    busy = load > 0.5 * (os.cpu_count() or 1)
    warning = "; the machine was already busy, so numbers may be low and noisy" if busy else ""
    return f"load average (1 min) at start: {load:.2f}{warning}"


def _command(argv: list[str]) -> str:
    """A command's stdout, stripped; empty when it is missing or fails."""
    if not shutil.which(argv[0]):
        return ""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def gpu_lines() -> list[str]:
    """One line per NVIDIA card: name, driver, memory, and the CUDA version the driver takes."""
    cards = _command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                      "--format=csv,noheader"])
    if not cards:
        return []
    found = re.search(r"CUDA Version:\s*([\d.]+)", _command(["nvidia-smi"]))
    cuda = f", driver's CUDA {found.group(1)}" if found else ""
    lines = []
    for i, card in enumerate(cards.splitlines()):
        name, driver, memory = (part.strip() for part in (card.split(",") + ["?", "?"])[:3])
        lines.append(f"GPU {i}: {name}, driver {driver}{cuda}, {memory}")
    return lines


def cpu_model() -> str:
    if platform.system() == "Darwin":
        return _command(["sysctl", "-n", "machdep.cpu.brand_string"]) or platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cores() -> str:
    """Logical cores, and how many of them this process may use where that differs."""
    total = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    return f"{total} cores" + (f" ({usable} usable here)" if usable != total else "")


def memory() -> str:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    found = _command(["sysctl", "-n", "hw.memsize"])
    return f"{int(found) / 2**30:.0f} GiB RAM" if found.isdigit() else "RAM unknown"


def version(package: str) -> str:
    import importlib.metadata as metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_lines() -> list[str]:
    """Platform, CPU, cards, MLX device and the versions that matter."""
    import mlx.core as mx

    info = mx.device_info() if hasattr(mx, "device_info") else {}
    name = info.get("device_name") or info.get("architecture") or "?"
    return [
        f"machine: {platform.platform()}, {cpu_model()}, {cores()}, {memory()}, "
        f"Python {platform.python_version()}",
        *gpu_lines(),
        f"MLX {mx.__version__}, device {mx.default_device()} ({name}); "
        f"mlx-lm {version('mlx-lm')}; openai SDK {version('openai')}",
    ]
