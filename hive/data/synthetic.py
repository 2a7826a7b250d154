"""Built-in synthetic voice corpus: the default dataset when no data is given.

Every speaker is a source-filter voice (Fant's model of speech production):

* Source: a glottal pulse train at the speaker's mean pitch ``f0_hz``, bent by
  a slow intonation contour (declination, phrase wobble, pitch accents, depth
  ``f0_range``), roughened by per-pulse jitter (timing) and shimmer
  (amplitude), rolled off by the speaker's ``spectral_tilt`` and mixed with
  aspiration noise (``breathiness``).
* Filter: a cascade of two-pole formant resonators (Klatt-style, unity DC
  gain). Vowel formant targets come from a small table of adult vowels and are
  scaled by the speaker's ``vocal_tract_scale`` (vocal-tract length), shifted by
  personal per-formant offsets and a per-vowel "accent", sharpened or blunted
  by ``formant_bandwidth_scale``, and notched by a personal nasal zero.
* Articulation: syllables at ``speaking_rate``, each a random vowel (weak ones
  reduced towards schwa), sometimes preceded by a fricative noise burst
  (s / sh / f, placed by the speaker's ``fricative_hz``), now and then followed
  by a short pause; formants glide from one vowel target to the next.

What is said (vowels, prosody, loudness) is drawn afresh for every utterance
from the same distribution for all speakers, so only the voice identifies the
speaker. The corpus is written in the LibriSpeech layout
(``<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``, per-chapter
``.trans.txt`` and ``SPEAKERS.TXT``) so the ordinary LibriSpeech reader reads it.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import pathlib
import shutil
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf

SAMPLE_RATE = 16000
# Bump when the synthesis changes, so cached corpora are regenerated.
GENERATOR_VERSION = 1
MARKER_NAME = "SYNTHETIC.json"

# Adult male vowel formants F1-F4 in Hz (Peterson & Barney style). The names
# double as the "words" of the transcripts.
_VOWELS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("AX", (500.0, 1500.0, 2500.0, 3500.0)),  # schwa, the neutral vowel: keep first
    ("IY", (270.0, 2290.0, 3010.0, 3700.0)),
    ("IH", (390.0, 1990.0, 2550.0, 3600.0)),
    ("EH", (530.0, 1840.0, 2480.0, 3500.0)),
    ("AE", (660.0, 1720.0, 2410.0, 3500.0)),
    ("AA", (730.0, 1090.0, 2440.0, 3400.0)),
    ("AO", (570.0, 840.0, 2410.0, 3300.0)),
    ("UH", (440.0, 1020.0, 2240.0, 3300.0)),
    ("UW", (300.0, 870.0, 2240.0, 3300.0)),
)
_VOWEL_FORMANTS = np.array([f for _, f in _VOWELS])
_NUM_VOWELS, _NUM_FORMANTS = _VOWEL_FORMANTS.shape
# Schwa is the commonest vowel of connected speech; the rest share the remainder.
_VOWEL_CDF = np.cumsum([0.3] + [0.7 / (_NUM_VOWELS - 1)] * (_NUM_VOWELS - 1))
# Typical bandwidths of F1-F4, and a fifth formant (fixed apart from the
# speaker's scale and offset) so the spectrum does not die above F4.
_BASE_BANDWIDTHS = np.array([60.0, 80.0, 120.0, 175.0])
_F5_HZ, _F5_BANDWIDTH = 4500.0, 300.0
_FRICATIVES = ("S", "SH", "F")

# Frames of the time-varying vocal-tract filter: 32 ms Hann window, 16 ms hop
# (formants move slower than that), FFT zero-padded to twice the window so the
# zero-phase resonator responses do not wrap around.
_WIN, _HOP, _NFFT = 512, 256, 1024
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_WIN) / _WIN)).astype(np.float32)

# First seed words that keep the voice and utterance random streams apart.
_VOICE_STREAM, _UTTERANCE_STREAM = 0x5EED0001, 0x5EED0002


@dataclasses.dataclass(frozen=True)
class SpeakerVoice:
  """Parameters of one synthetic speaker; see the module docstring."""

  speaker_id: str
  gender: str  # "m" or "f".
  f0_hz: float  # Mean pitch.
  f0_range: float  # Intonation depth, semitones.
  vocal_tract_scale: float  # Formant scale; > 1 is a shorter vocal tract.
  spectral_tilt: float  # Source roll-off above f0, dB/octave (negative).
  speaking_rate: float  # Syllables per second.
  breathiness: float  # Aspiration noise relative to the pulses.
  formant_bandwidth_scale: float = 1.0
  formant_offsets: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)  # F1-F5 factors.
  vowel_accent: tuple[tuple[float, ...], ...] = ()  # F1-F4 factors per vowel; () for none.
  nasal_zero_hz: float = 1200.0
  nasality: float = 0.0  # 0: no nasal notch .. 1: a deep one.
  jitter: float = 0.01  # Pulse timing perturbation, fraction of a period.
  shimmer: float = 0.05  # Pulse amplitude perturbation, fraction.
  fricative_hz: float = 4500.0  # Centre of the speaker's "s".
  fricative_level: float = 0.3  # Fricative RMS relative to the vowels.


@dataclasses.dataclass(frozen=True)
class _Syllable:
  vowel: int
  fricative: int  # Index into _FRICATIVES, -1 for none.
  onset: int  # First sample of the fricative (== start when none).
  start: int  # First sample of the vowel.
  end: int  # One past the last sample of the vowel.
  stress: float  # 0.5 .. 1.


@dataclasses.dataclass(frozen=True)
class _Plan:
  """What is said in one utterance, independent of the voice's sound."""
  num_samples: int
  syllables: tuple[_Syllable, ...]

  def transcript(self) -> str:
    return " ".join((_FRICATIVES[s.fricative] if s.fricative >= 0 else "") + _VOWELS[s.vowel][0]
                    for s in self.syllables)


# --- Voices -------------------------------------------------------------------


def _sample_voice(index: int, rng: np.random.Generator) -> SpeakerVoice:
  # Genders alternate so that any prefix of the speaker list is balanced.
  gender = "m" if index % 2 == 0 else "f"
  # Pitch ranges leave a gap between the genders that intonation does not bridge.
  if gender == "m":
    f0, scale, breathiness = rng.uniform(85, 150), rng.uniform(0.85, 1.0), rng.uniform(0.02, 0.2)
  else:
    f0, scale, breathiness = rng.uniform(170, 255), rng.uniform(1.05, 1.2), rng.uniform(0.05, 0.3)
  # Individual anatomy moves the higher formants more than the vowel does.
  offsets = np.clip(1 + rng.normal(0, [0.05, 0.05, 0.06, 0.07, 0.07]), 0.85, 1.15)
  accent = np.clip(1 + rng.normal(0, 0.05, (_NUM_VOWELS, _NUM_FORMANTS)), 0.88, 1.12)
  return SpeakerVoice(
      speaker_id=str(1001 + index),
      gender=gender,
      f0_hz=float(f0),
      f0_range=float(rng.uniform(1.5, 5.0)),
      vocal_tract_scale=float(scale),
      spectral_tilt=float(rng.uniform(-10.0, -2.0)),
      speaking_rate=float(rng.uniform(3.0, 5.5)),
      breathiness=float(breathiness),
      formant_bandwidth_scale=float(rng.uniform(0.6, 1.6)),
      formant_offsets=tuple(float(v) for v in offsets),
      vowel_accent=tuple(tuple(float(v) for v in row) for row in accent),
      nasal_zero_hz=float(rng.uniform(700, 1800)),
      nasality=float(rng.uniform(0.0, 0.8)),
      jitter=float(rng.uniform(0.004, 0.02)),
      shimmer=float(rng.uniform(0.02, 0.1)),
      fricative_hz=float(rng.uniform(3500, 6000)),
      fricative_level=float(rng.uniform(0.1, 0.5)),
  )


def sample_voices(num_speakers: int, seed: int) -> list[SpeakerVoice]:
  """Deterministic voices with alternating genders (m, f, ...) and ids "1001", "1002", ...

  Each voice has its own random stream, so speaker i is the same whatever
  ``num_speakers`` is.
  """
  return [_sample_voice(i, np.random.default_rng([_VOICE_STREAM, seed, i]))
          for i in range(num_speakers)]


# --- What is said ---------------------------------------------------------------


def _plan_utterance(voice: SpeakerVoice, seconds: float, rng: np.random.Generator,
                    sample_rate: int) -> _Plan:
  num_samples = int(round(seconds * sample_rate))
  rate = voice.speaking_rate * rng.uniform(0.9, 1.1)  # Tempo varies a little per utterance.
  t = rng.uniform(0.05, 0.15)  # Leading silence.
  end_limit = seconds - rng.uniform(0.05, 0.15)  # Trailing silence.
  syllables: list[_Syllable] = []
  while True:
    if syllables and rng.random() < 0.06:  # A short breath pause.
      t += rng.uniform(0.06, 0.2)
    duration = rng.lognormal(0.0, 0.25) / rate
    fricative = int(rng.integers(len(_FRICATIVES))) if rng.random() < 0.3 else -1
    fricative_len = min(0.4 * duration, rng.uniform(0.05, 0.12)) if fricative >= 0 else 0.0
    vowel = int(np.searchsorted(_VOWEL_CDF, rng.random() * _VOWEL_CDF[-1], side="right"))
    stress = float(rng.uniform(0.5, 1.0))
    if t + duration > end_limit:
      if syllables or end_limit - t < 0.08:
        break
      # A very short utterance still gets one (shortened) syllable.
      duration, fricative_len = end_limit - t, min(fricative_len, 0.3 * (end_limit - t))
    onset, start = int(t * sample_rate), int((t + fricative_len) * sample_rate)
    end = min(int((t + duration) * sample_rate), num_samples)
    syllables.append(_Syllable(min(vowel, _NUM_VOWELS - 1), fricative, onset, start, end, stress))
    t += duration
  return _Plan(num_samples, tuple(syllables))


def _voicing_envelope(plan: _Plan, sample_rate: int) -> np.ndarray:
  """Per-sample vocal-fold amplitude: each vowel with a 20 ms onset and a 50 ms offset."""
  env = np.zeros(plan.num_samples)
  rise, fall = 0.02 * sample_rate, 0.05 * sample_rate
  for s in plan.syllables:
    if s.end > s.start:
      n = np.arange(s.end - s.start, dtype=float)
      ramp = np.clip(np.minimum(n / rise, (n[-1] - n) / fall), 0.0, 1.0)
      env[s.start:s.end] = s.stress * np.sin(0.5 * np.pi * ramp) ** 2
  return env


def _f0_contour(voice: SpeakerVoice, plan: _Plan, rng: np.random.Generator,
                sample_rate: int) -> np.ndarray:
  """Per-sample pitch in Hz: declination, phrase wobble and accents on stressed vowels."""
  seconds = plan.num_samples / sample_rate
  t = np.arange(0.0, seconds + 0.01, 0.01)  # Prosody needs no more than a 100 Hz control rate.
  semitones = rng.normal(0.0, 0.6) + voice.f0_range * 0.4 * (0.5 - t / seconds)
  freqs, phases = rng.uniform(0.2, 1.5, 3), rng.uniform(0, 2 * np.pi, 3)
  amps = rng.normal(0.0, 0.25 * voice.f0_range, 3)
  wobble = amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])
  semitones = semitones + wobble.sum(axis=0)
  for s in plan.syllables:
    height = voice.f0_range * 0.6 * max(0.0, s.stress - 0.6) / 0.4
    centre = 0.5 * (s.start + s.end) / sample_rate
    semitones = semitones + height * np.exp(-0.5 * ((t - centre) / 0.06) ** 2)
  f0 = voice.f0_hz * 2.0 ** (semitones / 12.0)
  return np.interp(np.arange(plan.num_samples) / sample_rate, t, f0)


def _pulse_train(f0: np.ndarray, voicing: np.ndarray, voice: SpeakerVoice,
                 rng: np.random.Generator, sample_rate: int) -> np.ndarray:
  """Glottal excitation: one impulse per period, with jitter and shimmer."""
  phase = np.cumsum(f0) / sample_rate
  idx = np.flatnonzero(np.diff(np.floor(phase))) + 1  # Where the phase crosses a whole cycle.
  period = sample_rate / f0[idx]
  idx = idx + np.rint(rng.standard_normal(idx.size) * voice.jitter * period).astype(int)
  idx = np.clip(idx, 0, f0.size - 1)
  amp = voicing[idx] * np.clip(1.0 + voice.shimmer * rng.standard_normal(idx.size), 0.3, None)
  return np.bincount(idx, weights=amp, minlength=f0.size)


def _formant_tracks(voice: SpeakerVoice, plan: _Plan, times: np.ndarray,
                    sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  """Formant frequencies and bandwidths in Hz, (len(times), 5), at ``times`` in seconds.

  Each vowel holds its target over its middle 40 % and glides linearly to the
  next, as formants do in connected speech. Weakly stressed vowels are reduced
  towards the speaker's schwa, as in real speech; this also steadies the
  long-term spectrum of a voice, which makes speakers easier to tell apart.
  """
  accent = np.asarray(voice.vowel_accent) if voice.vowel_accent else 1.0
  offsets = np.ones(_NUM_FORMANTS + 1)
  offsets[:len(voice.formant_offsets)] = voice.formant_offsets
  vowels = np.concatenate([_VOWEL_FORMANTS * accent, np.full((_NUM_VOWELS, 1), _F5_HZ)], axis=1)
  targets = np.minimum(vowels * offsets * voice.vocal_tract_scale, 0.45 * sample_rate)
  bandwidths = np.append(_BASE_BANDWIDTHS * voice.formant_bandwidth_scale, _F5_BANDWIDTH)
  if not plan.syllables:
    return (np.broadcast_to(targets[0], (times.size, targets.shape[1])),
            np.broadcast_to(bandwidths, (times.size, targets.shape[1])))
  anchors, values = [], []
  for s in plan.syllables:
    reach = 0.25 + 1.5 * (s.stress - 0.5)  # Stress 0.5 .. 1: 25 % .. 100 % of the way from schwa.
    target = targets[0] + reach * (targets[s.vowel] - targets[0])
    a, b = s.start / sample_rate, s.end / sample_rate
    anchors += [a + 0.3 * (b - a), b - 0.3 * (b - a)]
    values += [target, target]
  values_arr = np.asarray(values)
  formants = np.stack([np.interp(times, anchors, values_arr[:, k])
                       for k in range(values_arr.shape[1])], axis=1)
  return formants, np.broadcast_to(bandwidths, formants.shape)


# --- Filters --------------------------------------------------------------------


def _polymul_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Row-wise product of polynomials given as (T, la) and (T, lb) coefficient arrays."""
  out = np.zeros((a.shape[0], a.shape[1] + b.shape[1] - 1))
  for i in range(b.shape[1]):
    out[:, i:i + a.shape[1]] += a * b[:, i:i + 1]
  return out


def _resonator_polys(freqs: np.ndarray, bandwidths: np.ndarray, sample_rate: int) -> np.ndarray:
  """Coefficients (..., 3) of 1 - 2 r cos(theta) z^-1 + r^2 z^-2: a pole (or zero) pair."""
  r = np.exp(-np.pi * bandwidths / sample_rate)
  theta = 2 * np.pi * freqs / sample_rate
  return np.stack([np.ones_like(r), -2 * r * np.cos(theta), r * r], axis=-1)


@functools.lru_cache(maxsize=4)
def _dft_basis(order: int) -> np.ndarray:
  """[cos | sin] of k * omega, k < order, at the rFFT bins: (order, 2 * bins)."""
  phase = np.outer(np.arange(order), 2 * np.pi * np.arange(_NFFT // 2 + 1) / _NFFT)
  return np.concatenate([np.cos(phase), np.sin(phase)], axis=1)


def _cascade_gain(formants: np.ndarray, bandwidths: np.ndarray, sample_rate: int) -> np.ndarray:
  """|H| (frames, bins) of a cascade of unity-DC-gain two-pole resonators.

  The cascade's denominator is the product of the resonators' polynomials, so
  its spectrum is a DFT of a few coefficients per frame rather than every
  resonator evaluated at every bin.
  """
  quads = _resonator_polys(formants, bandwidths, sample_rate)
  denominator = np.ones((formants.shape[0], 1))
  for k in range(formants.shape[1]):
    denominator = _polymul_rows(denominator, quads[:, k])
  # einsum rather than a BLAS matmul: single-threaded, so the same bits on any
  # machine load, and quick for an inner dimension of 11.
  parts = np.einsum("tk,kb->tb", denominator, _dft_basis(denominator.shape[1]))
  parts *= parts
  power = parts[:, :_NFFT // 2 + 1] + parts[:, _NFFT // 2 + 1:]
  dc = np.abs(denominator.sum(axis=1, keepdims=True))
  return (dc / np.sqrt(power)).astype(np.float32)


@functools.lru_cache(maxsize=256)
def _nasal_gain(freq: float, nasality: float, sample_rate: int) -> np.ndarray:
  """|H| (bins,) of a notch: a zero pair over a wider pole pair at the same frequency.

  Away from the notch the two cancel; at it the depth is about the ratio of
  their bandwidths, which ``nasality`` sets.
  """
  freq = min(freq, 0.45 * sample_rate)
  pole_bandwidth = 300.0
  zero = _resonator_polys(np.array(freq), np.array(pole_bandwidth * (1.0 - 0.9 * nasality)),
                          sample_rate)
  pole = _resonator_polys(np.array(freq), np.array(pole_bandwidth), sample_rate)
  gain = np.abs(np.fft.rfft(zero, n=_NFFT)) / np.abs(np.fft.rfft(pole, n=_NFFT))
  return gain * abs(pole.sum()) / abs(zero.sum())


def _tilt_gain(f0_hz: float, db_per_octave: float, sample_rate: int) -> np.ndarray:
  """|H| (bins,) flat up to ``f0_hz``, then falling ``db_per_octave``."""
  freqs = np.fft.rfftfreq(_NFFT, 1.0 / sample_rate)
  return (np.maximum(freqs, f0_hz) / f0_hz) ** (db_per_octave / (20 * math.log10(2)))


@functools.lru_cache(maxsize=256)
def _fricative_filter(kind: int, centre_hz: float,
                      sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  if _FRICATIVES[kind] == "S":
    band = [0.75 * centre_hz, min(1.6 * centre_hz, 0.475 * sample_rate)]
    return scipy.signal.butter(2, band, btype="bandpass", fs=sample_rate)
  if _FRICATIVES[kind] == "SH":
    band = [0.4 * centre_hz, 0.8 * centre_hz]
    return scipy.signal.butter(2, band, btype="bandpass", fs=sample_rate)
  return scipy.signal.butter(1, 1200.0, btype="highpass", fs=sample_rate)


# --- Rendering ------------------------------------------------------------------


def _frame_spectra(x: np.ndarray, pad_left: int) -> np.ndarray:
  """rFFTs of Hann-windowed frames (hop _HOP) of ``x`` after ``pad_left`` zeros."""
  total = pad_left + x.size + _WIN
  total += (_WIN - total) % _HOP  # A whole number of hops.
  padded = np.zeros(total, dtype=np.float32)  # Single precision: ample for audio, faster FFTs.
  padded[pad_left:pad_left + x.size] = x
  frames = np.lib.stride_tricks.sliding_window_view(padded, _WIN)[::_HOP]
  return scipy.fft.rfft(frames * _WINDOW, n=_NFFT, axis=1)


def _overlap_add(spectra: np.ndarray, pad_left: int, length: int) -> np.ndarray:
  """Inverse of _frame_spectra after a frame-wise zero-phase filter."""
  hops = _NFFT // _HOP
  frames = scipy.fft.irfft(spectra, n=_NFFT, axis=1).reshape(spectra.shape[0], hops, _HOP)
  # A zero-phase filter spreads each frame both ways; the part before the
  # frame wraps round to the end of the FFT buffer, so chunk j of a frame
  # belongs `shift` hops later, modulo the buffer.
  shift = (_NFFT - _WIN) // 2 // _HOP
  chunks = np.zeros((frames.shape[0] + hops - 1, _HOP))
  for j in range(hops):
    position = (j + shift) % hops
    chunks[position:position + frames.shape[0]] += frames[:, j]
  out = chunks.reshape(-1) * (2 * _HOP / _WIN)  # Overlapping Hann windows sum to _WIN / 2 / _HOP.
  start = shift * _HOP + pad_left
  return out[start:start + length]


def _fricatives(plan: _Plan, voice: SpeakerVoice, rng: np.random.Generator,
                sample_rate: int) -> np.ndarray:
  """Band-passed noise bursts, at the voice's level relative to unit RMS, before their vowels."""
  out = np.zeros(plan.num_samples)
  for s in plan.syllables:
    length = s.start - s.onset
    if s.fricative < 0 or length < 16:
      continue
    b, a = _fricative_filter(s.fricative, round(voice.fricative_hz, 1), sample_rate)
    noise = scipy.signal.lfilter(b, a, rng.standard_normal(length + 64))[64:]  # Skip the start-up.
    noise /= np.sqrt(np.mean(noise**2)) + 1e-12
    shape = np.sin(np.pi * (np.arange(length) + 0.5) / length) ** 0.7
    level = voice.fricative_level * rng.uniform(0.8, 1.25) * s.stress
    out[s.onset:s.start] += level * noise * shape
  return out


def _render(voice: SpeakerVoice, plan: _Plan, rng: np.random.Generator,
            sample_rate: int) -> np.ndarray:
  n = plan.num_samples
  voicing = _voicing_envelope(plan, sample_rate)
  f0 = _f0_contour(voice, plan, rng, sample_rate)
  pulses = _pulse_train(f0, voicing, voice, rng, sample_rate)
  # White noise of variance f0/sr has the spectral level of a unit pulse train
  # at f0, which makes breathiness a plain level ratio.
  breath_level = voicing * (voice.breathiness * math.sqrt(voice.f0_hz / sample_rate))
  breath = rng.standard_normal(n, dtype=np.float32) * breath_level

  # Source and filter meet frame by frame in the frequency domain: pulses get
  # the voice's tilt, aspiration half of it (so it fills the highs), both go
  # through the vowel's resonators and the nasal notch.
  breath_tilt = _tilt_gain(voice.f0_hz, 0.5 * voice.spectral_tilt, sample_rate)
  pulse_tilt = _tilt_gain(voice.f0_hz, voice.spectral_tilt, sample_rate)
  source = (_frame_spectra(pulses, _WIN) * (pulse_tilt / breath_tilt).astype(np.float32)
            + _frame_spectra(breath, _WIN))
  centres = (np.arange(source.shape[0]) * _HOP + _WIN / 2 - _WIN) / sample_rate
  formants, bandwidths = _formant_tracks(voice, plan, centres, sample_rate)
  nasal = _nasal_gain(voice.nasal_zero_hz * voice.vocal_tract_scale, voice.nasality, sample_rate)
  fixed = (nasal * breath_tilt).astype(np.float32)
  tract = _cascade_gain(formants, bandwidths, sample_rate) * fixed
  speech = _overlap_add(source * tract, _WIN, n).astype(np.float64)

  active = voicing > 0.5
  level = np.sqrt(np.mean(speech[active] ** 2)) if active.any() else 1e-3
  speech += level * _fricatives(plan, voice, rng, sample_rate)
  noise_level = level * 10 ** (-rng.uniform(45, 55) / 20)  # Room and microphone.
  speech += noise_level * rng.standard_normal(n, dtype=np.float32)
  speech = scipy.signal.lfilter([1.0, -1.0], [1.0, -0.995], speech)  # DC blocker (~13 Hz).
  gain = 0.5 * 10 ** (rng.uniform(-2.0, 1.0) / 20) / (np.max(np.abs(speech)) + 1e-12)
  return np.clip(speech * gain, -1.0, 1.0).astype(np.float32)


def synthesize_utterance(voice: SpeakerVoice, seconds: float, rng: np.random.Generator,
                         sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """``seconds`` of random syllables spoken by ``voice``: float32 mono, peak about 0.5."""
  return _render(voice, _plan_utterance(voice, seconds, rng, sample_rate), rng, sample_rate)


# --- The corpus on disk -------------------------------------------------------


def _read_marker(root: pathlib.Path) -> dict[str, object] | None:
  try:
    return json.loads((root / MARKER_NAME).read_text())
  except (OSError, ValueError):
    return None


def _write_flac(path: pathlib.Path, audio: np.ndarray, sample_rate: int) -> None:
  # Encoding in memory is ~2x faster than letting libsndfile seek about the file.
  buffer = io.BytesIO()
  sf.write(buffer, audio, sample_rate, format="FLAC", subtype="PCM_16")
  path.write_bytes(buffer.getvalue())


def _speakers_txt(voices: Sequence[SpeakerVoice], minutes: Sequence[float], subset: str,
                  seed: int) -> str:
  lines = [
      "; Synthetic source-filter voices made by hive.data.synthetic; not real people.",
      f"; seed={seed} speakers={len(voices)}",
      ";ID  |SEX| SUBSET           |MINUTES| NAME",
  ]
  for voice, mins in zip(voices, minutes):
    lines.append(f"{voice.speaker_id:<5}| {voice.gender.upper()} | {subset:<16} | {mins:5.2f} "
                 f"| Synthetic Voice {voice.speaker_id}")
  return "\n".join(lines) + "\n"


def _write_corpus(out: pathlib.Path, voices: Sequence[SpeakerVoice], utterances_per_speaker: int,
                  seconds: tuple[float, float], seed: int, subset: str,
                  chapters_per_speaker: int) -> list[float]:
  """Writes every speaker's audio and transcripts under ``out``; returns minutes per speaker."""
  minutes = []
  for index, voice in enumerate(voices):
    samples = 0
    chapters = np.array_split(np.arange(utterances_per_speaker), chapters_per_speaker)
    for c, utterances in enumerate(chapters):
      chapter = str(10000 + index * chapters_per_speaker + c)  # Unique across speakers.
      chapter_dir = out / subset / voice.speaker_id / chapter
      chapter_dir.mkdir(parents=True, exist_ok=True)
      transcript = []
      for u, utterance in enumerate(utterances):
        # A stream per utterance: no file depends on the order of generation.
        rng = np.random.default_rng([_UTTERANCE_STREAM, seed, index, int(utterance)])
        plan = _plan_utterance(voice, rng.uniform(*seconds), rng, SAMPLE_RATE)
        utt_id = f"{voice.speaker_id}-{chapter}-{u:04d}"
        _write_flac(chapter_dir / f"{utt_id}.flac", _render(voice, plan, rng, SAMPLE_RATE),
                    SAMPLE_RATE)
        transcript.append(f"{utt_id} {plan.transcript()}\n")
        samples += plan.num_samples
      (chapter_dir / f"{voice.speaker_id}-{chapter}.trans.txt").write_text("".join(transcript))
    minutes.append(samples / SAMPLE_RATE / 60)
  return minutes


def _remove_stale_work_dirs(root: pathlib.Path) -> None:
  """Deletes work dirs beside ``root`` left by generators that were killed.

  Only those over an hour old whose process is gone: a pid from another
  machine or container sharing the cache can look gone while it still works.
  """
  for path in root.parent.glob(f"{root.name}.*-*"):
    kind, _, pid = path.name[len(root.name) + 1:].partition("-")
    if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid():
      continue
    try:
      if time.time() - path.stat().st_mtime < 3600:
        continue
      os.kill(int(pid), 0)
    except ProcessLookupError:
      shutil.rmtree(path, ignore_errors=True)
    except OSError:
      pass  # Alive, not ours to signal, or already gone: leave it.


def _install(tmp: pathlib.Path, root: pathlib.Path, params: dict[str, object]) -> None:
  """Renames the finished ``tmp`` to ``root``, replacing an outdated corpus there."""
  if root.exists():
    marker = _read_marker(root)
    if marker == params:  # A concurrent generator finished first.
      return
    if marker is None and any(root.iterdir()):
      raise FileExistsError(f"{root} appeared during generation and is not a synthetic corpus")
    old = root.with_name(f"{root.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(root, old)
    try:
      os.rename(tmp, root)
    finally:
      shutil.rmtree(old, ignore_errors=True)
    return
  try:
    os.rename(tmp, root)
  except OSError:
    if _read_marker(root) != params:  # Unless a concurrent generator just made the same.
      raise


def generate_corpus(root: str | os.PathLike[str], num_speakers: int = 40,
                    utterances_per_speaker: int = 8, seconds: tuple[float, float] = (2.0, 4.0),
                    seed: int = 0, subset: str = "train-synthetic",
                    chapters_per_speaker: int = 2) -> pathlib.Path:
  """Writes the synthetic corpus to ``root`` in the LibriSpeech layout; returns ``root``.

  It is a cache: when ``root`` holds a corpus made with the same parameters
  (its ``SYNTHETIC.json`` marker says so) nothing is written. A new corpus is
  built beside ``root`` and renamed into place, so ``root`` is only ever
  absent, the previous corpus or the complete new one. A non-empty ``root``
  without a marker is never deleted.
  """
  root = pathlib.Path(root).expanduser()
  lo, hi = float(seconds[0]), float(seconds[1])
  if num_speakers < 1 or not 1 <= chapters_per_speaker <= utterances_per_speaker:
    raise ValueError("need num_speakers >= 1 and 1 <= chapters_per_speaker <= "
                     f"utterances_per_speaker, got {num_speakers}, {chapters_per_speaker}, "
                     f"{utterances_per_speaker}")
  if not 0 < lo <= hi:
    raise ValueError(f"seconds must be (lo, hi) with 0 < lo <= hi, got {seconds!r}")
  params: dict[str, object] = {
      "generator": "hive.data.synthetic",
      "version": GENERATOR_VERSION,
      "num_speakers": int(num_speakers),
      "utterances_per_speaker": int(utterances_per_speaker),
      "seconds": [lo, hi],
      "seed": int(seed),
      "subset": str(subset),
      "chapters_per_speaker": int(chapters_per_speaker),
      "sample_rate": SAMPLE_RATE,
  }
  if _read_marker(root) == params:
    return root
  if root.exists() and _read_marker(root) is None and any(root.iterdir()):
    raise FileExistsError(f"{root} is not empty and has no {MARKER_NAME}: not overwriting it")

  root.parent.mkdir(parents=True, exist_ok=True)
  _remove_stale_work_dirs(root)
  tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    voices = sample_voices(num_speakers, seed)
    minutes = _write_corpus(tmp, voices, utterances_per_speaker, (lo, hi), seed, subset,
                            chapters_per_speaker)
    (tmp / "SPEAKERS.TXT").write_text(_speakers_txt(voices, minutes, subset, seed))
    # The marker goes in last: a directory with a marker is complete.
    (tmp / MARKER_NAME).write_text(json.dumps(params, indent=2) + "\n")
    _install(tmp, root, params)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return root


def default_corpus_dir() -> pathlib.Path:
  """``$HIVE_CACHE/synthetic-v1``, else ``~/.cache/hive/synthetic-v1``."""
  cache = os.environ.get("HIVE_CACHE") or os.path.join("~", ".cache", "hive")
  return pathlib.Path(cache).expanduser() / "synthetic-v1"


def ensure_default_corpus(**kwargs: Any) -> pathlib.Path:
  """The default corpus, generated on first use; ``kwargs`` go to generate_corpus."""
  return generate_corpus(default_corpus_dir(), **kwargs)
