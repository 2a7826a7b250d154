"""PyTorch twin of hive's shipped TDNN model and its multi-task training step.

The second reference of the training-step race (benchmarks/train_step.py): the
encoder users actually train (configs/release.py), written in plain, idiomatic
PyTorch (eager mode, channels-first `Conv1d`) so that hive races it at equal
work. It computes what hive computes:

* encoder (hive/models/tdnn.py): Conv(5) -> ReLU -> LayerNorm; three residual
  blocks [dilated Conv(3) -> ReLU -> LN -> Conv(1) -> ReLU -> LN -> squeeze-
  excitation]; the blocks' outputs concatenated -> Conv(1) -> ReLU; attentive
  statistics pooling (weighted mean and standard deviation); LayerNorm; Linear;
* model (hive/models/model.py): per-utterance mean normalisation of the mels,
  L2-normalised embedding, a cosine speaker head and a linear gender head;
* losses (hive/losses.py): GE2E softmax (learned w, b) + batch-hard triplet on
  cosines + AM-softmax speaker-ID + gender binary cross-entropy, weighted;
* optimiser (hive/train.py): global-norm clipping over every parameter, then
  AdamW for the model and Adam at 0.01 x the learning rate for GE2E's w, b.

Same layer names, shapes and epsilons as Flax (LayerNorm eps 1e-6, 'SAME'
padding), so `load_hive_params` copies a hive parameter tree in and both sides
then compute the same function (tests/test_reference_torch.py checks it).
`autocast=True` trains in bfloat16 the way PyTorch users do on CPU
(`torch.autocast("cpu", torch.bfloat16)`: convolutions and linear layers in
bf16, normalisation and losses in float32).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import reference_torch

LN_EPS = 1e-6  # Flax's LayerNorm default (PyTorch's is 1e-5).
WEIGHTS = dict(ge2e=1.0, triplet=1.0, speaker_id=1.0, gender=0.2)  # configs/release.py
TRIPLET_MARGIN = 0.3
SPEAKER_MARGIN, SPEAKER_SCALE = 0.2, 30.0
NORM_EPS = 1e-8  # hive's l2_normalise: x / sqrt(|x|^2 + eps).


def l2_normalise(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
  return x / torch.sqrt(torch.sum(x * x, dim=dim, keepdim=True) + NORM_EPS)


class ChannelNorm(nn.LayerNorm):
  """LayerNorm over the channels of a channels-first [B, C, T] tensor."""

  def forward(self, x):
    return super().forward(x.transpose(1, 2)).transpose(1, 2)


class SEBlock(nn.Module):
  def __init__(self, channels: int, bottleneck: int = 64):
    super().__init__()
    self.dense_0, self.dense_1 = nn.Linear(channels, bottleneck), nn.Linear(bottleneck, channels)

  def forward(self, x):  # [B, C, T]
    s = torch.relu(self.dense_0(x.mean(dim=2)))
    return x * torch.sigmoid(self.dense_1(s))[:, :, None]


class TDNNBlock(nn.Module):
  def __init__(self, channels: int, kernel: int, dilation: int):
    super().__init__()
    self.conv_0 = nn.Conv1d(channels, channels, kernel, dilation=dilation, padding="same")
    self.norm_0 = ChannelNorm(channels, eps=LN_EPS)
    self.conv_1 = nn.Conv1d(channels, channels, 1)
    self.norm_1 = ChannelNorm(channels, eps=LN_EPS)
    self.se = SEBlock(channels)

  def forward(self, x):
    y = self.norm_0(torch.relu(self.conv_0(x)))
    y = self.norm_1(torch.relu(self.conv_1(y)))
    return self.se(y)


class AttentiveStatsPool(nn.Module):
  def __init__(self, channels: int, attention: int = 64):
    super().__init__()
    self.dense_0, self.dense_1 = nn.Linear(channels, attention), nn.Linear(attention, channels)

  def forward(self, x):  # [B, C, T] -> [B, 2C], statistics in float32 as in hive.
    x = x.transpose(1, 2)  # [B, T, C]
    logits = self.dense_1(torch.tanh(self.dense_0(x))).float()
    weights = torch.softmax(logits, dim=1)
    x = x.float()
    mean = torch.sum(weights * x, dim=1)
    var = torch.sum(weights * x * x, dim=1) - mean * mean
    return torch.cat([mean, torch.sqrt(torch.clamp(var, min=1e-6))], dim=-1)


class TDNNEmbedder(nn.Module):
  """hive's TDNNEmbedder: [B, T, F] -> [B, embed_dim] (not yet normalised)."""

  def __init__(self, n_mels: int = 40, channels: int = 128, dilations=(2, 3, 4),
               embed_dim: int = 256):
    super().__init__()
    self.conv_0 = nn.Conv1d(n_mels, channels, 5, padding="same")
    self.norm_0 = ChannelNorm(channels, eps=LN_EPS)
    self.blocks = nn.ModuleList(TDNNBlock(channels, 3, d) for d in dilations)
    self.conv_1 = nn.Conv1d(len(dilations) * channels, len(dilations) * channels, 1)
    self.pool = AttentiveStatsPool(len(dilations) * channels)
    self.norm_1 = nn.LayerNorm(2 * len(dilations) * channels, eps=LN_EPS)
    self.affine = nn.Linear(2 * len(dilations) * channels, embed_dim)

  def forward(self, x):
    x = self.norm_0(torch.relu(self.conv_0(x.transpose(1, 2))))
    outputs = []
    for block in self.blocks:
      x = x + block(x)
      outputs.append(x)
    x = torch.relu(self.conv_1(torch.cat(outputs, dim=1)))
    return self.affine(self.norm_1(self.pool(x)))  # The statistics are float32, as in hive.


class SpeakerModel(nn.Module):
  """Mean-normalised mels -> L2-normalised embedding, cosine speaker logits, gender logit."""

  def __init__(self, num_speakers: int, **encoder):
    super().__init__()
    self.encoder = TDNNEmbedder(**encoder)
    embed_dim = self.encoder.affine.out_features
    self.speaker = nn.Parameter(torch.randn(embed_dim, num_speakers) * 0.01)  # CosineHead
    self.gender = nn.Linear(embed_dim, 1)

  def forward(self, features):
    features = features - features.mean(dim=1, keepdim=True)
    embedding = l2_normalise(self.encoder(features).float())
    with torch.autocast("cpu", enabled=False):  # Heads in float32, as in hive.
      speaker_logits = l2_normalise(embedding) @ l2_normalise(self.speaker, dim=0)
      return embedding, speaker_logits, self.gender(embedding)[:, 0]


def triplet_loss(embeddings: torch.Tensor, margin: float = TRIPLET_MARGIN) -> torch.Tensor:
  """Batch-hard triplet loss on cosines over the [N, M, D] grid (hive.losses.triplet_loss)."""
  n, m, d = embeddings.shape
  e = l2_normalise(embeddings.reshape(n * m, d))
  labels = torch.arange(n).repeat_interleave(m)
  sim = e @ e.T
  same = labels[:, None] == labels[None, :]
  positive = same & ~torch.eye(n * m, dtype=torch.bool)
  hardest_pos = torch.where(positive, sim, torch.inf).amin(dim=1)
  hardest_neg = torch.where(~same, sim, -torch.inf).amax(dim=1)
  return torch.relu(hardest_neg - hardest_pos + margin).mean()


def am_softmax_loss(cosines: torch.Tensor, labels: torch.Tensor, margin: float = SPEAKER_MARGIN,
                    scale: float = SPEAKER_SCALE) -> torch.Tensor:
  onehot = F.one_hot(labels, cosines.shape[-1]).to(cosines.dtype)
  return F.cross_entropy(scale * (cosines - margin * onehot), labels)


def multitask_loss(outputs, speaker, gender, w, b, n_utterances: int,
                   weights: dict = WEIGHTS) -> torch.Tensor:
  """Weighted GE2E + triplet + speaker-ID + gender; every label here is known (>= 0)."""
  embedding, speaker_logits, gender_logit = outputs
  grid = embedding.reshape(-1, n_utterances, embedding.shape[-1])
  return (weights["ge2e"] * reference_torch.ge2e_loss(grid, w, b)
          + weights["triplet"] * triplet_loss(grid)
          + weights["speaker_id"] * am_softmax_loss(speaker_logits, speaker)
          + weights["gender"] * F.binary_cross_entropy_with_logits(gender_logit, gender.float()))


def make_optimizer(model: nn.Module, w, b, lr: float = 2e-3, weight_decay: float = 1e-4,
                   loss_lr_scale: float = 0.01):
  """hive's optimiser: AdamW for the model (decay on every parameter, as optax.adamw),
  Adam at `loss_lr_scale` x lr for w, b. Clipping happens in `train_step`."""
  return torch.optim.AdamW([
      {"params": list(model.parameters()), "lr": lr, "weight_decay": weight_decay},
      {"params": [w, b], "lr": lr * loss_lr_scale, "weight_decay": 0.0},
  ], lr=lr, eps=1e-8)


def train_step(model, w, b, optimizer, features, speaker, gender, n_utterances: int,
               clip_norm: float = 3.0, autocast: bool = False) -> float:
  """One multi-task step: forward, loss, backward, global-norm clip, update. Returns the loss."""
  optimizer.zero_grad(set_to_none=True)
  with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
    outputs = model(features)
  loss = multitask_loss(outputs, speaker, gender, w, b, n_utterances)
  loss.backward()
  params = [p for g in optimizer.param_groups for p in g["params"]]
  torch.nn.utils.clip_grad_norm_(params, clip_norm)
  optimizer.step()
  return float(loss.detach())


def _dense(linear: nn.Linear, params) -> None:
  linear.weight.copy_(torch.from_numpy(np.array(params["kernel"])).T)
  linear.bias.copy_(torch.from_numpy(np.array(params["bias"])))


def _conv(conv: nn.Conv1d, params) -> None:  # Flax [k, in, out] -> PyTorch [out, in, k].
  conv.weight.copy_(torch.from_numpy(np.array(params["kernel"])).permute(2, 1, 0))
  conv.bias.copy_(torch.from_numpy(np.array(params["bias"])))


def _norm(norm: nn.LayerNorm, params) -> None:
  norm.weight.copy_(torch.from_numpy(np.array(params["scale"])))
  norm.bias.copy_(torch.from_numpy(np.array(params["bias"])))


@torch.no_grad()
def load_hive_params(model: SpeakerModel, params) -> SpeakerModel:
  """Copies hive's SpeakerModel parameters (a TDNN encoder's tree, float32) into `model`."""
  enc, p = model.encoder, params["encoder"]
  _conv(enc.conv_0, p["Conv_0"])
  _norm(enc.norm_0, p["LayerNorm_0"])
  for i, block in enumerate(enc.blocks):
    q = p[f"TDNNBlock_{i}"]
    _conv(block.conv_0, q["Conv_0"])
    _norm(block.norm_0, q["LayerNorm_0"])
    _conv(block.conv_1, q["Conv_1"])
    _norm(block.norm_1, q["LayerNorm_1"])
    _dense(block.se.dense_0, q["SEBlock_0"]["Dense_0"])
    _dense(block.se.dense_1, q["SEBlock_0"]["Dense_1"])
  _conv(enc.conv_1, p["Conv_1"])
  _dense(enc.pool.dense_0, p["AttentiveStatsPool_0"]["Dense_0"])
  _dense(enc.pool.dense_1, p["AttentiveStatsPool_0"]["Dense_1"])
  _norm(enc.norm_1, p["LayerNorm_1"])
  _dense(enc.affine, p["affine"])
  model.speaker.copy_(torch.from_numpy(np.array(params["speaker"]["kernel"])))
  _dense(model.gender, params["gender"])
  return model
