"""Tests for the PyTorch reference side of the benchmarks (benchmarks/reference_torch.py).

torch / resemblyzer are benchmark-only dependencies (requirements-bench.txt);
this whole module is skipped when torch is not installed.
"""

import importlib.util
import math
import os
import pathlib
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

_REPO = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location(
    "benchmarks_reference_torch", _REPO / "benchmarks" / "reference_torch.py")
rt = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = rt
_SPEC.loader.exec_module(rt)

_AUDIO_DIR = str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762" / "wav")


def _wb(w=10.0, b=-5.0, dtype=torch.float64):
    return torch.tensor(w, dtype=dtype), torch.tensor(b, dtype=dtype)


def test_ge2e_hand_example_orthogonal_speakers():
    # N=2 speakers, M=2 utterances, D=2.  Speaker 0 says (1,0) twice, speaker 1
    # says (0,1) twice: all centroids (inclusive and exclusive) equal the
    # speaker's own direction, so every row of the similarity matrix is
    #   own speaker:   cos = 1 -> w*1 + b = 10 - 5 =  5
    #   other speaker: cos = 0 -> w*0 + b =      -5
    # and each row's cross-entropy is -5 + log(e^5 + e^-5) = log(1 + e^-10)
    # = 4.5399e-5; the mean over the 4 rows is the same value.
    emb = torch.tensor([[[1.0, 0.0], [1.0, 0.0]],
                        [[0.0, 1.0], [0.0, 1.0]]], dtype=torch.float64)
    w, b = _wb()
    logits = rt.ge2e_similarity(emb, w, b)
    expected_logits = torch.tensor([[5.0, -5.0], [5.0, -5.0],
                                    [-5.0, 5.0], [-5.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(logits, expected_logits)
    loss = rt.ge2e_loss(emb, w, b)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-10.0)), rel=1e-9)
    assert loss.item() == pytest.approx(4.539889921686465e-05, rel=1e-9)


def test_ge2e_hand_example_exclusive_centroid():
    # N=2, M=2, D=2 with orthogonal unit embeddings inside each speaker:
    #   speaker 0: e00 = (1, 0),  e01 = (0, 1)
    #   speaker 1: e10 = (-1, 0), e11 = (0, -1)
    # Centroids: c0 = (.5, .5) -> direction (1,1)/sqrt2, c1 = -(1,1)/sqrt2.
    # Row e00: own speaker uses the EXCLUSIVE centroid c0^(-0) = e01 = (0,1),
    #   cos(e00, (0,1)) = 0             -> logit 10*0 - 5 = -5
    #   cos(e00, c1) = -1/sqrt2          -> logit -10/sqrt2 - 5 = -5 - 5*sqrt2
    #   loss = 5 + log(e^-5 + e^(-5-5sqrt2)) = log(1 + e^(-5*sqrt2)) = 8.4897e-4
    # By symmetry all four rows are identical, so that is also the mean.
    # (An inclusive own centroid would give log(1 + e^(-10*sqrt2)) = 7.2e-7.)
    emb = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],
                        [[-1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)
    w, b = _wb()
    s2 = math.sqrt(2.0)
    logits = rt.ge2e_similarity(emb, w, b)
    expected_logits = torch.tensor([[-5.0, -5.0 - 5 * s2], [-5.0, -5.0 - 5 * s2],
                                    [-5.0 - 5 * s2, -5.0], [-5.0 - 5 * s2, -5.0]],
                                   dtype=torch.float64)
    torch.testing.assert_close(logits, expected_logits)
    loss = rt.ge2e_loss(emb, w, b)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-5.0 * s2)), rel=1e-9)
    assert loss.item() == pytest.approx(8.489652317343628e-04, rel=1e-9)


def _naive_ge2e(emb, w, b):
    """Plain-python GE2E softmax loss (mean over rows) for cross-checking."""
    n, m, d = len(emb), len(emb[0]), len(emb[0][0])
    w = max(w, 1e-6)

    def cos(u, v):
        dot = sum(x * y for x, y in zip(u, v))
        return dot / (math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)))

    total = 0.0
    for j in range(n):
        for i in range(m):
            e = emb[j][i]
            logits = []
            for k in range(n):
                if k == j:
                    others = [emb[k][t] for t in range(m) if t != i]
                else:
                    others = [emb[k][t] for t in range(m)]
                c = [sum(o[x] for o in others) / len(others) for x in range(d)]
                logits.append(w * cos(e, c) + b)
            mx = max(logits)
            lse = mx + math.log(sum(math.exp(s - mx) for s in logits))
            total += lse - logits[j]
    return total / (n * m)


@pytest.mark.parametrize("n,m,d,w,b", [(4, 3, 5, 10.0, -5.0), (3, 4, 8, 7.3, -2.1),
                                       (5, 2, 3, -1.0, 0.5)])  # w<0 -> clamped to 1e-6
def test_ge2e_matches_naive_loop(n, m, d, w, b):
    rng = np.random.default_rng(n * 100 + m * 10 + d)
    emb = rng.standard_normal((n, m, d))
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    got = rt.ge2e_loss(torch.tensor(emb), *_wb(w, b)).item()
    assert got == pytest.approx(_naive_ge2e(emb.tolist(), w, b), rel=1e-10, abs=1e-12)
    # float32 path (as used in training) agrees too
    got32 = rt.ge2e_loss(torch.tensor(emb, dtype=torch.float32),
                         *_wb(w, b, torch.float32)).item()
    assert got32 == pytest.approx(got, rel=1e-5)


def test_model_parameter_count_and_shape():
    model = rt.make_model()
    assert rt.count_parameters(model) == 1_423_616
    x = torch.randn(3, 20, 40)
    y = model(x)
    assert y.shape == (3, 256)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(3))


def test_model_matches_resemblyzer_voice_encoder():
    pytest.importorskip("resemblyzer")
    _, VoiceEncoder, _ = rt._import_resemblyzer()
    enc = VoiceEncoder("cpu", verbose=False)
    model = rt.make_model()
    assert rt.count_parameters(model) == sum(p.numel() for p in enc.parameters())
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in enc.state_dict().items()}
    # with the shipped weights, the two networks compute the same function
    pre = rt.make_model(pretrained=True).eval()
    x = torch.rand(4, 160, 40)
    with torch.no_grad():
        torch.testing.assert_close(pre(x), enc(x))


def test_train_step_updates_params():
    n, m = 3, 2
    model = rt.make_model(seed=1)
    w, b = rt.make_ge2e_params()
    opt = rt.make_optimizer(model, w, b)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(1e-4), pytest.approx(1e-6)]
    before = [p.detach().clone() for p in model.parameters()]
    mels = torch.randn(n * m, 12, 40, generator=torch.Generator().manual_seed(0))
    loss = rt.train_step(model, w, b, opt, mels, n, m)
    assert math.isfinite(loss)
    assert w.grad is not None and b.grad is not None
    assert any(not torch.equal(p0, p) for p0, p in zip(before, model.parameters()))
    # Adam's first step moves each parameter by ~lr, i.e. w and b by ~1e-6
    # (float32 spacing near 10 / 5 is 9.5e-7 / 4.8e-7, so only bound it).
    assert 0.0 < abs(w.item() - 10.0) <= 2e-6
    assert 0.0 < abs(b.item() + 5.0) <= 2e-6
    # global gradient norm after clipping is <= 3
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    assert torch.norm(torch.stack([g.norm() for g in grads])).item() <= 3.0 + 1e-4


def test_torch_train_throughput_tiny():
    res = rt.torch_train_throughput(n_speakers=2, n_utts=2, frames=8, warmup=1, steps=2)
    for key in ("step_seconds", "median_step_s", "utterances_per_s", "threads",
                "torch_version"):
        assert key in res
    assert len(res["step_seconds"]) == 2
    assert res["utterances_per_s"] == pytest.approx(4 / res["median_step_s"])
    assert rt.peak_rss_mb() > 0


@pytest.mark.skipif(not os.path.isdir(_AUDIO_DIR), reason="speechocean762 audio not available")
def test_resemblyzer_embed_on_real_audio():
    pytest.importorskip("resemblyzer")
    files = rt.list_audio_files(_AUDIO_DIR, 2)
    assert len(files) == 2
    res = rt.resemblyzer_embed_throughput(files, warmup=0)
    assert res["files"] == 2 and res["embeddings"].shape == (2, 256)
    assert res["seconds_of_audio"] > 0 and res["audio_seconds_per_second"] > 0
    emb = rt.resemblyzer_embed_files(files)
    assert emb.shape == (2, 256)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(emb, res["embeddings"], atol=1e-5)
