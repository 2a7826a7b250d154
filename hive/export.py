"""Exports a trained model: for hive's own commands, or for serving anywhere.

    python -m hive.export --workdir=runs/release --out=pretrained/hive-mtl [--step=N]
    python -m hive.export --workdir=pretrained/hive-mtl --format=savedmodel --out=/tmp/sm

`--format=checkpoint` (the default) drops the optimiser state and GE2E's w/b (a third of
the size of a training checkpoint) and keeps everything `hive.Encoder`, `hive.evaluate`,
`hive.voiceid` and `hive.embed` need, so each of them accepts `--workdir=OUT`. Training
cannot resume from an export; keep the workdir for that.

`savedmodel` (TensorFlow), `stablehlo` (jax.export) and `onnx` write a model that takes 16 kHz
mono waveforms (`waveform` float32 [batch, samples], `num_samples` int32 [batch]) and returns
`embedding` [batch, D] and `gender_probability` [batch], the log-mel front end, masking and
centring inside (hive/serving.py). Every format is written into a staging folder and renamed
into place when complete. Also installed as the console script `hive-export`.
"""

from __future__ import annotations

import jax
from absl import flags

from hive import checkpoint, cli, workdir as workdir_lib
from hive.encoder import Encoder

FORMATS = ("checkpoint", "savedmodel", "stablehlo", "onnx")


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training workdir to export.", required=True)
  flags.DEFINE_string("out", None, "Empty output directory.", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_enum("format", "checkpoint", FORMATS,
                    "checkpoint: for hive's commands; savedmodel / stablehlo / onnx: waveform in, "
                    "embedding out, for serving.")


def export_workdir(workdir, out, step: int | None = None):
  """Exports checkpoint `step` (default: the latest) of `workdir` into the empty `out`."""
  encoder = Encoder.from_workdir(workdir, step)  # Reads only the model parameters.
  return checkpoint.export(workdir, out, encoder.step, encoder.params)


def export_for_serving(workdir, out, fmt: str, step: int | None = None):
  """Writes the waveform-in serving model of `workdir` in `fmt` into the empty `out`."""
  from hive import serving  # TensorFlow, jax2onnx: loaded only for these formats.
  write = {"savedmodel": serving.export_savedmodel, "stablehlo": serving.export_stablehlo,
           "onnx": serving.export_onnx}[fmt]
  encoder = Encoder.from_workdir(workdir, step)
  needed = sum(x.nbytes for x in jax.tree.leaves(encoder.params))
  with workdir_lib.staged_directory(out, needed) as staging:
    write(encoder.config, encoder.params, encoder.embedding_mean, staging,
          info=encoder.model_record())
  return workdir_lib.path(out)


def main(argv) -> None:
  cli.no_arguments(argv)
  f = flags.FLAGS
  if f.format != "checkpoint":
    path = export_for_serving(f.workdir, f.out, f.format, f.step)
    size = sum((folder / name).stat().length for folder, _, names in path.walk()
               for name in names)
    print(f"exported {f.workdir} as {f.format} to {f.out} ({size / 2**20:.1f} MiB): "
          f"16 kHz waveform in, embedding out (see {f.out}/serving.json)")
    return
  path = export_workdir(f.workdir, f.out, f.step)
  size = sum((folder / name).stat().length for folder, _, names in path.walk() for name in names)
  print(f"exported {f.workdir} step {path.name} to {f.out} ({size / 2**20:.1f} MiB)")


def run() -> None:
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
