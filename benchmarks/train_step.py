"""Training-step race: hive's jitted step against PyTorch, at the same precision, apart.

    python benchmarks/train_step.py [--rounds 3] [--steps 4] [--tdnn_steps 12] [--warmup 1]
        [--races lstm_bf16,lstm_f32,tdnn_bf16,tdnn_f32] [--threads N] [--malloc_reuse] [--no_write]

Two races, each in bfloat16 and in float32:

* `lstm`: the GE2E reference shape, N=64 speakers x M=10 utterances of 160
  frames x 40 mels, 3x256 LSTM, 256-d, GE2E softmax loss, Adam 1e-4 (w, b at
  0.01x), global-norm clipping at 3. PyTorch: benchmarks/reference_torch.py
  (Resemblyzer's network, `nn.LSTM`);
* `tdnn`: the shipped recipe (configs/release.py) at its batch, 48 x 3 crops
  of 160 frames, TDNN 128 channels, 256-d, GE2E + triplet + AM-softmax
  speaker-ID (903 speakers) + gender (0.2), AdamW 2e-3 (decay 1e-4), clipping
  at 3. PyTorch: benchmarks/reference_torch_tdnn.py, the same network and
  losses. Augmentation is off and the learning rate constant on both sides,
  so both train on exactly the same batch.

Precision: `bf16` is hive's `model.dtype=bfloat16` (bf16 matmul operands and
activations; float32 parameters, accumulation, optimiser and loss) against
PyTorch's `torch.autocast("cpu", torch.bfloat16)`; `f32` is float32 on both.

Method: every measurement is a fresh process (`--worker`) that builds one side,
runs `--warmup` untimed steps (hive's first one compiles) and then the timed
steps on one fixed batch; it reports the median step, the losses and its peak
resident memory (VmHWM). Rounds alternate the two sides (hive first in even
rounds, PyTorch first in odd ones) so neither gets the quieter minutes; a side's
time is the median of its per-process medians. Both sides use every CPU
(`--threads` for PyTorch; XLA's own pool for hive). Run it on an otherwise
idle machine: a busy core slows PyTorch's OpenMP threads far more than XLA's
(the load average before and after is recorded). XLA_FLAGS, if set, reaches
hive's processes and is recorded. `--malloc_reuse` runs both sides with glibc
keeping freed memory for reuse (one arena, no mmap, no trimming) instead of
returning it to the kernel: both sides otherwise page-fault fresh memory in
every step (hive's LSTM 1.2 GiB a step, PyTorch's 2.9 to 4.6 GiB).

Updates the "Training step" section of RESULTS.md; the last line printed is
one JSON object: `ratio_bf16`, `ratio_f32`, `ratio_tdnn_bf16`, `ratio_tdnn_f32`
(hive / PyTorch utterances per second), each side's utterances/s, median
step and peak memory, and the hive-bf16 loss's largest relative gap to
hive-f32 over the same steps (both start from the same parameters).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results  # noqa: E402

T, F = 160, 40
TDNN_SPEAKERS = 903  # configs/release.py's training speakers (301, sped up and slowed down).
# glibc tunables for --malloc_reuse: every allocation from the main heap, which is never
# trimmed, so a step's large buffers reuse the pages of the previous step's.
MALLOC_REUSE = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
                "MALLOC_TRIM_THRESHOLD_": str(2**40)}


@dataclasses.dataclass(frozen=True)
class Race:
  model: str  # "lstm" or "tdnn".
  n: int  # Speakers per batch.
  m: int  # Utterances per speaker.
  num_speakers: int  # Rows of the speaker-ID head.


RACES = {"lstm": Race("lstm", 64, 10, 64), "tdnn": Race("tdnn", 48, 3, TDNN_SPEAKERS)}
PRECISIONS = ("bf16", "f32")


def make_batch(race: Race, seed: int = 0) -> dict:
  """The fixed batch both sides train on: standard-normal mels, speaker-major labels."""
  import numpy as np
  rng = np.random.default_rng(seed)
  features = rng.standard_normal((race.n * race.m, T, F), dtype=np.float32)
  speakers = np.sort(rng.choice(race.num_speakers, race.n, replace=False)).astype(np.int32)
  genders = rng.integers(0, 2, race.n).astype(np.int32)
  return {"features": features, "speaker": np.repeat(speakers, race.m),
          "gender": np.repeat(genders, race.m)}


def hive_config(race: Race, precision: str):
  """hive's configuration for `race`: the GE2E reference, or configs/release.py."""
  from hive import config as config_lib
  if race.model == "tdnn":
    spec = importlib.util.spec_from_file_location("release_config", REPO / "configs/release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.augment.enabled = False  # The same batch on both sides.
    c.train.schedule = "constant"
  else:
    c = config_lib.base_config()
    c.model.encoder = "lstm"
    c.model.embed_dim = 256
    c.model.lstm.hidden, c.model.lstm.layers = 256, 3
    c.loss.weights = dict(ge2e=1.0, triplet=0.0, speaker_id=0.0, gender=0.0)
    c.train.learning_rate, c.train.schedule, c.train.weight_decay = 1e-4, "constant", 0.0
    c.train.grad_clip = 3.0
  c.data.n_speakers, c.data.n_utterances, c.data.crop_frames, c.data.n_mels = race.n, race.m, T, F
  c.model.dtype = "bfloat16" if precision == "bf16" else "float32"
  return c


class HiveStep:
  """hive's jitted training step (`train.make_train_step`) on the fixed batch."""

  def __init__(self, race: Race, precision: str):
    import jax
    from hive import parallel, train
    config = hive_config(race, precision)
    mesh = parallel.make_mesh()
    self.state = jax.jit(lambda r: train.create_train_state(config, race.num_speakers, r),
                         out_shardings=parallel.replicated(mesh))(jax.random.PRNGKey(0))
    self.step = train.make_train_step(config, mesh)
    self.batch = parallel.global_batch(make_batch(race), mesh)

  def __call__(self) -> float:
    self.state, metrics = self.step(self.state, self.batch)
    return float(metrics["loss"])  # Waits for the step to finish.


class TorchStep:
  """The PyTorch reference's training step for `race` on the fixed batch."""

  def __init__(self, race: Race, precision: str, threads: int):
    import torch
    torch.set_num_threads(threads)
    batch = {k: torch.from_numpy(v) for k, v in make_batch(race).items()}
    self.race, self.autocast, self.features = race, precision == "bf16", batch["features"]
    if race.model == "lstm":
      import reference_torch as ref
      self.ref, self.model = ref, ref.make_model(seed=0)
    else:
      import reference_torch_tdnn as ref
      torch.manual_seed(0)
      self.ref, self.model = ref, ref.SpeakerModel(race.num_speakers)
      self.speaker, self.gender = batch["speaker"].long(), batch["gender"]
    self.w, self.b = (torch.nn.Parameter(torch.tensor(v)) for v in (10.0, -5.0))
    self.optimizer = self.ref.make_optimizer(self.model, self.w, self.b)

  def __call__(self) -> float:
    if self.race.model == "lstm":
      return self.ref.train_step(self.model, self.w, self.b, self.optimizer, self.features,
                                 self.race.n, self.race.m, autocast=self.autocast)
    return self.ref.train_step(self.model, self.w, self.b, self.optimizer, self.features,
                               self.speaker, self.gender, self.race.m, autocast=self.autocast)


def peak_memory_mb() -> float:
  """This process's peak resident memory (VmHWM; reset by exec, unlike ru_maxrss)."""
  status = pathlib.Path("/proc/self/status").read_text()
  return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def run_worker(side: str, model: str, precision: str, warmup: int, steps: int,
               threads: int) -> dict:
  """Builds one side in this process and times its steps (what `--worker` prints)."""
  import numpy as np
  started = time.perf_counter()
  race = RACES[model]
  step = HiveStep(race, precision) if side == "hive" else TorchStep(race, precision, threads)
  losses = [step() for _ in range(warmup)]
  setup = time.perf_counter() - started
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    losses.append(step())
    times.append(time.perf_counter() - start)
  return {"side": side, "model": model, "precision": precision, "step_s": times,
          "median_s": float(np.median(times)), "setup_s": setup, "losses": losses,
          "peak_mb": peak_memory_mb()}


def spawn(side: str, race: str, args) -> dict:
  model, precision = race.split("_")
  steps = args.tdnn_steps if model == "tdnn" else args.steps
  cmd = [sys.executable, __file__, "--worker", side, "--races", race, "--steps", str(steps),
         "--warmup", str(args.warmup), "--threads", str(args.threads)]
  env = {**os.environ, **(MALLOC_REUSE if args.malloc_reuse else {})}
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=1800)
  if out.returncode:
    raise RuntimeError(f"{side} {race} worker failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def race_all(args, races: list[str]) -> dict:
  """{race: {side: [worker reports, one per round]}}, sides alternating within each race."""
  runs = {race: {"hive": [], "torch": []} for race in races}
  for round_ in range(args.rounds):
    for race in races:
      for side in (("hive", "torch") if round_ % 2 == 0 else ("torch", "hive")):
        report = spawn(side, race, args)
        runs[race][side].append(report)
        print(f"round {round_ + 1}/{args.rounds} {race} {side}: median step "
              f"{report['median_s']:.3f} s (setup {report['setup_s']:.1f} s)",
              file=sys.stderr, flush=True)
  return runs


def summarise(runs: dict) -> dict:
  """Median of the per-process medians, utterances/s, peak memory and ratios per race."""
  import numpy as np
  out = {}
  for race, sides in runs.items():
    rows = RACES[race.split("_")[0]]
    row = {}
    for side, reports in sides.items():
      median = float(np.median([r["median_s"] for r in reports]))
      row[side] = {"median_s": median, "utterances_per_s": rows.n * rows.m / median,
                   "peak_mb": float(np.median([r["peak_mb"] for r in reports])),
                   "process_medians_s": [r["median_s"] for r in reports],
                   "losses": reports[0]["losses"]}
    row["ratio"] = row["hive"]["utterances_per_s"] / row["torch"]["utterances_per_s"]
    out[race] = row
  return out


def loss_gap(summary: dict, model: str, side: str) -> float | None:
  """Largest relative gap between the bf16 and f32 losses of one side over the same steps."""
  bf16, f32 = summary.get(f"{model}_bf16"), summary.get(f"{model}_f32")
  if not (bf16 and f32):
    return None
  a, b = bf16[side]["losses"], f32[side]["losses"]
  return max(abs(x - y) / abs(y) for x, y in zip(a, b))


SIDE_NAMES = {"lstm": ("hive LSTM", "PyTorch nn.LSTM (Resemblyzer)"),
              "tdnn": ("hive TDNN", "PyTorch TDNN (reference_torch_tdnn)")}
PRECISION_NAMES = {"bf16": "bf16 (hive model.dtype; PyTorch autocast)", "f32": "float32"}


def load_average() -> float:
  return os.getloadavg()[0]


def section(args, summary: dict, loads: tuple[float, float]) -> str:
  import jax
  import torch
  env = results.machine()
  rounds = f"{args.rounds} round{'s' if args.rounds != 1 else ''}"
  allocator = ("glibc malloc reusing memory (`--malloc_reuse`)" if args.malloc_reuse
               else "default glibc malloc")
  lines = [
      "## Training step", "",
      f"Run {env['date']} on {env['platform']} ({env['cpu_count']} CPUs: "
      f"{results_cpu_name()}); JAX {jax.__version__}, PyTorch {torch.__version__} "
      f"({args.threads} threads), XLA_FLAGS=`{os.environ.get('XLA_FLAGS', '')}`, {allocator}; "
      f"load average {loads[0]:.2f} before, {loads[1]:.2f} after. Each side in its own fresh "
      f"process, {rounds} alternating hive and PyTorch; a side's time is the median of its "
      f"processes' median steps ({args.steps} timed steps for the LSTM, {args.tdnn_steps} for "
      f"the TDNN, after {args.warmup} untimed). `python benchmarks/train_step.py`; the method "
      "is in its docstring.", "",
      "- LSTM: GE2E reference shape, N=64 x M=10, 160 frames x 40 mels, 3x256 LSTM, 256-d, "
      "GE2E, Adam 1e-4, clip 3.",
      "- TDNN: the release recipe at its batch, 48 x 3, TDNN 128 channels, 256-d, GE2E + "
      "triplet + AM-softmax speaker-ID (903 speakers) + gender, AdamW 2e-3, clip 3 "
      "(augmentation off, constant learning rate, on both sides).", "",
      "| race | precision | hive s/step | PyTorch s/step | hive utt/s | PyTorch utt/s "
      "| hive peak MB | PyTorch peak MB | hive / PyTorch |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for race, row in summary.items():
    model, precision = race.split("_")
    h, t = row["hive"], row["torch"]
    lines.append(f"| {model.upper()} | {PRECISION_NAMES[precision]} | {h['median_s']:.3f} | "
                 f"{t['median_s']:.3f} | {h['utterances_per_s']:.1f} | "
                 f"{t['utterances_per_s']:.1f} | {h['peak_mb']:.0f} | {t['peak_mb']:.0f} | "
                 f"**{row['ratio']:.2f}x** |")
  gaps = [f"{model.upper()} hive {loss_gap(summary, model, 'hive'):.2%}, PyTorch "
          f"{loss_gap(summary, model, 'torch'):.2%}" for model in RACES
          if loss_gap(summary, model, "hive") is not None]
  if gaps:
    lines += ["", "bf16 against float32, largest relative loss gap over the steps of one "
              "process (same start, same batch): " + "; ".join(gaps) + "."]
  return "\n".join(lines) + "\n"


def results_cpu_name() -> str:
  for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return "unknown CPU"


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--steps", type=int, default=4, help="Timed steps per LSTM process.")
  ap.add_argument("--tdnn_steps", type=int, default=12, help="Timed steps per TDNN process.")
  ap.add_argument("--warmup", type=int, default=1)
  ap.add_argument("--threads", type=int, default=os.cpu_count())
  ap.add_argument("--races", default="lstm_bf16,lstm_f32,tdnn_bf16,tdnn_f32")
  ap.add_argument("--malloc_reuse", action="store_true",
                  help="Both sides with glibc reusing freed memory (see the docstring).")
  ap.add_argument("--no_write", action="store_true")
  ap.add_argument("--worker", choices=("hive", "torch"), help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  races = [r.strip() for r in args.races.split(",") if r.strip()]
  known = [f"{m}_{p}" for m in RACES for p in PRECISIONS]
  if not races or any(r not in known for r in races):
    ap.error(f"--races: choose from {', '.join(known)}")
  if args.worker:
    model, precision = races[0].split("_")
    print(json.dumps(run_worker(args.worker, model, precision, args.warmup, args.steps,
                                args.threads)))
    return 0

  load_before = load_average()
  summary = summarise(race_all(args, races))
  loads = (load_before, load_average())
  text = section(args, summary, loads)
  print(text)
  if not args.no_write:
    results.update_section("Training step", text)
  env = results.machine()
  record = {f"ratio_{r.replace('lstm_', '')}": round(row["ratio"], 3)
            for r, row in summary.items()}
  record.update({
      "utterances_per_s": {f"{side} {r}": round(row[side]["utterances_per_s"], 1)
                           for r, row in summary.items() for side in ("hive", "torch")},
      "median_step_s": {f"{side} {r}": round(row[side]["median_s"], 3)
                        for r, row in summary.items() for side in ("hive", "torch")},
      "peak_memory_mb": {f"{side} {r}": round(row[side]["peak_mb"])
                         for r, row in summary.items() for side in ("hive", "torch")},
      "process_median_step_s": {f"{side} {r}": [round(v, 3) for v in
                                                row[side]["process_medians_s"]]
                                for r, row in summary.items() for side in ("hive", "torch")},
      "bf16_loss_gap": {f"{side} {m}": round(loss_gap(summary, m, side), 5) for m in RACES
                        for side in ("hive", "torch") if loss_gap(summary, m, side) is not None},
      "rounds": args.rounds, "threads": args.threads, "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "malloc_reuse": args.malloc_reuse, "load_average": [round(v, 2) for v in loads],
      "host": env["platform"], "cpu": results_cpu_name(), "cpu_count": env["cpu_count"],
      "date": env["date"]})
  print(json.dumps(record))
  return 0


if __name__ == "__main__":
  sys.exit(main())
