"""PyTorch reference (competitor) side of hive's speed and quality benchmarks.

This is a deliberately plain PyTorch implementation of the GE2E training setup
(Wan et al. 2018, "Generalized End-to-End Loss for Speaker Verification") with
the d-vector network of Resemblyzer's ``VoiceEncoder``, plus timing helpers for
Resemblyzer's own inference pipeline.  It is the baseline hive is compared
against, so it aims to be a faithful, idiomatic torch version, not a tuned one.

Training setup (mirrors the GE2E paper / Resemblyzer's training recipe):

* network: ``nn.LSTM(40, 256, 3, batch_first=True)`` -> last hidden state of the
  top layer -> ``nn.Linear(256, 256)`` -> ReLU -> L2 normalisation
  (same module names as ``resemblyzer.VoiceEncoder``, so its ``state_dict``
  loads directly; 1,423,616 parameters);
* GE2E softmax loss with learnable ``w`` (init 10, clamped to > 1e-6) and ``b``
  (init -5), exclusive (leave-one-out) centroid for the utterance's own
  speaker, mean cross-entropy over the ``N*M`` rows;
* ``Adam(lr=1e-4)``; the ``w``/``b`` parameter group uses ``lr * 0.01``
  (the paper's x0.01 gradient scale; with Adam a gradient scale is nearly a
  no-op, so it is expressed as a learning-rate scale);
* gradient clipping by global L2 norm 3.0 over all trainable parameters
  (network + w + b), applied before ``optimizer.step()``.

Benchmark-only dependencies (torch, resemblyzer, webrtcvad) are listed in
``requirements-bench.txt``; nothing in ``hive`` imports this module.

Run a smoke benchmark::

    python benchmarks/reference_torch.py                   # small shapes
    python benchmarks/reference_torch.py --reference --threads 2 \\
        --audio-dir ../shared/data/speechocean762/wav --n-files 20
"""

from __future__ import annotations

import argparse
import functools
import glob
import json
import os
import resource
import sys
import time
import warnings
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

# Resemblyzer's hyper-parameters (resemblyzer/hparams.py).
MEL_N_CHANNELS = 40
HIDDEN_SIZE = 256
EMBEDDING_SIZE = 256
NUM_LAYERS = 3

# GE2E training hyper-parameters.
LEARNING_RATE = 1e-4
WB_LR_SCALE = 0.01
CLIP_NORM = 3.0
W_INIT = 10.0
B_INIT = -5.0
W_MIN = 1e-6


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------
class DVectorEncoder(nn.Module):
    """Resemblyzer's ``VoiceEncoder`` network, without the weight loading."""

    def __init__(self, n_mels: int = MEL_N_CHANNELS, hidden: int = HIDDEN_SIZE,
                 emb: int = EMBEDDING_SIZE, layers: int = NUM_LAYERS):
        super().__init__()
        # Same attribute names as resemblyzer.VoiceEncoder -> compatible state_dict.
        self.lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, emb)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """mels: [B, T, n_mels] float32 -> embeddings [B, emb], L2-normalised."""
        _, (hidden, _) = self.lstm(mels)
        embeds_raw = self.relu(self.linear(hidden[-1]))
        # Same normalisation as Resemblyzer (no epsilon).
        return embeds_raw / torch.norm(embeds_raw, dim=1, keepdim=True)


def make_model(pretrained: bool = False, seed: int | None = 0) -> DVectorEncoder:
    """Build the d-vector network (PyTorch default init, seeded).

    ``pretrained=True`` loads Resemblyzer's shipped ``pretrained.pt`` weights
    (needs the ``resemblyzer`` package; no download).
    """
    if seed is not None:
        torch.manual_seed(seed)
    model = DVectorEncoder()
    if pretrained:
        ckpt = torch.load(_resemblyzer_weights_path(), map_location="cpu")
        state = {k: v for k, v in ckpt["model_state"].items() if k in model.state_dict()}
        model.load_state_dict(state, strict=True)
    return model


def make_ge2e_params(w_init: float = W_INIT, b_init: float = B_INIT):
    """The learnable GE2E scale ``w`` and bias ``b`` (scalar parameters)."""
    w = nn.Parameter(torch.tensor(float(w_init)))
    b = nn.Parameter(torch.tensor(float(b_init)))
    return w, b


def make_optimizer(model: nn.Module, w: torch.Tensor, b: torch.Tensor,
                   lr: float = LEARNING_RATE, wb_lr_scale: float = WB_LR_SCALE):
    return torch.optim.Adam([
        {"params": list(model.parameters()), "lr": lr},
        {"params": [w, b], "lr": lr * wb_lr_scale},
    ], lr=lr)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------
# GE2E softmax loss
# --------------------------------------------------------------------------
def ge2e_similarity(emb: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                    eps: float = 1e-8) -> torch.Tensor:
    """Scaled cosine-similarity matrix of GE2E.

    emb: [N, M, D] (N speakers x M utterances).  Returns [N*M, N] logits
    ``S[(j,i), k] = w * cos(e_ji, c_k) + b`` where ``c_k`` is the mean of
    speaker k's embeddings, except for k == j where the exclusive centroid
    ``c_j^(-i) = (sum_m e_jm - e_ji) / (M - 1)`` is used.  ``w`` is clamped
    to ``>= 1e-6``.  Rows are ordered speaker-major: row ``j*M + i``.
    """
    n, m, d = emb.shape
    if m < 2:
        raise ValueError("GE2E needs at least 2 utterances per speaker")
    emb_n = emb / emb.norm(dim=-1, keepdim=True).clamp_min(eps)
    sums = emb.sum(dim=1)                                    # [N, D]
    centroids = sums / m                                     # [N, D]
    excl = (sums[:, None, :] - emb) / (m - 1)                # [N, M, D]
    centroids_n = centroids / centroids.norm(dim=-1, keepdim=True).clamp_min(eps)
    excl_n = excl / excl.norm(dim=-1, keepdim=True).clamp_min(eps)

    sim = torch.einsum("jid,kd->jik", emb_n, centroids_n)    # [N, M, N]
    own = (emb_n * excl_n).sum(dim=-1)                       # [N, M]
    mask = torch.eye(n, dtype=torch.bool, device=emb.device)[:, None, :]  # [N,1,N]
    sim = torch.where(mask, own[:, :, None], sim)
    w_pos = torch.clamp(w, min=W_MIN)
    return (w_pos * sim + b).reshape(n * m, n)


def ge2e_loss(emb: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GE2E softmax loss, mean over the N*M utterances.

    ``L(e_ji) = -S_ji,j + log sum_k exp(S_ji,k)``, i.e. cross-entropy of each
    row of the similarity matrix against the utterance's own speaker.
    """
    n, m, _ = emb.shape
    logits = ge2e_similarity(emb, w, b)
    targets = torch.arange(n, device=emb.device).repeat_interleave(m)
    return nn.functional.cross_entropy(logits, targets)


# --------------------------------------------------------------------------
# Training step and throughput
# --------------------------------------------------------------------------
def train_step(model: nn.Module, w: torch.Tensor, b: torch.Tensor,
               optimizer: torch.optim.Optimizer, mels: torch.Tensor,
               n_speakers: int, n_utts: int, clip_norm: float = CLIP_NORM,
               autocast: bool = False) -> float:
    """One full GE2E step: forward + loss + backward + clip + Adam update.

    mels: [N*M, T, n_mels], speaker-major (rows j*M .. j*M+M-1 are speaker j).
    ``autocast``: the network under ``torch.autocast("cpu", torch.bfloat16)``
    (the LSTM and linear layer in bf16 through oneDNN; the loss in float32).
    Returns the loss (python float; forces completion of the step).
    """
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        emb = model(mels)
    emb = (emb.float() if autocast else emb).reshape(n_speakers, n_utts, -1)
    loss = ge2e_loss(emb, w, b)
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    torch.nn.utils.clip_grad_norm_(params, clip_norm, norm_type=2.0)
    optimizer.step()
    return float(loss.detach())


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes on macOS
        return rss / (1024 * 1024)
    return rss / 1024


def torch_train_throughput(n_speakers: int = 64, n_utts: int = 10, frames: int = 160,
                           n_mels: int = MEL_N_CHANNELS, warmup: int = 2, steps: int = 5,
                           threads: int | None = None, seed: int = 0) -> dict:
    """Time full GE2E training steps of the torch reference on random input.

    The input batch is a fixed-seed ``torch.randn`` tensor [N*M, T, n_mels]
    (float32); the same batch is reused for every step.  ``warmup`` steps are
    run untimed, then each of ``steps`` steps is timed with
    ``time.perf_counter``.
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
    if n_mels != MEL_N_CHANNELS:
        raise ValueError("the Resemblyzer network takes 40 mel channels")
    model = make_model(seed=seed)
    model.train()
    w, b = make_ge2e_params()
    optimizer = make_optimizer(model, w, b)
    gen = torch.Generator().manual_seed(seed)
    mels = torch.randn(n_speakers * n_utts, frames, n_mels, generator=gen,
                       dtype=torch.float32)

    losses = []
    for _ in range(warmup):
        losses.append(train_step(model, w, b, optimizer, mels, n_speakers, n_utts))
    step_seconds, step_cpu_seconds = [], []
    for _ in range(steps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        loss = train_step(model, w, b, optimizer, mels, n_speakers, n_utts)
        step_seconds.append(time.perf_counter() - t0)
        step_cpu_seconds.append(time.process_time() - c0)
        losses.append(loss)

    median = float(np.median(step_seconds))
    return {
        "step_seconds": step_seconds,
        "median_step_s": median,
        "utterances_per_s": n_speakers * n_utts / median,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        # extras
        # process CPU time per step (all threads); wall >> cpu/threads hints at
        # CPU contention from other processes during the measurement
        "step_cpu_seconds": step_cpu_seconds,
        "n_speakers": n_speakers,
        "n_utts": n_utts,
        "frames": frames,
        "warmup": warmup,
        "n_params": count_parameters(model) + 2,  # + w, b
        "losses": losses,
        "peak_rss_mb": peak_rss_mb(),
    }


# --------------------------------------------------------------------------
# Resemblyzer inference (pretrained weights shipped in the package)
# --------------------------------------------------------------------------
def _import_resemblyzer():
    # webrtcvad 2.0.10 imports pkg_resources (UserWarning with setuptools 80.x);
    # resemblyzer imports scipy.ndimage.morphology (DeprecationWarning).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import resemblyzer  # noqa: F401
        from resemblyzer import VoiceEncoder, preprocess_wav
    return resemblyzer, VoiceEncoder, preprocess_wav


def _resemblyzer_weights_path() -> str:
    resemblyzer, _, _ = _import_resemblyzer()
    return os.path.join(os.path.dirname(resemblyzer.__file__), "pretrained.pt")


@functools.lru_cache(maxsize=1)
def get_resemblyzer_encoder():
    """resemblyzer.VoiceEncoder on CPU with its shipped pretrained.pt (cached)."""
    _, VoiceEncoder, _ = _import_resemblyzer()
    enc = VoiceEncoder("cpu", verbose=False)
    enc.eval()
    return enc


def list_audio_files(root: str, n: int | None = None, pattern: str = "**/*.flac") -> list:
    """Sorted audio files under ``root`` (first ``n`` if given)."""
    files = sorted(glob.glob(os.path.join(root, pattern), recursive=True))
    return files[:n] if n is not None else files


def _audio_duration_s(path: str) -> float:
    import soundfile as sf
    info = sf.info(str(path))
    return info.frames / float(info.samplerate)


def resemblyzer_embed_throughput(paths: Sequence[str], max_files: int | None = None,
                                 warmup: int = 1, threads: int | None = None) -> dict:
    """Time Resemblyzer's own pipeline: ``preprocess_wav(path)`` (load, resample,
    volume normalisation, VAD silence trimming) then ``embed_utterance(wav)``.

    Durations of the *original* files (soundfile ``info``) are read before
    timing.  ``warmup`` files (the first ones of ``paths``) are embedded once,
    untimed, to exclude one-off initialisation; then every file is timed.
    Encoder construction (weight loading) is timed separately as ``load_s``.
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
    paths = [str(p) for p in paths]
    if max_files is not None:
        paths = paths[:max_files]
    if not paths:
        raise ValueError("no audio files given")
    _, _, preprocess_wav = _import_resemblyzer()

    t0 = time.perf_counter()
    encoder = get_resemblyzer_encoder()
    load_s = time.perf_counter() - t0

    durations = [_audio_duration_s(p) for p in paths]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in paths[:warmup]:
            encoder.embed_utterance(preprocess_wav(p))

        preprocess_s = 0.0
        embed_s = 0.0
        embeddings = []
        t_start = time.perf_counter()
        for p in paths:
            t0 = time.perf_counter()
            wav = preprocess_wav(p)
            t1 = time.perf_counter()
            emb = encoder.embed_utterance(wav)
            t2 = time.perf_counter()
            preprocess_s += t1 - t0
            embed_s += t2 - t1
            embeddings.append(emb)
        total_s = time.perf_counter() - t_start

    seconds_of_audio = float(sum(durations))
    return {
        "files": len(paths),
        "seconds_of_audio": seconds_of_audio,
        "total_s": total_s,
        "preprocess_s": preprocess_s,
        "embed_s": embed_s,
        "audio_seconds_per_second": seconds_of_audio / total_s,
        "embeddings": np.stack(embeddings).astype(np.float32),
        # extras
        "load_s": load_s,
        "warmup_files": min(warmup, len(paths)),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }


def resemblyzer_embed_files(paths: Iterable[str]) -> np.ndarray:
    """Resemblyzer utterance embeddings [n, 256], L2-normalised, in the given order."""
    _, _, preprocess_wav = _import_resemblyzer()
    encoder = get_resemblyzer_encoder()
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in paths:
            out.append(encoder.embed_utterance(preprocess_wav(str(p))))
    emb = np.stack(out).astype(np.float32) if out else np.zeros((0, EMBEDDING_SIZE), np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def resemblyzer_embed_waves(waves: Iterable[np.ndarray], sample_rate: int = 16000) -> np.ndarray:
    """Like resemblyzer_embed_files, for waves already in memory (Resemblyzer's own
    preprocessing: volume normalisation and VAD trimming, then embed_utterance)."""
    _, _, preprocess_wav = _import_resemblyzer()
    encoder = get_resemblyzer_encoder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = [encoder.embed_utterance(preprocess_wav(w, source_sr=sample_rate)) for w in waves]
    emb = np.stack(out).astype(np.float32) if out else np.zeros((0, EMBEDDING_SIZE), np.float32)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------
# CLI smoke benchmark
# --------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", action="store_true",
                    help="reference shape N=64, M=10, 160 frames (default: small smoke shape)")
    ap.add_argument("--speakers", type=int, default=None)
    ap.add_argument("--utts", type=int, default=None)
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--audio-dir", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
        "speechocean762", "wav"))
    ap.add_argument("--n-files", type=int, default=None)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-embed", action="store_true")
    args = ap.parse_args(argv)

    n_spk = args.speakers or (64 if args.reference else 8)
    n_utt = args.utts or (10 if args.reference else 5)
    steps = args.steps or (5 if args.reference else 3)
    n_files = args.n_files or (20 if args.reference else 5)

    if not args.skip_train:
        res = torch_train_throughput(n_speakers=n_spk, n_utts=n_utt, frames=args.frames,
                                     warmup=args.warmup, steps=steps, threads=args.threads)
        print("torch_train_throughput:", json.dumps(res, indent=2))

    if not args.skip_embed:
        files = list_audio_files(args.audio_dir, n_files) if os.path.isdir(args.audio_dir) else []
        if not files:
            print(f"resemblyzer_embed_throughput: skipped (no audio under {args.audio_dir})")
        else:
            res = resemblyzer_embed_throughput(files, threads=args.threads)
            emb = res.pop("embeddings")
            res["embeddings_shape"] = list(emb.shape)
            print("resemblyzer_embed_throughput:", json.dumps(res, indent=2))
    print(f"peak_rss_mb: {peak_rss_mb():.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
