"""A run on several processes ends, on every process, when one of them stops: no rank waits for ever.

Three ways a rank can be left waiting in a collective (an all-reduce, a gather, a barrier) for a peer that will
never join it, and what ends each:

- **A peer died** (killed, out of memory, a crash): its connections close, the collective fails at once on the
  others, and :func:`collective_failure` turns that error into one line naming this rank and where it waited.
- **A peer hangs** (stopped, a deadlock, a dead machine whose connections stay open): the collective fails after
  ``train.ddp_timeout`` seconds (Lightning's ``DDPStrategy(timeout=...)``, passed to
  ``torch.distributed.init_process_group``), with the same line.
- **A signal** (SIGTERM from a scheduler or ``kill``, SIGINT from Ctrl-C): :class:`SignalGuard` answers it on every
  rank. Python runs a signal handler only between bytecodes, so a rank blocked inside a collective would not see it
  until the collective returned, and Lightning's own SIGTERM handler issues a ``broadcast`` from inside the handler,
  a collective that meets whatever collective the other ranks are in. The guard's handler issues no collective: it
  forwards the signal to the processes this one launched and raises ``KeyboardInterrupt`` (the run stops as after
  Ctrl-C; the processes still waiting in a collective on the others see this one's connections close). A watchdog
  thread reads the signal from ``signal.set_wakeup_fd`` (written by the C-level handler even while the main thread
  is blocked) and, when the process has not ended :data:`GRACE_SECONDS` after the signal, prints one line and
  ends it (and the processes it launched).

A run stopped any of these ways resumes with ``--resume`` from its last finished epoch (checkpoints are written
atomically), and gives the result of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from lightning.pytorch.callbacks import Callback

GRACE_SECONDS = 10.0
"""How long a process may take to stop by itself after SIGTERM or SIGINT before the watchdog ends it."""

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ProcessLostError(ConnectionError):
    """A process of a multi-process run stopped answering: one line naming this rank and where it waited."""


def where(state: dict[str, Any]) -> str:
    """``at epoch E, training batch B (global step S)`` (or ``validation``) from the position a
    :class:`SignalGuard` recorded."""
    if "epoch" not in state:
        return "before training started (while the processes met)"
    stage = state.get("stage") or "training"
    if stage == "epoch end":
        return f"at the end of epoch {state['epoch']} (its metrics and checkpoints; global step {state['step']})"
    return f"at epoch {state['epoch']}, {stage} batch {state['batch']} (global step {state['step']})"


def is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` is torch.distributed's error for a collective whose peer is gone or did not answer in time
    (gloo raises a plain ``RuntimeError`` naming its source file; NCCL a ``DistBackendError``)."""
    import torch.distributed as dist

    if isinstance(err, dist.DistError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        s in text
        for s in ("gloo/", "Connection closed by peer", "Connection reset by peer", "Timed out waiting", "NCCL")
    )


def collective_failure(err: BaseException, rank: int, world: int, state: dict[str, Any], timeout: float) -> str:
    """The one line for a failed collective: this rank, where it waited, and what to do."""
    text = str(err)
    if "timed out" in text.lower() or "timeout" in text.lower():
        why = f"another process did not answer within train.ddp_timeout={timeout:g} s (it hangs or is stopped)"
    else:
        why = "another process ended (its own message, if any, is above: killed, out of memory, crashed?)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return (
        f"rank {rank} of {world}: {why}; this rank was waiting for it {where(state)}; the run resumes from its "
        f"last finished epoch with --resume (torch.distributed said: {first[:200]})"
    )


class SignalGuard(Callback):
    """Lightning callback that records where training is (for the error lines) and, on a run of several
    processes, replaces Lightning's SIGTERM handler and the SIGINT handler by :meth:`_on_signal` from the start
    of training (Lightning installs its own just before; it restores the handlers found before ``fit`` when
    training ends). The watchdog runs while :meth:`watching` is entered (around ``trainer.fit``).

    Args:
        grace: seconds between a signal and the watchdog's end of a process that has not stopped by itself.
    """

    def __init__(self, grace: float = GRACE_SECONDS) -> None:
        self.grace = grace
        self.state: dict[str, Any] = {}
        self._trainer: Any = None
        self._signalled: int | None = None

    # ---------------------------------------------------------------- Lightning hooks (a Callback's signature)
    def _remember(self, trainer: Any, stage: str, batch_idx: int) -> None:
        self.state.update(epoch=trainer.current_epoch, stage=stage, batch=batch_idx, step=trainer.global_step)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._trainer = trainer
        self.state.update(epoch=trainer.current_epoch, stage="training", batch=0, step=trainer.global_step)
        if trainer.world_size > 1 and threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                signal.signal(signum, self._on_signal)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._remember(trainer, "training", batch_idx)

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._remember(trainer, "validation", batch_idx)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.state.update(stage="epoch end", step=trainer.global_step)

    # ---------------------------------------------------------------- signals
    def _on_signal(self, signum: int, frame: Any) -> None:
        """Forward the signal to the processes Lightning launched from this one, then stop as after Ctrl-C. No
        collective here: the other ranks may be inside any other collective."""
        self._signalled = signum
        for proc in self._children():
            with contextlib.suppress(OSError):
                proc.send_signal(signum)
        raise KeyboardInterrupt(f"{signal.Signals(signum).name} {where(self.state)}")

    def _children(self) -> list[Any]:
        launcher = getattr(getattr(self._trainer, "strategy", None), "launcher", None)
        return list(getattr(launcher, "procs", None) or [])

    def end_children(self, wait: float = 2.0) -> None:
        """End the processes Lightning launched from this one that have not ended ``wait`` seconds from now (a
        rank that hangs or is stopped would otherwise outlive the run), and take them off the launcher's list:
        Lightning's observer of that list kills this process (SIGKILL, within 5 s) when one of them ended with an
        error, which would cut this process's own line short; this process now ends the run itself."""
        import time

        deadline = time.monotonic() + wait
        children = self._children()
        for proc in children:
            with contextlib.suppress(Exception):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    proc.wait(timeout=5.0)
        launcher = getattr(getattr(self._trainer, "strategy", None), "launcher", None)
        procs = getattr(launcher, "procs", None)
        if isinstance(procs, list) and children:
            procs.clear()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """A signal or a lost process ends the run: the processes launched from this one end with it."""
        self._trainer = self._trainer or trainer
        if isinstance(exception, KeyboardInterrupt) or is_collective_failure(exception):
            self.end_children()

    @contextlib.contextmanager
    def watching(self, rank: int, world: int) -> Iterator[None]:
        """Run the watchdog for the duration of the block on a run of several processes (in one process, or off
        the main thread, nothing is done: a signal there is answered as usual)."""
        if world <= 1 or threading.current_thread() is not threading.main_thread():
            yield
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except ValueError:  # pragma: no cover - not the main thread of the main interpreter
            os.close(read_fd)
            os.close(write_fd)
            yield
            return
        owner = os.getpid()
        done = threading.Event()

        def forked() -> None:  # a DataLoader worker forked from here must not write into this process's pipe
            if os.getpid() != owner:
                with contextlib.suppress(ValueError):
                    signal.set_wakeup_fd(-1)

        os.register_at_fork(after_in_child=forked)
        thread = threading.Thread(target=self._watch, args=(read_fd, done, rank, world), daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(previous)
            with contextlib.suppress(OSError):
                os.write(write_fd, b"\0")  # wakes the thread, which sees `done` and returns
            thread.join(timeout=1.0)
            for fd in (read_fd, write_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _watch(self, read_fd: int, done: threading.Event, rank: int, world: int) -> None:
        wanted = {int(s) for s in _SIGNALS}
        while not done.is_set():
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            hit = [b for b in data if b in wanted]
            if not hit or done.is_set():
                continue
            if done.wait(self.grace):
                return
            name = signal.Signals(hit[0]).name
            print(
                f"error: rank {rank} of {world}: {name} received, and the process was still waiting for the others "
                f"{self.grace:g} s later ({where(self.state)}): ending it; the run resumes from its last "
                "finished epoch with --resume",
                file=sys.stderr,
                flush=True,
            )
            for proc in self._children():
                with contextlib.suppress(OSError):
                    proc.kill()
            os._exit(128 + hit[0])
