"""Benchmarks: commands that print a table and write JSON under benchmarks/results/."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any


def checkout_commit() -> str:
    """The checkout's commit, with "+dirty" where tracked files differ from it. Read when a run starts: the code
    that runs is the code loaded then, whatever is committed while it runs."""
    here = Path(__file__).parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], capture_output=True, cwd=here).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty == 1 else head


def machine() -> dict[str, Any]:
    """What a timing was measured on: the CPU's model name, its cores, and the widest instruction set torch uses.
    Two machines of one name can still differ in speed (shared hosts): compare timings measured on one machine."""
    import torch

    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
