"""How many CPU threads a run uses when ``train.num_threads`` is unset, and when a run is likely oversubscribed.

Torch's default (one thread per core) splits every operation across the cores. For the small models of most runs
here (an MLP step of a few 10^7 multiply-adds) the split costs more than it saves, and on a machine that other jobs
keep busy every split operation waits for a descheduled sibling thread: on the loaded 2-core machine of
``docs/performance.md`` the README main job's longest run took 6.2x longer with two threads than with one (15x per
epoch with one more busy process), at identical scores. So the default is one thread unless a training step is large
enough to gain from more (:data:`SPLIT_WORTH_MACS`) *and* the cores are free (the 1-minute load average leaves at
least two idle), then as many threads as there are idle cores.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

# below this many multiply-adds per step (parameters x batch size) a run keeps one thread even on idle cores: a step
# then lasts under ~0.1 s on one thread (docs/performance.md, "CPU threads"; on busy cores one thread won at every
# size measured, 4e6-1.1e9, which the idle-core condition covers). Every built-in model at its default size is
# below it (the README main job: 3.1e5 parameters x 128 = 4e7; cub: 5.4e5 x 128 = 7e7).
SPLIT_WORTH_MACS = 5e8


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count of a run and why (a sentence for logs)."""

    threads: int
    reason: str


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def current_load() -> float:
    """The 1-minute load average (runnable processes), 0 where the system does not report it."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def choose_threads(n_params: int, batch_size: int, cores: int | None = None, load: float | None = None) -> ThreadChoice:
    """The default thread count of a run of a model with ``n_params`` trainable parameters at ``batch_size``.

    Args:
        n_params: trainable parameters (the multiply-adds of a step scale with ``n_params * batch_size``).
        batch_size: samples per training step.
        cores: cores available (default :func:`available_cores`).
        load: the machine's load average (default :func:`current_load`).
    """
    cores = available_cores() if cores is None else cores
    load = current_load() if load is None else load
    macs = float(n_params) * float(batch_size)
    if cores <= 1:
        return ThreadChoice(1, "one core available")
    if macs < SPLIT_WORTH_MACS:
        return ThreadChoice(1, f"a step of ~{macs:.1e} multiply-adds is too small to split across threads")
    idle = math.floor(cores - load)
    if idle < 2:
        return ThreadChoice(1, f"the machine is busy (load {load:.1f} on {cores} cores)")
    return ThreadChoice(min(cores, idle), f"a step of ~{macs:.1e} multiply-adds on {idle} idle of {cores} cores")


def oversubscription(threads: int, cores: int | None = None, load: float | None = None) -> str | None:
    """A warning when ``threads`` threads are likely oversubscribed: more than one thread while fewer cores than
    that are idle (other jobs hold them), so every split operation waits for a descheduled thread; else ``None``."""
    cores = available_cores() if cores is None else cores
    load = current_load() if load is None else load
    idle = cores - load
    if threads <= 1 or threads <= idle:
        return None
    return (
        f"{threads} CPU threads with {max(idle, 0.0):.1f} of {cores} cores idle (load average {load:.1f}): the run is "
        "likely oversubscribed and may be several times slower; set train.num_threads=1 (or leave it unset)"
    )
