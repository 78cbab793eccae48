"""What the bench scripts ask the machine, asked so that the answer comes on Linux, macOS and Windows alike.

Each question that one of the systems cannot answer gets None (or '?' for the CPU's name), never an exception:
the benchmark then prints '-' where the number would be.
"""

import os
import platform
import subprocess
import sys

try:
    import resource  # Unix only: Windows has no getrusage
except ImportError:
    resource = None


def cpu_name() -> str:
    """The CPU's model name as the system gives it: /proc/cpuinfo on Linux, sysctl on macOS, else Python's guess."""
    try:
        if sys.platform.startswith("linux"):
            with open("/proc/cpuinfo") as f:  # x86 says "model name"; many ARM kernels say nothing of the kind
                names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
            if names:
                return names[0]
        if sys.platform == "darwin":
            asked = ["sysctl", "-n", "machdep.cpu.brand_string"]  # "Apple M2 Pro", "Intel(R) Core(TM) i7-..."
            name = subprocess.run(asked, capture_output=True, text=True, timeout=10).stdout.strip()
            if name:
                return name
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "?"


def rss_bytes(ru_maxrss: int) -> int:
    """getrusage's ru_maxrss in bytes: macOS counts it in bytes, Linux (and the BSDs) in KiB."""
    return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far; None on Windows, which has no resource module."""
    if resource is None:
        return None
    return rss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def load_average() -> float | None:
    """Runnable processes averaged over the last minute; None on Windows, which does not keep one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
