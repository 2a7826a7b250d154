"""Embeds many audio files into one .npz with a trained hive model, and draws them.

    python -m hive.embed --workdir=runs/mtl --out=embeddings.npz a.flac b.wav clips/
    python -m hive.embed --workdir=runs/mtl --out=embeddings.npz --list=files.txt
    python -m hive.embed --workdir=pretrained/hive-mtl --plot=plots/ my_speakers/

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
the reason and skipped; a summary ends the run ("embedded N, skipped M", the model and,
with speakers known, their mean same- and different-speaker cosine). If no file could be
embedded, or the arguments are wrong, the run ends with a one-line `error: ...` and exit
status 2, writing nothing.

--plot=DIR draws the embeddings as DIR/map.png (a 2-D t-SNE map, one colour per speaker)
and DIR/similarity.png (the cosine similarity of every pair of files, grouped by speaker).
Speakers are the files' parent folder names (the usual layout: a folder per speaker; in
the LibriSpeech layout the parent is a chapter), unless --labels=FILE names them: one
"PATH LABEL" line per file (the label is the last word; relative paths are relative to
FILE's folder).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import sys

import numpy as np
from absl import flags

from hive import cli, metrics, workdir as workdir_lib
from hive.data import audio

# Speaker names drawn in a legend or as ticks up to these counts; past them, colours alone.
LEGEND_SPEAKERS = 20
TICK_SPEAKERS = 30
# evaluate's map: marker per gender code (0 male, 1 female, -1 unknown).
GENDER_MARKERS = ((0, "o", "male"), (1, "^", "female"), (-1, "x", "unknown"))


def define_flags() -> None:
  """Defined only when run as a program, so importing this beside hive.evaluate or
  hive.voiceid (tests, notebooks) cannot clash on flag names."""
  flags.DEFINE_string("workdir", None, "Training workdir (or pretrained/hive-mtl).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_string("out", None, "Output .npz (optional with --plot).")
  flags.DEFINE_string("list", None, "Text file with one audio path per line.")
  flags.DEFINE_integer("chunk_files", 512, "Files decoded and embedded per batch (bounds memory).")
  flags.DEFINE_integer("num_workers", None, "Decoding threads (default: all cores).")
  flags.DEFINE_string("plot", None, "Directory for map.png (2-D map, a colour per speaker) and "
                      "similarity.png (cosine of every pair). Speakers: each file's parent "
                      "folder name, or --labels.")
  flags.DEFINE_string("labels", None, "Text file of 'PATH LABEL' lines: each file's speaker "
                      "for --plot and the summary (default: its parent folder's name).")


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


def read_labels(labels_file) -> dict[str, str]:
  """{absolute path: label} from a text file of "PATH LABEL" lines (the label is the last
  word, so paths may hold spaces; relative paths are relative to the file's folder)."""
  path = pathlib.Path(labels_file)
  if not path.is_file():
    raise EmbedError(f"{path}: no such labels file")
  try:
    lines = path.read_text(encoding="utf-8").splitlines()
  except UnicodeDecodeError as e:
    raise EmbedError(f"{path}: not a text file of 'PATH LABEL' lines ({e})") from None
  labels = {}
  for number, line in enumerate(lines, 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    parts = line.rsplit(None, 1)
    if len(parts) != 2:
      raise EmbedError(f"{path}:{number}: expected 'PATH LABEL', got {line!r}")
    labels[os.path.abspath(os.path.join(path.parent, parts[0]))] = parts[1]
  return labels


def speaker_labels(paths, labels_file=None) -> list[str]:
  """Each path's speaker: its label in `labels_file`, else its parent folder's name."""
  if labels_file is None:
    return [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in paths]
  table = read_labels(labels_file)
  found = [table.get(os.path.abspath(p)) for p in paths]
  missing = [p for p, label in zip(paths, found) if label is None]
  if missing:
    raise EmbedError(f"{labels_file}: no label for {len(missing)} of the {len(paths)} files "
                     f"(first: {missing[0]})")
  return found


def pair_scores(embeddings, labels) -> dict:
  """Mean cosine of the same-speaker and of the different-speaker pairs of files, their
  counts, and the EER over those pairs (None where a kind of pair is missing)."""
  scores, same = metrics.all_pairs_trials(embeddings, labels)
  out = {"same": float(scores[same].mean()) if same.any() else None,
         "same_pairs": int(same.sum()),
         "different": float(scores[~same].mean()) if (~same).any() else None,
         "different_pairs": int((~same).sum()), "eer": None}
  if same.any() and (~same).any():
    out["eer"] = metrics.eer(scores, same)[0]
  return out


def map_2d(embeddings, seed: int = 0) -> np.ndarray:
  """[K, D] -> [K, 2] to draw: PCA to at most 30 dimensions, then t-SNE (scikit-learn) when
  there are more than 5 points; the first two principal components alone otherwise."""
  from sklearn.decomposition import PCA
  from sklearn.manifold import TSNE
  x = np.asarray(embeddings, np.float64)
  if len(x) < 2:
    return np.zeros((len(x), 2))
  x = PCA(min(30, x.shape[1], len(x)), random_state=seed).fit_transform(x)
  if len(x) > 5:
    # Perplexity (the neighbours each point weighs) must stay below the number of points.
    perplexity = float(np.clip((len(x) - 1) / 3, 2, 30))
    return TSNE(2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)
  return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1]))))


def speaker_colours(names) -> dict:
  """A distinct colour per name: tab10 / tab20 up to 20 names, then a continuous map."""
  from matplotlib import colormaps
  n = len(names)
  if n <= 20:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return {name: cmap(i) for i, name in enumerate(names)}
  cmap = colormaps["turbo"]
  return {name: cmap(i / (n - 1)) for i, name in enumerate(names)}


def plot_map(xy, labels, path, genders=None, title: str | None = None) -> None:
  """A PNG scatter of 2-D points, a colour per speaker (named in a legend up to
  LEGEND_SPEAKERS), and with `genders` (codes 0, 1, -1) a marker per gender."""
  from matplotlib.figure import Figure  # No pyplot: no GUI backend, no global state.
  from matplotlib.lines import Line2D
  xy, labels = np.asarray(xy), np.asarray(labels)
  names = sorted(set(labels.tolist()))
  colour = speaker_colours(names)
  codes = np.zeros(len(labels), int) if genders is None else np.asarray(genders)
  markers = GENDER_MARKERS if genders is not None else ((0, "o", None),)
  fig = Figure(figsize=(7.5, 6), layout="constrained")
  ax = fig.subplots()
  for name in names:
    for code, marker, _ in markers:
      rows = (labels == name) & (codes == code)
      if rows.any():
        ax.scatter(xy[rows, 0], xy[rows, 1], color=colour[name], marker=marker, s=28,
                   alpha=0.85, linewidths=1.2 if marker == "x" else 0)
  if len(names) <= LEGEND_SPEAKERS:
    handles = [Line2D([], [], color=colour[n], marker="o", linestyle="", label=n)
               for n in names]
    fig.legend(handles=handles, title="speaker", fontsize=8, loc="outside right upper")
  if genders is not None:
    handles = [Line2D([], [], color="grey", marker=m, linestyle="", label=label)
               for code, m, label in GENDER_MARKERS if (codes == code).any()]
    fig.legend(handles=handles, title="gender", fontsize=8, loc="outside right lower")
  ax.set(xticks=[], yticks=[],
         title=title or f"{len(labels)} files of {len(names)} speakers (t-SNE map)")
  fig.savefig(path, dpi=100)


def plot_similarity(embeddings, labels, path) -> None:
  """A PNG of the cosine similarity of every pair of files, grouped by speaker (sorted
  names, files in their given order within each), the groups framed by white lines."""
  from matplotlib.figure import Figure
  labels = np.asarray(labels)
  order = np.argsort(labels, kind="stable")
  sims = metrics.cosine_matrix(np.asarray(embeddings)[order])
  names, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
  fig = Figure(figsize=(7, 6), layout="constrained")
  ax = fig.subplots()
  others = sims[~np.eye(len(sims), dtype=bool)]
  low = min(float(others.min()), 0.0) if others.size else 0.0
  image = ax.imshow(sims, cmap="viridis", vmin=low, vmax=1.0, interpolation="nearest")
  fig.colorbar(image, ax=ax, shrink=0.85, label="cosine similarity")
  for start in starts[1:]:
    ax.axhline(start - 0.5, color="white", linewidth=0.8)
    ax.axvline(start - 0.5, color="white", linewidth=0.8)
  if len(names) <= TICK_SPEAKERS:
    centres = starts + (counts - 1) / 2
    ax.set_xticks(centres, names, rotation=90, fontsize=8)
    ax.set_yticks(centres, names, fontsize=8)
  else:
    ax.set(xticks=[], yticks=[])
  ax.set_title(f"{len(labels)} files of {len(names)} speakers: cosine similarity")
  fig.savefig(path, dpi=100)


def write_plots(embeddings, labels, directory) -> list[str]:
  """DIR/map.png and DIR/similarity.png (see the module docstring); returns their paths."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  paths = [directory / "map.png", directory / "similarity.png"]
  plot_map(map_2d(embeddings), labels, paths[0])
  plot_similarity(embeddings, labels, paths[1])
  return [str(p) for p in paths]


def format_summary(arrays, out=None, model: dict | None = None, labels=None,
                   labelled_by: str | None = None, plots=None) -> str:
  """The lines a run ends with: counts, the model, and with `labels` (one per embedded
  file) the speakers and their mean same- and different-speaker cosine."""
  n, m = len(arrays["paths"]), len(arrays["skipped_paths"])
  lines = [f"embedded {n}, skipped {m}" + (f" -> {out}" if out else "")]
  if model:
    centred = "centred" if model.get("centring") else "not centred"
    lines.append(f"  model     {model.get('workdir')} (step {model.get('step')}), "
                 f"{model.get('embedding_dim')}-d embeddings, {centred}")
  if labels is not None and n:
    names, counts = np.unique(np.asarray(labels), return_counts=True)
    shown = ", ".join(f"{a} {b}" for a, b in list(zip(names, counts))[:10])
    more = f", ... ({len(names) - 10} more)" if len(names) > 10 else ""
    lines.append(f"  speakers  {len(names)} by {labelled_by or 'label'}: {shown}{more}")
    p = pair_scores(arrays["embeddings"], labels)
    same = "none" if p["same"] is None else f"{p['same']:.3f}"
    different = "none" if p["different"] is None else f"{p['different']:.3f}"
    line = (f"  cosine    same speaker {same} ({p['same_pairs']} pairs), "
            f"different speakers {different} ({p['different_pairs']} pairs)")
    lines.append(line + ("" if p["eer"] is None else f"; EER {100 * p['eer']:.2f} %"))
  if plots:
    lines.append(f"  plots     {', '.join(str(p) for p in plots)}")
  return "\n".join(lines)


def load_encoder(workdir, step=None):
  from hive.encoder import Encoder
  cli.use_compilation_cache()  # Commands: the next run skips this one's compilations.
  return Encoder.from_workdir(workdir, step)


def embed_command(workdir, out, inputs, list_file=None, step=None, chunk_files=512,
                  num_workers=None, encoder=None, plot=None, labels_file=None) -> dict:
  """The command: writes the .npz (`out`) and/or the plots (`plot`, a directory) and
  returns the arrays; EmbedError when nothing could be embedded."""
  if not out and not plot:
    raise EmbedError("--out=FILE.npz or --plot=DIR is required")
  paths = collect_paths(inputs, list_file)
  if not paths:
    raise EmbedError("no audio files given (pass files, directories or --list=FILE)")
  if labels_file is not None:
    speaker_labels(paths, labels_file)  # A missing label fails before the model loads.
  if encoder is None:
    if not workdir:
      raise EmbedError("--workdir is required")
    encoder = load_encoder(workdir, step)
  report = lambda p, reason: print(f"skipped {p}: {reason}", file=sys.stderr)
  arrays = embed_paths(encoder, paths, chunk_files, num_workers, on_skip=report)
  n, m = len(arrays["paths"]), len(arrays["skipped_paths"])
  if n == 0:
    raise EmbedError(f"none of the {m} files could be embedded (reasons above)")
  model = encoder.model_record()
  arrays["model"] = np.array(json.dumps(model), dtype=np.str_)
  if out:
    workdir_lib.write_npz(out, arrays)
  labels = plots = None
  if plot or labels_file is not None:
    labels = speaker_labels(arrays["paths"].tolist(), labels_file)
  if plot:
    plots = write_plots(arrays["embeddings"], labels, plot)
  by = "parent folder" if labels_file is None else str(labels_file)
  print(format_summary(arrays, out, model, labels, by, plots))
  return arrays


def main(argv):
  f = flags.FLAGS
  embed_command(f.workdir, f.out, argv[1:], f.list, f.step, f.chunk_files, f.num_workers,
                plot=f.plot, labels_file=f.labels)


def run() -> None:
  cli.run(main, define_flags, errors=(audio.BadAudio,))


if __name__ == "__main__":
  run()
