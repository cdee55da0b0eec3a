"""``ge2e_speaker``: the GE2E speaker encoder (Wan, Wang, Papir & Lopez Moreno, "Generalized
End-to-End Loss for Speaker Verification", ICASSP 2018) with the pretrained weights shipped in the
``Resemblyzer==0.1.4`` wheel (file ``resemblyzer/pretrained.pt``, 17 MB, trained on speaker
identification). The architecture and the feature front end are written here from the paper and
from the wheel's documented hyper-parameters; the ``resemblyzer`` package is never imported (its
``__init__`` imports librosa and webrtcvad, which are not installed).

Shape legend: B batch, N samples of a 16 kHz waveform, T mel frames (10 ms each), P partial
utterances, M = 40 mel channels, H = 256.

* input, either
  - a raw mono waveform at 16 kHz: (B, N) or (B, N, 1), float in [-1, 1]; or
  - mel frames (B, T, 40), as computed by :func:`mel_frames` (power, NOT log).
  ``lengths`` (B,) counts samples (waveform) or frames (mel); values past a row's length are
  never read, so padding does not change the embedding.
* waveform front end (:class:`MelFrontEnd`), the wheel's ``preprocess_wav`` + ``wav_to_mel_spectrogram``:
  1. ``normalize_volume`` (option, default true): a row quieter than -30 dBFS RMS is scaled up to
     -30 dBFS (gain = 10^(-1.5) / rms when > 1; never scaled down). The wheel's voice-activity
     trimming of long silences (webrtcvad) is not reproduced: trim silences beforehand if needed.
  2. power STFT: frame 25 ms (n_fft = window = 400 samples), hop 10 ms (160 samples), periodic
     Hann window, centred frames (the row padded by 200 samples on each side by reflection, the
     default of the librosa versions the weights were made with), |X|^2 -> (201, T), T = 1 + N // 160.
  3. mel filterbank (:func:`mel_filterbank`): 40 triangular filters on the Slaney mel scale (linear
     below 1 kHz, logarithmic above) from 0 Hz to 8 kHz, each scaled to unit area in mel
     (``2 / (f_{i+2} - f_i)``, librosa's ``norm="slaney"``) -> (T, 40). No log, no mean removal.
* partial utterances (``partials: true``, default; the wheel's ``embed_utterance`` with
  ``rate=1.3``, ``min_coverage=0.75``): the utterance is cut into windows of 160 frames (1.6 s)
  every ``round(16000 / rate / 160)`` frames; the last window is dropped when it covers less than
  ``min_coverage`` of real audio (unless it is the only one); the audio (mel frames) are
  zero-padded up to the last window's end. Every window (P, 160, 40) goes through the network, and
  the embedding is the L2-normalised mean of the windows' embeddings. With ``partials: false`` the
  whole utterance (all T real frames, packed) is one window.
* network (per window): LSTM(40 -> 256), LSTM(256 -> 256), LSTM(256 -> 256) (one 3-layer
  ``nn.LSTM``, batch first); the last layer's hidden state after the last real frame (B, 256) ->
  Linear(256, 256) -> ReLU -> divide by the L2 norm -> (B, 256). Embeddings are non-negative and
  unit length.
* ``similarity_weight`` / ``similarity_bias`` (1,): the GE2E loss's learnt scale w and offset b of
  the cosine similarity. They are not used by ``forward`` and never train; they are kept so that
  the wheel's state dict loads with a strict key match.

Parameters: 1,423,618 (the file's ``model_state`` holds exactly these tensors, see
``WHEEL_KEY_MAP``; the file's ``optimizer_state`` and ``step`` are ignored).

Weights: with ``pretrained=True`` (default) the file is located through the installed distribution
(``importlib.util.find_spec`` / ``importlib.metadata``, no import of the package), read with
``torch.load(map_location="cpu", weights_only=True)``, its ``model_state`` keys renamed one to one by
``WHEEL_KEY_MAP`` and loaded with ``strict=True``. ``freeze=True`` (default) freezes the network.

Install: the wheel declares librosa and webrtcvad as dependencies, which this encoder does not need
(and which would pull many packages), so it is installed without them:
``pip install --no-deps Resemblyzer==0.1.4`` (done by ``make setup``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..errors import ConfigError, DataError, ShapeError
from ..registry import ENCODERS
from ._util import as_shape

NAME = "ge2e_speaker"
SAMPLE_RATE = 16000
N_FFT = 400          # 25 ms window
HOP = 160            # 10 ms step
N_MELS = 40
HIDDEN = 256
EMBED = 256
LAYERS = 3
PARTIAL_FRAMES = 160  # 1.6 s
TARGET_DBFS = -30.0

WHEEL_DIST = "Resemblyzer"
WHEEL_PACKAGE = "resemblyzer"
WHEEL_FILE = "pretrained.pt"
INSTALL_HINT = "pip install --no-deps Resemblyzer==0.1.4 (or make setup)"

#: the wheel's ``model_state`` key -> this module's key (one to one; every key must appear)
WHEEL_KEY_MAP: dict[str, str] = {
    **{f"lstm.{kind}_l{i}": f"lstm.{kind}_l{i}"
       for i in range(LAYERS) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "linear.weight": "linear.weight",
    "linear.bias": "linear.bias",
    "similarity_weight": "similarity_weight",
    "similarity_bias": "similarity_bias",
}


# -- features -------------------------------------------------------------------------------------
def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: f / (200/3) below 1 kHz, 15 + ln(f / 1000) / (ln 6.4 / 27) above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3.0)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3.0)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float64 triangular filters, Slaney mel scale and area normalisation."""
    fmax = sr / 2.0 if fmax is None else fmax
    bins = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))  # (n_mels + 2,) Hz
    width = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    fb = np.maximum(0.0, np.minimum(rising, falling))
    return fb * (2.0 / (edges[2:] - edges[:-2]))[:, None]


class MelFrontEnd(nn.Module):
    """One waveform row (N,) -> power mel frames (1 + N // 160, 40); see the module docstring."""

    def __init__(self, normalize_volume: bool = True):
        super().__init__()
        self.normalize_volume = normalize_volume
        # constants, not persistent: the state dict must match the wheel's keys
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True, dtype=torch.float64).float(),
                             persistent=False)
        self.register_buffer("filters", torch.from_numpy(mel_filterbank()).float(), persistent=False)

    def volume(self, w: Tensor) -> Tensor:
        """Scale up to -30 dBFS RMS (never down; a silent row stays silent)."""
        rms = w.pow(2).mean().sqrt()
        gain = (10.0 ** (TARGET_DBFS / 20.0)) / rms.clamp_min(1e-12)
        return w * gain if bool(rms > 0) and bool(gain > 1) else w

    def forward(self, w: Tensor) -> Tensor:
        if w.shape[0] <= N_FFT // 2:  # reflection padding needs more than 200 samples
            w = torch.cat([w, w.new_zeros(N_FFT // 2 + 1 - w.shape[0])])
        spec = torch.stft(w, N_FFT, HOP, N_FFT, window=self.window.to(w.dtype), center=True, pad_mode="reflect",
                          return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)  # (201, T)
        return (self.filters.to(w.dtype) @ power).T  # (T, 40)

    def extra_repr(self) -> str:
        return f"normalize_volume={self.normalize_volume}"


def partial_slices(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[tuple[int, int]]:
    """Frame windows [start, start + 160) of an utterance of ``n_samples`` samples (the wheel's framing)."""
    n_frames = int(math.ceil((n_samples + 1) / HOP))
    step = int(round((SAMPLE_RATE / rate) / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    if len(starts) > 1:
        coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
        if coverage < min_coverage:
            starts = starts[:-1]
    return [(s, s + PARTIAL_FRAMES) for s in starts]


# -- weights --------------------------------------------------------------------------------------
def wheel_weights_path() -> Path:
    """``resemblyzer/pretrained.pt`` of the installed wheel, found without importing the package."""
    import importlib.metadata
    import importlib.util

    path = None
    try:
        dist = importlib.metadata.distribution(WHEEL_DIST)
        path = Path(dist.locate_file(f"{WHEEL_PACKAGE}/{WHEEL_FILE}"))
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(WHEEL_PACKAGE)
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / WHEEL_FILE
    if path is None:
        raise ConfigError(f"encoder {NAME!r}: pretrained weights need the wheel {WHEEL_DIST}==0.1.4; "
                          f"install it with: {INSTALL_HINT}; or set pretrained: false")
    if not path.is_file():
        raise ConfigError(f"encoder {NAME!r}: the wheel {WHEEL_DIST} is installed but {str(path)!r} is missing; "
                          f"reinstall it: {INSTALL_HINT}")
    return path


def load_wheel_state(path: str | Path | None = None) -> dict[str, Tensor]:
    """The file's ``model_state`` (name -> tensor), read with ``weights_only=True`` onto the CPU."""
    p = Path(path) if path is not None else wheel_weights_path()
    ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
    state = ckpt.get("model_state") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise DataError(f"{p}: expected a Resemblyzer checkpoint (a dict with 'model_state'), got "
                        f"{type(ckpt).__name__} with keys {sorted(ckpt)[:5] if isinstance(ckpt, dict) else '-'}")
    return state


def map_wheel_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename by ``WHEEL_KEY_MAP``; a missing or unexpected key is a DataError naming it."""
    missing = sorted(set(WHEEL_KEY_MAP) - set(state))
    unexpected = sorted(set(state) - set(WHEEL_KEY_MAP))
    if missing or unexpected:
        raise DataError(f"encoder {NAME!r}: the weights file does not match the GE2E speaker encoder: "
                        f"missing keys {missing}, unexpected keys {unexpected}; is it Resemblyzer 0.1.4's pretrained.pt?")
    return {WHEEL_KEY_MAP[k]: v for k, v in state.items()}


# -- encoder --------------------------------------------------------------------------------------
class GE2ESpeakerEncoder(nn.Module):
    """GE2E speaker encoder: waveform (B, N) / (B, N, 1) or mel frames (B, T, 40) -> (B, 256)."""

    output_dim = EMBED
    output_kind = "vector"
    accepts_lengths = True

    def __init__(self, pretrained: bool = True, freeze: bool = True, partials: bool = True, rate: float = 1.3,
                 min_coverage: float = 0.75, normalize_volume: bool = True, weights_path: str | None = None):
        super().__init__()
        for key, val in (("pretrained", pretrained), ("freeze", freeze), ("partials", partials),
                         ("normalize_volume", normalize_volume)):
            if not isinstance(val, bool):
                raise ConfigError(f"encoder {NAME!r}: {key} must be true or false, got {val!r}")
        min_rate = SAMPLE_RATE / (HOP * PARTIAL_FRAMES)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not min_rate <= rate <= SAMPLE_RATE / HOP / 1.5:
            raise ConfigError(f"encoder {NAME!r}: rate (partial utterances per second) must be a number in "
                              f"[{min_rate}, {SAMPLE_RATE / HOP / 1.5:.1f}], got {rate!r}; the default is 1.3")
        if isinstance(min_coverage, bool) or not isinstance(min_coverage, (int, float)) or not 0 < min_coverage <= 1:
            raise ConfigError(f"encoder {NAME!r}: min_coverage must be in (0, 1], got {min_coverage!r}; the default is 0.75")
        self.pretrained, self.freeze, self.partials = pretrained, freeze, partials
        self.rate, self.min_coverage = float(rate), float(min_coverage)
        self.front = MelFrontEnd(normalize_volume)
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBED)
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]), requires_grad=False)
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]), requires_grad=False)
        if pretrained:
            self.load_wheel(weights_path)
        self.lstm.requires_grad_(not freeze)
        self.linear.requires_grad_(not freeze)

    @property
    def frozen(self) -> bool:
        return self.freeze

    def load_wheel(self, path: str | Path | None = None) -> None:
        """Load the wheel's weights (``weights_only=True``, strict one-to-one key match)."""
        if self.linear.weight.is_meta:  # built on the meta device (memory estimates): nothing to fill
            return
        self.load_state_dict(map_wheel_keys(load_wheel_state(path)), strict=True)

    # -- per-window network ----------------------------------------------------------------------
    def embed_windows(self, mels: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(P, T, 40) windows (``lengths`` real frames each) -> (P, 256) unit-length embeddings."""
        if lengths is not None:
            mels = pack_padded_sequence(mels, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(mels)
        e = torch.relu(self.linear(hidden[-1]))
        return e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # -- forward ---------------------------------------------------------------------------------
    def _rows(self, x: Tensor, lengths: Tensor | None) -> tuple[list[Tensor], bool]:
        """The real part of every row, as waveforms (N,) or mel frames (T, 40)."""
        if x.dim() == 3 and x.shape[-1] == N_MELS:
            wave = False
        elif x.dim() == 2 or (x.dim() == 3 and x.shape[-1] == 1):
            wave, x = True, x.reshape(x.shape[0], x.shape[1])
        else:
            raise ShapeError(f"encoder {NAME!r}: expected a 16 kHz waveform (B, N) / (B, N, 1) or mel frames "
                             f"(B, T, {N_MELS}), got {tuple(x.shape)}; check the modality's input_shape")
        if not x.is_floating_point():
            x = x.float()
        B, T = x.shape[0], x.shape[1]
        if lengths is None:
            ns = [T] * B
        else:
            if lengths.shape != (B,):
                raise ShapeError(f"encoder {NAME!r}: lengths must have shape ({B},), got {tuple(lengths.shape)}")
            ns = [min(max(int(n), 1), T) for n in lengths.tolist()]  # an absent row (length 0) reads one step
        return [x[b, :n] for b, n in enumerate(ns)], wave

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        rows, wave = self._rows(x, lengths)
        if wave and self.front.normalize_volume:
            rows = [self.front.volume(w) for w in rows]
        if not self.partials:
            mels = [self.front(r) if wave else r for r in rows]
            n = torch.tensor([m.shape[0] for m in mels])
            padded = mels[0].new_zeros(len(mels), int(n.max()), N_MELS)
            for b, m in enumerate(mels):
                padded[b, : m.shape[0]] = m
            return self.embed_windows(padded, n)
        windows, owner = [], []
        for b, r in enumerate(rows):
            n_samples = r.shape[0] if wave else (r.shape[0] - 1) * HOP
            slices = partial_slices(n_samples, self.rate, self.min_coverage)
            stop = slices[-1][1]
            if wave:
                if stop * HOP > r.shape[0]:
                    r = torch.cat([r, r.new_zeros(stop * HOP - r.shape[0])])
                mel = self.front(r)
            else:
                mel = r if stop <= r.shape[0] else torch.cat([r, r.new_zeros(stop - r.shape[0], N_MELS)])
            windows += [mel[s:e] for s, e in slices]
            owner += [b] * len(slices)
        emb = self.embed_windows(torch.stack(windows))  # (P, 256)
        idx = torch.tensor(owner, device=emb.device)
        total = emb.new_zeros(len(rows), EMBED).index_add_(0, idx, emb)
        return total / total.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def extra_repr(self) -> str:
        return (f"pretrained={self.pretrained}, freeze={self.freeze}, partials={self.partials}, rate={self.rate}, "
                f"min_coverage={self.min_coverage}")


@ENCODERS.register(NAME, test_options={"input_shape": (None, N_MELS), "pretrained": False, "freeze": False})
def ge2e_speaker(input_shape=None, pretrained: bool = True, freeze: bool = True, partials: bool = True,
                 rate: float = 1.3, min_coverage: float = 0.75, normalize_volume: bool = True,
                 weights_path: str | None = None):
    """GE2E speaker encoder (Resemblyzer's pretrained weights) over a 16 kHz waveform (N,) / (N, 1) or
    power mel frames (T, 40) -> (B, 256) unit-length speaker embedding."""
    if input_shape is not None:
        shape = as_shape(input_shape, NAME)
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] in (1, N_MELS))):
            raise ConfigError(f"encoder {NAME!r}: input_shape must be a 16 kHz waveform (N,) or (N, 1), or mel frames "
                              f"(T, {N_MELS}); got {input_shape!r}")
    return GE2ESpeakerEncoder(pretrained, freeze, partials, rate, min_coverage, normalize_volume, weights_path)
