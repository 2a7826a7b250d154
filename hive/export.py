"""Exports a training workdir for inference: config, speakers and model parameters.

    python -m hive.export --workdir=runs/release --out=pretrained/hive-mtl [--step=N]

The export drops the optimiser state and GE2E's w/b (a third of the size of a
training checkpoint) and keeps everything `hive.Encoder`, `hive.evaluate`,
`hive.voiceid` and `hive.embed` need, so each of them accepts `--workdir=OUT`.
Training cannot resume from an export; keep the workdir for that.
Also installed as the console script `hive-export`.
"""

from __future__ import annotations

from absl import flags

from hive import checkpoint, cli
from hive.encoder import Encoder


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training workdir to export.", required=True)
  flags.DEFINE_string("out", None, "Empty output directory.", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")


def export_workdir(workdir, out, step: int | None = None):
  """Exports checkpoint `step` (default: the latest) of `workdir` into the empty `out`."""
  encoder = Encoder.from_workdir(workdir, step)  # Reads only the model parameters.
  return checkpoint.export(workdir, out, encoder.step, encoder.params)


def main(argv) -> None:
  cli.no_arguments(argv)
  f = flags.FLAGS
  path = export_workdir(f.workdir, f.out, f.step)
  size = sum((folder / name).stat().length for folder, _, names in path.walk() for name in names)
  print(f"exported {f.workdir} step {path.name} to {f.out} ({size / 2**20:.1f} MiB)")


def run() -> None:
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
