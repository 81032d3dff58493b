"""Crash-safe checkpoints: exact resume state, safe loading, checksums, a lock per run directory.

- :class:`ResumeState` (a Lightning callback) stores the torch, CUDA, numpy and Python RNG states in every
  checkpoint and restores them on resume (the epoch position, optimizer, EMA buffers of the losses, early stopping
  and checkpoint state are Lightning's own checkpoint content).
- :class:`SafeCheckpointIO` writes a checkpoint into its own directory and renames it (never a copy across file
  systems), writes ``<file>.sha256`` beside it, verifies that checksum before loading, and always loads with
  ``torch.load(weights_only=True)``, whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says.
- :func:`load_weights` loads a checkpoint's weights into a module once :func:`check_state_fits` has compared their
  keys and shapes: a misfit is one line naming the file and the key.
- :func:`run_lock` holds an exclusive lock on ``<run_dir>/.lock`` (with the holder's pid) while a run trains.

Lightning is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import stat
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robult.utils.io import atomic_open

CHECKSUM_SUFFIX = ".sha256"
LOCK_NAME = ".lock"


class CheckpointError(ValueError):
    """A checkpoint that must not be loaded: unreadable, truncated, corrupted, or not weights-only."""


class RunInUseError(FileExistsError):
    """The run directory is locked by another process (its lock file exists and is held)."""


class RunLockError(ValueError):
    """The run's lock file cannot be used safely (a symbolic link, or not a regular file)."""


# ---------------------------------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """The global RNG states as plain tensors, ints and strings (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _relocate(state: dict[str, Any], new_dir: str) -> None:
    """Point a ModelCheckpoint state saved in another directory (a copied or moved run) at ``new_dir``."""
    old_dir = state.get("dirpath")
    if not old_dir or os.path.abspath(old_dir) == os.path.abspath(new_dir):
        return

    def move(path: Any) -> Any:
        return os.path.join(new_dir, os.path.basename(path)) if isinstance(path, str) and path else path

    state["dirpath"] = new_dir
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in state:
            state[key] = move(state[key])
    if isinstance(state.get("best_k_models"), dict):
        state["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}


def resume_state_callback() -> Any:
    """A ``ResumeState`` callback (the class is built on first use so that Lightning loads lazily).

    It saves the global RNG states and whether the trainer was about to stop (early stopping) in every checkpoint
    and restores both on resume, and re-points the ModelCheckpoint states of a run directory that was copied or
    moved since the checkpoint was written."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    class ResumeState(L.Callback):
        def __init__(self) -> None:
            self.should_stop = False
            self.trainer: Any = None

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            self.trainer = trainer

        def state_dict(self) -> dict[str, Any]:
            stop = bool(self.trainer.should_stop) if self.trainer is not None else False
            return {"rng": rng_state(), "should_stop": stop}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            if "rng" in state_dict:
                set_rng_state(state_dict["rng"])
            self.should_stop = bool(state_dict.get("should_stop", False))

        def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
            # runs before the callbacks' load_state_dict
            states = checkpoint.get("callbacks", {})
            for cb in trainer.checkpoint_callbacks:
                if isinstance(cb, ModelCheckpoint) and cb.dirpath and isinstance(states.get(cb.state_key), dict):
                    _relocate(states[cb.state_key], str(cb.dirpath))

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if self.should_stop:  # the run had stopped early before it was killed: train no further epoch
                trainer.should_stop = True

    return ResumeState()


# ------------------------------------------------------------------------------------------ checksummed files


def checksum_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def _recorded_digests(path: Path) -> list[str]:
    side = checksum_path(path)
    try:
        text = side.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{side}: cannot read the checksum file ({err})") from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def write_checksummed(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory (fsync, rename) with its SHA-256
    in ``<path>.sha256``. The checksum file first lists the new and the old digest, and only the new one after the
    rename, so a kill at any point leaves a file that matches a listed digest."""
    path = Path(path)
    digest = hashlib.sha256(data).hexdigest()
    old = _recorded_digests(path) if path.exists() else []
    side = checksum_path(path)
    with atomic_open(side, "w", encoding="ascii") as fh:
        fh.write("".join(f"{d}  {path.name}\n" for d in [digest, *old[:1]]))
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    with atomic_open(side, "w", encoding="ascii") as fh:
        fh.write(f"{digest}  {path.name}\n")


def verify_checkpoint(path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming ``path`` when its SHA-256 is not the one recorded beside it; warn
    when there is no checksum file (a checkpoint from an older robult)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    recorded = _recorded_digests(path)
    if not recorded:
        warnings.warn(f"{path}: no {CHECKSUM_SUFFIX} file beside it; the checkpoint is loaded unverified", stacklevel=2)
        return
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    if h.hexdigest() not in recorded:
        raise CheckpointError(
            f"{path}: SHA-256 {h.hexdigest()} differs from the one in {checksum_path(path).name}; the checkpoint is "
            "corrupted or truncated (delete it, or the run directory, to retrain)"
        )


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Verify ``path``'s checksum and load it with ``weights_only=True`` (never arbitrary unpickling: the explicit
    argument wins over ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``). Errors are one :class:`CheckpointError` naming the
    file."""
    verify_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint dictionary")
    return state


def safe_checkpoint_io() -> Any:
    """A Lightning ``CheckpointIO`` built on :func:`write_checksummed` and :func:`load_checkpoint_file`."""
    from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

    class SafeCheckpointIO(CheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
            if storage_options is not None:
                raise TypeError("SafeCheckpointIO takes no storage_options")
            buf = io.BytesIO()
            torch.save(checkpoint, buf)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_checksummed(path, buf.getvalue())

        def load_checkpoint(
            self, path: Any, map_location: Callable[..., Any] | None = None, weights_only: bool | None = None
        ) -> dict[str, Any]:
            return load_checkpoint_file(path, map_location="cpu")

        def remove_checkpoint(self, path: Any) -> None:
            for p in (Path(path), checksum_path(path)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    return SafeCheckpointIO()


# ------------------------------------------------------------------------------------------- loading weights


def state_dict_misfit(module: nn.Module, state: Mapping[str, Any]) -> str | None:
    """What keeps ``state`` (a checkpoint's ``state_dict``) from loading into ``module``, or ``None`` when it fits:
    the first key, in the module's order, that ``state`` lacks or holds with another shape, else the first key
    ``state`` holds that the module does not; with how many other keys do not fit.

    The keys and shapes are compared as ``module.load_state_dict`` sees them, after each submodule has read an older
    layout of its own state (its ``_load_from_state_dict``: e.g. a model that fills in a buffer older checkpoints
    lack, or expands a shared parameter), but nothing is loaded: a hook that runs on every submodule before it
    would copy its tensors takes them out of the state it reads, noting their shapes."""
    from torch.nn.parameter import is_lazy

    expected = module.state_dict(keep_vars=True)
    arrived: dict[str, tuple[int, ...] | None] = {}  # key -> its shape as the module would load it

    def take_own(mod: nn.Module, local: dict[str, Any], prefix: str, *args: Any) -> None:
        for key in [k for k in local if k.startswith(prefix) and "." not in k[len(prefix) :] and k in expected]:
            value = local.pop(key)
            arrived[key] = tuple(value.shape) if isinstance(value, torch.Tensor) else None

    hooks = [m.register_load_state_dict_pre_hook(take_own) for m in module.modules()]
    try:
        unexpected = module.load_state_dict(state, strict=False).unexpected_keys  # torch reads a copy
    finally:
        for hook in hooks:
            hook.remove()
    problems = []
    for key, tensor in expected.items():
        if key not in arrived:
            problems.append(f"lacks {key!r}")
            continue
        if not isinstance(tensor, torch.Tensor) or is_lazy(tensor) or arrived[key] is None:
            continue
        shape, want = arrived[key], tuple(tensor.shape)
        if shape != want and not (want == () and len(shape) == 1):  # torch loads x[0] of a 1-d x into a scalar
            problems.append(f"holds {key!r} with shape {list(shape)}, the model's is {list(want)}")
    problems += [f"holds {key!r}, which the model has not" for key in unexpected]
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more key(s) that do not fit)" if len(problems) > 1 else ""
    return f"it {problems[0]}{more}"


def check_state_fits(module: nn.Module, state: Mapping[str, Any], checkpoint: str | Path) -> None:
    """Raise a one-line ``ValueError`` naming ``checkpoint`` and the first key of ``state`` (its ``state_dict``)
    that does not fit ``module`` (:func:`state_dict_misfit`)."""
    misfit = state_dict_misfit(module, state)
    if misfit is not None:
        raise ValueError(
            f"{checkpoint}: does not fit this run's model (another dataset, modality set or model config?): {misfit}"
        )


def load_weights(module: nn.Module, checkpoint: Path) -> int:
    """Load a Lightning checkpoint's ``state_dict`` with ``torch.load(weights_only=True)`` (no arbitrary
    unpickling of untrusted files) after verifying the checksum beside it and that its keys and shapes fit
    ``module`` (:func:`check_state_fits`). Returns the checkpoint's epoch (-1 when it has none)."""
    state = load_checkpoint_file(checkpoint)
    if not isinstance(state.get("state_dict"), Mapping):
        raise ValueError(f"{checkpoint}: no 'state_dict' key; is it a robult checkpoint?")
    check_state_fits(module, state["state_dict"], checkpoint)
    module.load_state_dict(state["state_dict"])
    return int(state.get("epoch", -1))


# ------------------------------------------------------------------------------------------------- run lock


def _launcher_rank_zero() -> bool:
    """Whether this process is the global rank 0 by the launchers' environment (torchrun, SLURM, MPI, Lightning's
    script launcher: :func:`robult.utils.distributed.launched_rank`); true outside any distributed launch."""
    from robult.utils.distributed import launched_rank

    return launched_rank() == 0


def _in_use(run_dir: Path, fd: int) -> RunInUseError:
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
    return RunInUseError(
        f"{run_dir}: the run is in use by another process (pid {holder}, lock {Path(run_dir) / LOCK_NAME}); wait for "
        "it to finish or use another --out / name"
    )


def check_not_in_use(run_dir: Path) -> None:
    """Raise :class:`RunInUseError` when another process holds the run's lock; change nothing (the lock file is
    opened read-only, never created, never through a symbolic link)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return  # no lock file (or a link, refused when the lock is taken)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(run_dir, fd) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<run_dir>/.lock`` (which records the holder's pid); raise
    :class:`RunInUseError` at once when another process holds it. The kernel releases the lock when the holder
    dies, so a killed run never leaves a stale lock. Under DDP only the global rank 0 process locks (the other
    ranks are started by it, or by torchrun, for the same run)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    if not _launcher_rank_zero():
        yield
        return
    path = Path(run_dir) / LOCK_NAME
    try:  # never through a symbolic link: its target would be truncated and the pid written into it
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        if not path.is_symlink():
            raise
        raise RunLockError(
            f"{path}: the run's lock file is a symbolic link (to {os.readlink(path)}); robult does not write through "
            "it: remove the link"
        ) from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunLockError(f"{path}: the run's lock file is not a regular file; remove it")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(run_dir, fd) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
