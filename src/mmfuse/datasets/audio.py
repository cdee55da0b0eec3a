"""Small numpy implementations of log-mel spectrograms and MFCCs (no librosa / torchaudio).

Conventions (close to the usual speech front end): mono signal, optional FFT resampling, pre-emphasis 0.97, 25 ms Hann windows every 10 ms, power
spectrum with an FFT of the next power of two, ``n_mels`` triangular filters on the HTK mel
scale between ``fmin`` and ``min(fmax, sr / 2)``, natural log of (energy + 1e-10), and for MFCCs
an orthonormal DCT-II of the log-mel energies keeping the first ``n_mfcc`` coefficients.
Outputs are channels-last ``(frames, features)`` float32 arrays.
"""

from __future__ import annotations

import functools
import numpy as np


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=32)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular filters ``[n_mels, n_fft // 2 + 1]`` on the HTK mel scale."""
    fmax = sr / 2.0 if fmax is None else min(float(fmax), sr / 2.0)
    mel_points = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    hz_points = mel_to_hz(mel_points)
    bins = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    fb = np.zeros((n_mels, len(bins)))
    for m in range(n_mels):
        lo, mid, hi = hz_points[m], hz_points[m + 1], hz_points[m + 2]
        up = (bins - lo) / max(mid - lo, 1e-9)
        down = (hi - bins) / max(hi - mid, 1e-9)
        fb[m] = np.clip(np.minimum(up, down), 0.0, None)
    return fb


@functools.lru_cache(maxsize=32)
def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``[n_out, n_in]``."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    mat = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    mat[0] /= np.sqrt(2.0)
    return mat


def to_mono(signal: np.ndarray) -> np.ndarray:
    x = np.asarray(signal, dtype=np.float64)
    return x.mean(axis=1) if x.ndim == 2 else x.reshape(-1)


def resample(signal: np.ndarray, sr: int, target_sr: int | None) -> tuple[np.ndarray, int]:
    """Band-limited (FFT) resampling of a mono signal to ``target_sr`` (None: unchanged).

    The spectrum is truncated or zero-extended to the new length, which acts as an ideal
    low-pass filter at the lower Nyquist frequency (fine for feature extraction; importing
    scipy.signal for ``resample_poly`` would cost seconds).
    """
    if target_sr is None or int(target_sr) == int(sr):
        return signal, int(sr)
    x = np.asarray(signal, dtype=np.float64)
    n = len(x)
    m = max(1, int(round(n * int(target_sr) / int(sr))))
    spec = np.fft.rfft(x)
    out = np.zeros(m // 2 + 1, dtype=complex)
    k = min(len(spec), len(out))
    out[:k] = spec[:k]
    return np.fft.irfft(out, n=m) * (m / n), int(target_sr)


def log_mel(signal: np.ndarray, sr: int, *, n_mels: int = 40, win_ms: float = 25.0, hop_ms: float = 10.0,
            fmin: float = 0.0, fmax: float | None = 8000.0, preemphasis: float = 0.97) -> np.ndarray:
    """Log mel energies ``(frames, n_mels)`` of a mono signal (at least one frame)."""
    x = to_mono(signal)
    if preemphasis:
        x = np.append(x[:1], x[1:] - preemphasis * x[:-1])
    win = max(1, int(round(sr * win_ms / 1000.0)))
    hop = max(1, int(round(sr * hop_ms / 1000.0)))
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    n_frames = 1 + (len(x) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None]
    frames = x[idx] * np.hanning(win + 2)[1:-1]  # periodic-like Hann without zero end points
    n_fft = 1 << (win - 1).bit_length()
    power = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2 / n_fft
    mel = power @ mel_filterbank(int(sr), n_fft, int(n_mels), float(fmin), fmax).T
    return np.log(mel + 1e-10).astype(np.float32)


def mfcc(signal: np.ndarray, sr: int, *, n_mfcc: int = 13, n_mels: int = 40, **kw) -> np.ndarray:
    """MFCCs ``(frames, n_mfcc)``: orthonormal DCT-II of :func:`log_mel`."""
    lm = log_mel(signal, sr, n_mels=n_mels, **kw).astype(np.float64)
    return (lm @ dct_matrix(lm.shape[1], int(n_mfcc)).T).astype(np.float32)
