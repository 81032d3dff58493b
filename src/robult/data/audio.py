"""Audio front end: read PCM WAV files with the standard library, log-mel features with torch, padded batches.

Nothing here learns: :func:`log_mel` is a fixed transform (short-time Fourier transform, a triangular mel
filterbank, a log), computed once per recording and cached by the loaders that use it (``robult.data.avdigits``).
A saved model's audio input is these features: ``log_mel(read_wav(path)[0], settings)`` for a new recording.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["LogMelSettings", "hz_to_mel", "log_mel", "mel_filterbank", "mel_to_hz", "pad_sequences", "read_wav"]


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A mono 16-bit PCM WAV file as float32 samples in ``[-1, 1)`` and its sample rate (standard library ``wave``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a WAV file, or not mono 16-bit uncompressed PCM (the message names the file and what it is).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} not found")
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if w.getcomptype() != "NONE":
                raise ValueError(f"{path}: compressed WAV ({w.getcompname()}); expected uncompressed PCM")
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as err:
        raise ValueError(f"{path}: not a readable WAV file ({err})") from None
    if channels != 1 or width != 2:
        raise ValueError(f"{path}: {channels} channel(s) of {8 * width}-bit samples; expected mono 16-bit PCM")
    if len(raw) % 2:  # a truncated last sample: frombuffer would fail without naming the file
        raise ValueError(f"{path}: {len(raw)} bytes of 16-bit samples, an odd count (truncated?)")
    samples = np.frombuffer(raw, dtype="<i2")
    if len(samples) != frames:
        raise ValueError(f"{path}: header says {frames} samples, the file holds {len(samples)} (truncated?)")
    return samples.astype(np.float32) / 32768.0, rate


def hz_to_mel(f: Tensor | float) -> Tensor:
    """The HTK mel scale, ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor | float) -> Tensor:
    """The inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """Triangular mel filters ``[n_freqs, n_mels]`` over the ``n_freqs`` STFT bins ``0 .. sample_rate / 2``.

    Filter ``j`` rises from mel point ``j`` to ``j + 1`` and falls to ``j + 2`` (``n_mels + 2`` points evenly spaced
    on the mel scale between ``f_min`` and ``f_max``), with peak 1 at its centre frequency (no area normalisation).

    Raises:
        ValueError: a band range outside ``[0, sample_rate / 2]``, or a filter that covers no STFT bin (too many mel
            bands for the frequency resolution; use fewer bands or a longer ``n_fft``).
    """
    nyquist = sample_rate / 2
    f_max = nyquist if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= nyquist:
        raise ValueError(f"mel band range [{f_min}, {f_max}] Hz must lie in [0, {nyquist:g}] with f_min < f_max")
    freqs = torch.linspace(0.0, nyquist, n_freqs, dtype=torch.float64)
    points = mel_to_hz(
        torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    )
    lower, centre, upper = points[:-2], points[1:-1], points[2:]
    rise = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    fall = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    bank = torch.clamp(torch.minimum(rise, fall), min=0.0)
    empty = (bank.sum(0) == 0).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"mel filter {int(empty[0])} of {n_mels} covers no STFT bin ({n_freqs} bins up to {nyquist:g} Hz); use "
            "fewer mel bands or a longer n_fft"
        )
    return bank.to(torch.float32)


@dataclass(frozen=True)
class LogMelSettings:
    """The log-mel front end.

    Attributes:
        sample_rate: expected sample rate in Hz (a recording at another rate is an error, not resampled).
        n_fft: STFT window and FFT length in samples (a periodic Hann window).
        hop_length: samples between frames.
        n_mels: mel bands.
        f_min, f_max: band range in Hz (``f_max`` ``None``: the Nyquist frequency).
        floor: added to the mel energies before the natural log (silence maps to ``log(floor)``).
    """

    sample_rate: int = 8000
    n_fft: int = 256
    hop_length: int = 128
    n_mels: int = 40
    f_min: float = 0.0
    f_max: float | None = None
    floor: float = 1e-6

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def num_frames(self, num_samples: int) -> int:
        """Frames of a recording of ``num_samples`` samples (shorter than ``n_fft``: zero-padded to one frame)."""
        return 1 + (max(num_samples, self.n_fft) - self.n_fft) // self.hop_length


def log_mel(samples: np.ndarray | Tensor, settings: LogMelSettings, filterbank: Tensor | None = None) -> Tensor:
    """Log-mel energies ``[T, n_mels]`` of one recording (``T = settings.num_frames(len(samples))``).

    Frames are not centred: frame ``t`` covers samples ``[t · hop, t · hop + n_fft)`` and the tail shorter than a
    hop is dropped; a recording shorter than ``n_fft`` is zero-padded to one frame. The power spectrum
    ``|STFT|²`` is multiplied by :func:`mel_filterbank` and ``log(energy + floor)`` is returned (float32).

    Args:
        samples: 1-D float samples.
        settings: the front end.
        filterbank: a precomputed ``mel_filterbank(n_fft // 2 + 1, ...)`` (computed when ``None``).
    """
    x = torch.as_tensor(samples, dtype=torch.float32)
    if x.ndim != 1:
        raise ValueError(f"log_mel expects 1-D samples, got shape {tuple(x.shape)}")
    if x.numel() < settings.n_fft:
        x = torch.nn.functional.pad(x, (0, settings.n_fft - x.numel()))
    if filterbank is None:
        filterbank = mel_filterbank(
            settings.n_fft // 2 + 1, settings.n_mels, settings.sample_rate, settings.f_min, settings.f_max
        )
    window = torch.hann_window(settings.n_fft, periodic=True)
    spec = torch.stft(
        x, settings.n_fft, settings.hop_length, window=window, center=False, return_complex=True
    )  # [F, T]
    power = spec.real.square() + spec.imag.square()
    return torch.log(power.transpose(0, 1) @ filterbank + settings.floor)


def pad_sequences(sequences: Sequence[np.ndarray], dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad ``[T_i, d]`` arrays with zeros into ``[N, max T_i, d]``; returns it and the lengths ``[N]``."""
    if not sequences:
        raise ValueError("pad_sequences needs at least one sequence")
    widths = {s.shape[1:] for s in sequences}
    if len(widths) != 1:
        raise ValueError(f"sequences have different feature shapes {sorted(widths)}")
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    out = np.zeros((len(sequences), int(lengths.max()), *sequences[0].shape[1:]), dtype=dtype)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = s
    return out, lengths
