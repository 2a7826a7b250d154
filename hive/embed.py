"""Embeds many audio files into one .npz with a trained hive model.

    python -m hive.embed --workdir=runs/mtl --out=embeddings.npz a.flac b.wav clips/
    python -m hive.embed --workdir=runs/mtl --out=embeddings.npz --list=files.txt

Each positional PATH is an audio file or a directory (every .flac/.wav under
it, sorted); --list names a text file with one path per line (blank lines and
lines starting with '#' are ignored). A path named twice is embedded once.
Files are decoded in threads and embedded together in large batches
(`Encoder.embed_features`; whole utterances or windows, see hive/encoder.py).

The output, readable with `np.load(path, allow_pickle=False)`:
  embeddings          float32 [K, D], unit norm (centred: see hive/centring.py)
  paths               unicode [K], the path of each row as given
  gender_probability  float32 [K], P(female) from the gender head
  skipped_paths       unicode [M], files that could not be used
  skipped_reasons     unicode [M], why
  model               unicode scalar, JSON: the model's record (hive/workdir.py model_record)
Unusable files (missing, empty, not audio, silent) are reported on stderr with
the reason and skipped; a summary "embedded N, skipped M" ends the run. If no
file could be embedded, or the arguments are wrong, the run ends with a
one-line `error: ...` and exit status 2, writing nothing.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import sys

import numpy as np
from absl import flags

from hive import cli, workdir as workdir_lib
from hive.data import audio


def define_flags() -> None:
  """Defined only when run as a program, so importing this beside hive.evaluate or
  hive.voiceid (tests, notebooks) cannot clash on flag names."""
  flags.DEFINE_string("workdir", None, "Training workdir (or pretrained/hive-mtl).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_string("out", None, "Output .npz.")
  flags.DEFINE_string("list", None, "Text file with one audio path per line.")
  flags.DEFINE_integer("chunk_files", 512, "Files decoded and embedded per batch (bounds memory).")
  flags.DEFINE_integer("num_workers", None, "Decoding threads (default: all cores).")


class EmbedError(cli.UserError):
  """Bad arguments: reported as one line, exit status 2."""


def audio_files_under(directory) -> list[str]:
  """Every .flac/.wav under `directory`, sorted, so the output order is reproducible."""
  found = (p for p in pathlib.Path(directory).rglob("*")
           if p.suffix.lower() in audio.AUDIO_EXTENSIONS and p.is_file())
  return sorted(str(p) for p in found)


def read_list(list_file) -> list[str]:
  path = pathlib.Path(list_file)
  if not path.is_file():
    raise EmbedError(f"{path}: no such list file")
  try:
    lines = path.read_text(encoding="utf-8").splitlines()
  except UnicodeDecodeError as e:
    raise EmbedError(f"{path}: not a text list of paths ({e})") from None
  return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def collect_paths(inputs, list_file=None) -> list[str]:
  """Files named, files under named directories, then --list entries; duplicates dropped."""
  paths = []
  for item in list(inputs) + (read_list(list_file) if list_file else []):
    if os.path.isdir(item):
      under = audio_files_under(item)
      if not under:
        print(f"warning: {item}: no .flac/.wav files under this directory", file=sys.stderr)
      paths += under
    else:
      paths.append(item)  # A missing file is reported as skipped, with the others.
  return list(dict.fromkeys(os.path.normpath(p) for p in paths))


def _features(encoder, path):
  try:
    return encoder.features_of(path), None
  except audio.BadAudio as e:
    return None, e.reason


def embed_paths(encoder, paths, chunk_files: int = 512, num_workers: int | None = None,
                on_skip=None) -> dict:
  """Embeds every usable file of `paths`; returns the arrays the .npz holds."""
  kept, skipped, reasons, parts = [], [], [], []
  workers = max(1, num_workers or os.cpu_count() or 1)
  # Threads: decoding (libsndfile), FFTs and BLAS release the GIL.
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for start in range(0, len(paths), max(1, chunk_files)):
      chunk = paths[start:start + max(1, chunk_files)]
      mels = []
      for path, (mel, reason) in zip(chunk, pool.map(lambda p: _features(encoder, p), chunk)):
        if mel is None:
          skipped.append(path)
          reasons.append(reason)
          if on_skip:
            on_skip(path, reason)
        else:
          kept.append(path)
          mels.append(mel)
      if mels:
        parts.append(encoder.embed_features(mels, with_gender=True))
  dim = int(encoder.config.model.embed_dim)
  embeddings = (np.concatenate([e for e, _ in parts]) if parts
                else np.zeros((0, dim), np.float32))
  gender = np.concatenate([g for _, g in parts]) if parts else np.zeros(0, np.float32)
  return {"embeddings": embeddings.astype(np.float32),
          "paths": np.array(kept, dtype=np.str_),
          "gender_probability": np.asarray(gender, np.float32),
          "skipped_paths": np.array(skipped, dtype=np.str_),
          "skipped_reasons": np.array(reasons, dtype=np.str_)}


def load_encoder(workdir, step=None):
  from hive.encoder import Encoder
  cli.use_compilation_cache()  # Commands: the next run skips this one's compilations.
  return Encoder.from_workdir(workdir, step)


def embed_command(workdir, out, inputs, list_file=None, step=None, chunk_files=512, num_workers=None,
        encoder=None) -> dict:
  """The command: returns the written arrays; EmbedError when nothing could be embedded."""
  if not out:
    raise EmbedError("--out=FILE.npz is required")
  paths = collect_paths(inputs, list_file)
  if not paths:
    raise EmbedError("no audio files given (pass files, directories or --list=FILE)")
  if encoder is None:
    if not workdir:
      raise EmbedError("--workdir is required")
    encoder = load_encoder(workdir, step)
  report = lambda p, reason: print(f"skipped {p}: {reason}", file=sys.stderr)
  arrays = embed_paths(encoder, paths, chunk_files, num_workers, on_skip=report)
  n, m = len(arrays["paths"]), len(arrays["skipped_paths"])
  if n == 0:
    raise EmbedError(f"none of the {m} files could be embedded (reasons above)")
  arrays["model"] = np.array(json.dumps(encoder.model_record()), dtype=np.str_)
  workdir_lib.write_npz(out, arrays)
  print(f"embedded {n}, skipped {m} -> {out}")
  return arrays


def main(argv):
  f = flags.FLAGS
  embed_command(f.workdir, f.out, argv[1:], f.list, f.step, f.chunk_files, f.num_workers)


def run() -> None:
  cli.run(main, define_flags, errors=(audio.BadAudio,))


if __name__ == "__main__":
  run()
