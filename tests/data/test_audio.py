"""Audio front end: WAV reading, the mel filterbank and log-mel frames against a numpy reference, padding."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from robult.data.audio import LogMelSettings, hz_to_mel, log_mel, mel_filterbank, mel_to_hz, pad_sequences, read_wav


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000, channels: int = 1, width: int = 2) -> Path:
    """A PCM WAV file as FSDD stores them (mono, 16-bit, little-endian) unless told otherwise."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2" if width == 2 else np.uint8).tobytes())
    return path


def test_read_wav_round_trip(tmp_path: Path) -> None:
    samples = np.array([0, 1, -1, 32767, -32768, 1000], dtype=np.int16)
    x, rate = read_wav(write_wav(tmp_path / "a.wav", samples))
    assert rate == 8000 and x.dtype == np.float32
    np.testing.assert_array_equal(x, samples.astype(np.float32) / 32768.0)


def test_read_wav_errors_name_the_file(tmp_path: Path) -> None:
    stereo = write_wav(tmp_path / "stereo.wav", np.zeros(20, dtype=np.int16), channels=2)
    with pytest.raises(ValueError, match=r"stereo\.wav: 2 channel\(s\) of 16-bit samples; expected mono 16-bit"):
        read_wav(stereo)
    eight = write_wav(tmp_path / "eight.wav", np.zeros(20, dtype=np.uint8), width=1)
    with pytest.raises(ValueError, match=r"eight\.wav: 1 channel\(s\) of 8-bit samples"):
        read_wav(eight)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wave file at all")
    with pytest.raises(ValueError, match=r"junk\.wav: not a readable WAV file"):
        read_wav(junk)
    with pytest.raises(FileNotFoundError, match=r"audio file .*absent\.wav not found"):
        read_wav(tmp_path / "absent.wav")
    cut = write_wav(tmp_path / "cut.wav", np.arange(10, dtype=np.int16))
    cut.write_bytes(cut.read_bytes()[:-1])  # the last sample cut in half
    with pytest.raises(ValueError, match=r"cut\.wav: 19 bytes of 16-bit samples, an odd count"):
        read_wav(cut)
    short = write_wav(tmp_path / "short.wav", np.arange(10, dtype=np.int16))
    short.write_bytes(short.read_bytes()[:-4])  # two whole samples missing
    with pytest.raises(ValueError, match=r"short\.wav: header says 10 samples, the file holds 8"):
        read_wav(short)


def test_mel_scale_round_trip_and_filterbank_shape() -> None:
    f = torch.tensor([0.0, 700.0, 4000.0])
    torch.testing.assert_close(mel_to_hz(hz_to_mel(f)), f.double())
    assert float(hz_to_mel(700.0)) == pytest.approx(2595.0 * np.log10(2.0))
    bank = mel_filterbank(129, 6, 8000)
    assert bank.shape == (129, 6) and (bank >= 0).all() and (bank <= 1).all()
    # filter j peaks at mel point j + 1 and vanishes outside points j .. j + 2
    points = mel_to_hz(torch.linspace(0.0, float(hz_to_mel(4000.0)), 8)).numpy()
    freqs = np.linspace(0, 4000, 129)
    for j in range(6):
        support = np.flatnonzero(bank[:, j].numpy() > 0)
        assert freqs[support].min() > points[j] and freqs[support].max() < points[j + 2]
        assert abs(freqs[int(bank[:, j].argmax())] - points[j + 1]) <= 4000 / 128
    with pytest.raises(ValueError, match="mel filter 0 of 128 covers no STFT bin"):
        mel_filterbank(33, 128, 8000)
    with pytest.raises(ValueError, match="must lie in"):
        mel_filterbank(129, 6, 8000, f_max=5000.0)


def test_log_mel_equals_a_numpy_reference() -> None:
    settings = LogMelSettings(n_fft=64, hop_length=24, n_mels=8)
    rng = np.random.default_rng(0)
    x = rng.normal(size=500).astype(np.float32) * 0.1
    out = log_mel(x, settings)
    frames = 1 + (500 - 64) // 24
    assert out.shape == (frames, 8) and settings.num_frames(500) == frames
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(64) / 64)  # periodic Hann
    bank = mel_filterbank(33, 8, 8000).double().numpy()
    ref = np.stack([np.abs(np.fft.rfft(window * x[t * 24 : t * 24 + 64])) ** 2 for t in range(frames)])
    np.testing.assert_allclose(out.numpy(), np.log(ref @ bank + 1e-6), rtol=1e-4, atol=1e-4)


def test_log_mel_of_a_tone_peaks_in_its_band_and_short_input_is_one_frame() -> None:
    settings = LogMelSettings()
    t = np.arange(4000) / 8000
    out = log_mel(np.sin(2 * np.pi * 1000.0 * t).astype(np.float32), settings)
    centres = mel_to_hz(torch.linspace(0.0, float(hz_to_mel(4000.0)), 42))[1:-1].numpy()
    assert (out.argmax(1) == int(np.abs(centres - 1000.0).argmin())).all()
    short = log_mel(np.ones(100, dtype=np.float32), settings)
    assert short.shape == (1, 40) and settings.num_frames(100) == 1
    with pytest.raises(ValueError, match="1-D samples"):
        log_mel(np.zeros((2, 300), dtype=np.float32), settings)


def test_pad_sequences() -> None:
    padded, lengths = pad_sequences([np.ones((2, 3)), np.full((4, 3), 2.0)])
    assert padded.shape == (2, 4, 3) and lengths.tolist() == [2, 4]
    assert padded[0, 2:].sum() == 0 and padded[1].sum() == 24
    with pytest.raises(ValueError, match="different feature shapes"):
        pad_sequences([np.ones((2, 3)), np.ones((2, 4))])
