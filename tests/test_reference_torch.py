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


def test_train_step_moves_w_and_never_b():
    """GE2E's softmax loss adds b to every logit of a row, so it is invariant to b: b's
    gradient is zero and Adam leaves b where it is, while w (the scale) does move.
    In float64, so that "zero" is not blurred by float32 rounding."""
    n, m = 3, 2
    model = rt.make_model(seed=1).double()
    w, b = (torch.nn.Parameter(p.detach().double()) for p in rt.make_ge2e_params())
    opt = rt.make_optimizer(model, w, b)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(1e-4), pytest.approx(1e-6)]
    mels = torch.randn(n * m, 12, 40, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)
    emb = model(mels).detach().reshape(n, m, -1)
    # The invariance itself: shifting b by 3 changes no loss value.
    assert rt.ge2e_loss(emb, w.detach(), b.detach() + 3.0).item() == pytest.approx(
        rt.ge2e_loss(emb, w.detach(), b.detach()).item(), rel=1e-12)
    before = [p.detach().clone() for p in model.parameters()]
    loss = rt.train_step(model, w, b, opt, mels, n, m)
    assert math.isfinite(loss)
    assert abs(b.grad.item()) < 1e-12 < abs(w.grad.item())
    assert any(not torch.equal(p0, p) for p0, p in zip(before, model.parameters()))
    # Adam's first step moves a parameter with a real gradient by ~lr (1e-6 for w);
    # b's update is lr * g / (|g| + 1e-8) with |g| < 1e-12: below 1e-9.
    assert abs(w.item() - 10.0) == pytest.approx(1e-6, rel=1e-3)
    assert abs(b.item() + 5.0) < 1e-9
    # global gradient norm after clipping is <= 3
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    assert torch.norm(torch.stack([g.norm() for g in grads])).item() <= 3.0 + 1e-4


def test_autocast_runs_the_network_in_bfloat16():
    """`autocast=True` is PyTorch's CPU mixed precision: the LSTM and linear layer compute
    in bf16 (the embedding comes out bf16), the loss in float32, close to float32's."""
    n, m = 3, 2
    mels = torch.randn(n * m, 12, 40, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert rt.make_model(seed=1)(mels).dtype == torch.bfloat16
    losses = {}
    for autocast in (False, True):
        model = rt.make_model(seed=1)
        w, b = rt.make_ge2e_params()
        opt = rt.make_optimizer(model, w, b)
        losses[autocast] = rt.train_step(model, w, b, opt, mels, n, m, autocast=autocast)
    assert losses[True] != losses[False]
    assert losses[True] == pytest.approx(losses[False], rel=0.02)


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


# --------------------------------------------------------------------------
# The TDNN twin (benchmarks/reference_torch_tdnn.py) against hive itself
# --------------------------------------------------------------------------
sys.path.insert(0, str(_REPO / "benchmarks"))
import reference_torch_tdnn as rtt  # noqa: E402

_S, _N, _M, _T = 10, 4, 3, 24  # Speakers in the head; a batch of N x M crops of T frames.


def _tdnn_config():
    """configs/release.py's recipe, shrunk: 16 channels, N=4 x M=3 crops of 24 frames."""
    spec = importlib.util.spec_from_file_location("release_config",
                                                  _REPO / "configs" / "release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.data.n_speakers, c.data.n_utterances, c.data.crop_frames = _N, _M, _T
    c.model.tdnn.channels = 16
    c.augment.enabled = False
    c.train.schedule = "constant"
    return c


def _tdnn_batch():
    rng = np.random.default_rng(3)
    return {"features": rng.standard_normal((_N * _M, _T, 40), dtype=np.float32),
            "speaker": np.repeat(np.array([1, 4, 5, 8], np.int32), _M),
            "gender": np.repeat(np.array([0, 1, 1, 0], np.int32), _M)}


@pytest.fixture(scope="module")
def hive_tdnn():
    """(config, batch, initial TrainState) of the shrunk release recipe, built once."""
    import jax
    from hive import train
    config = _tdnn_config()
    state = jax.jit(lambda r: train.create_train_state(config, _S, r))(jax.random.PRNGKey(0))
    return config, _tdnn_batch(), state


def _torch_twin(params):
    import jax
    return rtt.load_hive_params(rtt.SpeakerModel(_S, channels=16), jax.device_get(params))


def test_tdnn_twin_computes_what_hive_computes(hive_tdnn):
    """With hive's parameters copied in, the same embedding, logits and multi-task loss."""
    import jax.numpy as jnp
    import ml_collections
    from hive import losses
    config, batch, state = hive_tdnn
    out = state.apply_fn({"params": state.params["model"]}, jnp.asarray(batch["features"]))
    twin = _torch_twin(state.params["model"])
    with torch.no_grad():
        got = twin(torch.from_numpy(batch["features"]))
    for name, value in zip(("embedding", "speaker_logits", "gender_logit"), got):
        np.testing.assert_allclose(value.numpy(), np.asarray(out[name]), atol=2e-6)
    loss_config = ml_collections.ConfigDict(dict(config.loss, n_utterances=_M))
    weights = {k: float(config.loss.weights[k]) for k in rtt.WEIGHTS}
    assert weights == rtt.WEIGHTS
    hive_loss, _ = losses.multitask_loss(out, batch, {"w": 10.0, "b": -5.0}, weights, loss_config)
    w, b = torch.tensor(10.0), torch.tensor(-5.0)
    torch_loss = rtt.multitask_loss(got, torch.from_numpy(batch["speaker"]).long(),
                                    torch.from_numpy(batch["gender"]), w, b, _M)
    assert torch_loss.item() == pytest.approx(float(hive_loss), rel=1e-5)


def test_tdnn_twin_trains_like_hive_for_20_steps(hive_tdnn):
    """Same start, same batch, same clipping and AdamW: float32 losses agree step by step."""
    import functools
    import jax
    from hive import train
    config, batch, state = hive_tdnn
    twin = _torch_twin(state.params["model"])
    w, b = (torch.nn.Parameter(torch.tensor(v)) for v in (10.0, -5.0))
    opt = rtt.make_optimizer(twin, w, b, lr=config.train.learning_rate,
                             weight_decay=config.train.weight_decay,
                             loss_lr_scale=config.train.loss_params_lr_scale)
    step = jax.jit(functools.partial(train.train_step, config=config))
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
    hive_losses, torch_losses = [], []
    for _ in range(20):
        state, metrics = step(state, batch)
        hive_losses.append(float(metrics["loss"]))
        torch_losses.append(rtt.train_step(twin, w, b, opt, tensors["features"],
                                           tensors["speaker"].long(), tensors["gender"], _M))
    assert hive_losses[-1] < 0.8 * hive_losses[0]  # It learns: the comparison means something.
    np.testing.assert_allclose(torch_losses, hive_losses, rtol=2e-3)


def test_tdnn_twin_autocast_is_bfloat16_and_close():
    batch = _tdnn_batch()
    torch.manual_seed(0)
    twin = rtt.SpeakerModel(_S, channels=16)
    x = torch.from_numpy(batch["features"])
    with torch.no_grad():
        full = twin(x)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert twin.encoder.conv_0(x.transpose(1, 2)).dtype == torch.bfloat16
            half = twin(x)[0]
    assert half.dtype == torch.float32
    assert 0 < torch.max(torch.abs(half - full)).item() < 0.05


def test_benchmark_races_train_both_sides_the_same_way():
    """benchmarks/train_step.py builds hive from its configs and PyTorch from these modules'
    defaults: the optimiser, clipping, loss weights and network sizes must agree."""
    import inspect
    import train_step
    lstm = train_step.hive_config(train_step.RACES["lstm"], "f32")
    assert (lstm.train.learning_rate, lstm.train.loss_params_lr_scale, lstm.train.grad_clip,
            lstm.train.weight_decay, lstm.train.schedule) == (
                rt.LEARNING_RATE, rt.WB_LR_SCALE, rt.CLIP_NORM, 0.0, "constant")
    assert (lstm.loss.ge2e_w_init, lstm.loss.ge2e_b_init) == (rt.W_INIT, rt.B_INIT)
    assert dict(lstm.loss.weights) == dict(ge2e=1.0, triplet=0.0, speaker_id=0.0, gender=0.0)
    assert (lstm.model.lstm.hidden, lstm.model.lstm.layers, lstm.model.embed_dim) == (
        rt.HIDDEN_SIZE, rt.NUM_LAYERS, rt.EMBEDDING_SIZE)

    tdnn = train_step.hive_config(train_step.RACES["tdnn"], "bf16")
    optimiser = inspect.signature(rtt.make_optimizer).parameters
    assert (tdnn.train.learning_rate, tdnn.train.weight_decay,
            tdnn.train.loss_params_lr_scale) == (optimiser["lr"].default,
                                                 optimiser["weight_decay"].default,
                                                 optimiser["loss_lr_scale"].default)
    assert tdnn.train.grad_clip == inspect.signature(rtt.train_step).parameters[
        "clip_norm"].default
    assert dict(tdnn.loss.weights) == rtt.WEIGHTS
    assert (tdnn.loss.triplet_margin, tdnn.loss.triplet_mining, tdnn.loss.speaker_margin,
            tdnn.loss.speaker_scale, tdnn.model.speaker_head) == (
                rtt.TRIPLET_MARGIN, "batch_hard", rtt.SPEAKER_MARGIN, rtt.SPEAKER_SCALE, "cosine")
    encoder = inspect.signature(rtt.TDNNEmbedder).parameters
    assert (tdnn.model.tdnn.channels, tuple(tdnn.model.tdnn.dilations), tdnn.model.embed_dim) == (
        encoder["channels"].default, encoder["dilations"].default, encoder["embed_dim"].default)
    assert not tdnn.augment.enabled and tdnn.model.dtype == "bfloat16"
