"""Training-step throughput: hive's jitted step against a plain PyTorch GE2E step.

    python benchmarks/train_step.py [--steps 5] [--warmup 2] [--threads N] [--encoders lstm,rescnn,tdnn]

The reference shape of GE2E: 3 LSTM layers x 256 units, 256-d projection, 40
mels, 160 frames, N=64 speakers x M=10 utterances, Adam, clipping at 3. Both
sides train on the same random batch, in one process, on the same CPU threads,
in alternating steps after warm-up; the median step gives utterances/s. hive
runs the encoder with bfloat16 matmul inputs (`model.dtype="bfloat16"`; parameters,
optimiser and loss stay float32; the CPU's AVX512-BF16 units do the matmuls),
PyTorch in float32 as a straightforward implementation would; hive's float32
step is timed too, so both ratios are in the table. The
PyTorch side is benchmarks/reference_torch.py (Resemblyzer's network). Then
hive's other encoders at the same batch, and each side's peak memory measured
in a fresh subprocess. Updates the "Training step" section of RESULTS.md; the
last line is one JSON object (`ratio` = hive / PyTorch utterances/s).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results  # noqa: E402

N, M, T, F = 64, 10, 160, 40


def reference_config(encoder: str = "lstm", dtype: str = "bfloat16"):
  from hive import config as config_lib
  c = config_lib.base_config()
  c.data.n_speakers, c.data.n_utterances, c.data.crop_frames, c.data.n_mels = N, M, T, F
  c.model.encoder = encoder
  c.model.dtype = dtype
  c.model.embed_dim = 256
  c.model.lstm.hidden, c.model.lstm.layers = 256, 3
  c.loss.weights = dict(ge2e=1.0, triplet=0.0, speaker_id=0.0, gender=0.0)
  c.train.learning_rate, c.train.schedule, c.train.weight_decay = 1e-4, "constant", 0.0
  c.train.grad_clip = 3.0
  return c


class HiveStep:
  """hive's jitted training step at the reference shape, on a fixed batch."""

  def __init__(self, encoder: str = "lstm", dtype: str = "bfloat16"):
    import jax
    import numpy as np
    from hive import parallel, train
    c = reference_config(encoder, dtype)
    self.jax = jax
    self.mesh = parallel.make_mesh()
    self.state = train._init_state(c, N, self.mesh)
    self.step = train.make_train_step(c, self.mesh)
    rng = np.random.default_rng(0)
    self.batch = parallel.global_batch(
        {"features": rng.standard_normal((N * M, T, F), dtype=np.float32),
         "speaker": np.repeat(np.arange(N), M).astype(np.int32),
         "gender": np.zeros(N * M, np.int32)}, self.mesh)

  def __call__(self) -> float:
    self.state, metrics = self.step(self.state, self.batch)
    return float(metrics["loss"])  # Waits for the step to finish.


class TorchStep:
  def __init__(self, threads: int):
    import torch
    import reference_torch as ref
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    self.ref, self.model = ref, ref.make_model(seed=0)
    self.w, self.b = ref.make_ge2e_params()
    self.optimizer = ref.make_optimizer(self.model, self.w, self.b)
    self.mels = torch.randn(N * M, T, F, generator=torch.Generator().manual_seed(0))

  def __call__(self) -> float:
    return self.ref.train_step(self.model, self.w, self.b, self.optimizer, self.mels, N, M)


def timed(fn) -> float:
  import time
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def alternate(a, b, warmup: int, steps: int):
  for _ in range(warmup):
    a(), b()
  times_a, times_b = [], []
  for _ in range(steps):
    times_a.append(timed(a))
    times_b.append(timed(b))
  return times_a, times_b


def peak_memory_mb(side: str, threads: int) -> float:
  """Peak RSS of a fresh process that builds `side` and runs 2 steps.

  Read from /proc/self/status (VmHWM, reset by exec): getrusage's ru_maxrss survives
  fork+exec on Linux, so a child would report this parent's peak instead of its own.
  """
  code = (f"import sys, re; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
          f"import train_step as t; s = t.HiveStep() if {side!r} == 'hive' else "
          f"t.TorchStep({threads}); s(); s(); "
          "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())"
          ".group(1)) / 1024)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=REPO, env=os.environ, timeout=900)
  if out.returncode:
    raise RuntimeError(out.stderr[-2000:])
  return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--threads", type=int, default=os.cpu_count())
  ap.add_argument("--encoders", default="rescnn,tdnn", help="Other hive encoders to time.")
  ap.add_argument("--no_memory", action="store_true")
  ap.add_argument("--no_write", action="store_true")
  args = ap.parse_args(argv)
  import numpy as np
  import jax
  import torch

  main_row, f32_row = "hive lstm (jit, bf16 matmuls)", "hive lstm (jit, float32)"
  torch_row = "PyTorch lstm (reference, float32)"
  hive_times, torch_times = alternate(HiveStep("lstm"), TorchStep(args.threads), args.warmup,
                                      args.steps)
  rows = {main_row: hive_times, torch_row: torch_times}
  steps = {f32_row: ("lstm", "float32")}
  steps.update({f"hive {e} (jit, bf16 matmuls)": (e, "bfloat16")
                for e in filter(None, args.encoders.split(","))})
  for name, (encoder, dtype) in steps.items():
    step = HiveStep(encoder, dtype)
    for _ in range(args.warmup):
      step()
    rows[name] = [timed(step) for _ in range(args.steps)]
  medians = {k: float(np.median(v)) for k, v in rows.items()}
  ups = {k: N * M / v for k, v in medians.items()}
  ratio = ups[main_row] / ups[torch_row]
  ratio_f32 = ups[f32_row] / ups[torch_row]
  memory = {} if args.no_memory else {
      main_row: peak_memory_mb("hive", args.threads),
      torch_row: peak_memory_mb("torch", args.threads)}

  env = results.machine()
  device = jax.devices()[0].device_kind
  lines = [
      "## Training step", "",
      f"Run {env['date']} on {env['platform']} ({env['cpu_count']} CPUs, {device}); JAX "
      f"{jax.__version__}, PyTorch {torch.__version__} ({args.threads} threads), "
      f"XLA_FLAGS=`{os.environ.get('XLA_FLAGS', '')}`. GE2E reference shape: N={N} x M={M}, "
      f"{T} frames x {F} mels, 3x256 LSTM, 256-d, Adam, clip 3; median of {args.steps} "
      f"alternating steps after {args.warmup} warm-up.", "",
      "| implementation | median step s | utterances / s | peak memory MB |",
      "|---|---:|---:|---:|"]
  for k in rows:
    mem = f"{memory[k]:.0f}" if k in memory else ""
    lines.append(f"| {k} | {medians[k]:.3f} | {ups[k]:.1f} | {mem} |")
  lines += ["", f"hive / PyTorch (LSTM, reference shape): **{ratio:.2f}x** with bf16 matmuls, "
            f"{ratio_f32:.2f}x in float32. The rows after the first pair ran "
            "alone, not alternating.", ""]
  section = "\n".join(lines)
  print(section)
  if not args.no_write:
    results.update_section("Training step", section)
  print(json.dumps({"ratio": round(ratio, 3), "ratio_float32": round(ratio_f32, 3),
                    "utterances_per_s": {k: round(v, 1) for k, v in ups.items()},
                    "median_step_s": {k: round(v, 3) for k, v in medians.items()},
                    "peak_memory_mb": {k: round(v) for k, v in memory.items()},
                    "device": device, "threads": args.threads, "date": env["date"]}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
