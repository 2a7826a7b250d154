"""Time to the first embedding from a fresh Python process, before and after, cold and warm.

    python benchmarks/first_embedding.py [--before /tmp/hive-before] [--repeats 5]
                                         [--file PATH] [--no_resemblyzer] [--no_write]

What a new user does: `import hive; enc = hive.Encoder.pretrained(); enc.embed(path)` on
one short file (the first speechocean762 utterance). Each measurement is a fresh process,
so every import, the model load, librosa's first call and XLA's compilation are counted:
  * cold: an empty hive cache ($HIVE_CACHE, so an empty XLA compilation cache);
  * warm: a second process on the same cache (what every later run of a user meets).
"before" is the tree of commit 28dea04 (loading a model imported TensorFlow, TFDS, optax
and clu, and the Python API had no compilation cache): a separate checkout of it,
`git worktree add --detach /tmp/hive-before 28dea04`, run with this repository's Python
and PYTHONPATH on that checkout; "after" is this tree. Resemblyzer (`VoiceEncoder()`,
`preprocess_wav`, `embed_utterance`) is the reference the issue compared against.
The variants alternate within each repeat (the order flips every repeat) and the median
of --repeats is reported, with the load average, since the machine may be shared.
`embed` is `Encoder.embed` in its two halves: `features_of` (decoding, log-mel) and
`embed_features` (the model). Before and after must give the same embedding (checked).
Updates the "First embedding" section of RESULTS.md; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results  # noqa: E402

DEFAULT_FILE = REPO.parent / "shared" / "data" / "speechocean762" / "wav" / "SPEAKER0001" / \
    "000010053.flac"
HEAVY = ("tensorflow", "tensorflow_datasets", "optax", "clu", "torch")

# Run in a fresh interpreter whose working directory is the tree under test.
HIVE_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import hive
Encoder = hive.Encoder
t1 = time.perf_counter()
enc = Encoder.pretrained()
t2 = time.perf_counter()
mel = enc.features_of(sys.argv[1])
t3 = time.perf_counter()
embedding = enc.embed_features([mel])[0]
t4 = time.perf_counter()
enc.embed(sys.argv[1])
t5 = time.perf_counter()
import jax
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "features": t3 - t2, "embed": t4 - t3,
                  "steady": t5 - t4, "hive": hive.__file__, "frames": len(mel),
                  "cache_dir": jax.config.jax_compilation_cache_dir,
                  "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(%r)),
                  "embedding": [float(x) for x in embedding]}))
""" % (HEAVY,)

RESEMBLYZER_CHILD = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
from resemblyzer import VoiceEncoder, preprocess_wav
t1 = time.perf_counter()
enc = VoiceEncoder("cpu", verbose=False)
t2 = time.perf_counter()
wav = preprocess_wav(sys.argv[1])
t3 = time.perf_counter()
enc.embed_utterance(wav)
t4 = time.perf_counter()
enc.embed_utterance(preprocess_wav(sys.argv[1]))
t5 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "features": t3 - t2, "embed": t4 - t3,
                  "steady": t5 - t4}))
"""

STAGES = ("import", "load", "features", "embed")


def run_child(code: str, tree: pathlib.Path, path: str, cache: str) -> dict:
  """One fresh process: its stage times (s), the process's wall time and the load average."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", HIVE_CACHE=cache,
             PYTHONPATH=str(tree))
  for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE"):
    env.pop(name, None)  # The user's settings would change what is measured.
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  done = subprocess.run([sys.executable, "-c", code, path], cwd=tree, env=env,
                        capture_output=True, text=True, timeout=600)
  wall = time.perf_counter() - start
  if done.returncode != 0:
    raise RuntimeError(f"child failed in {tree}:\n{done.stderr[-3000:]}")
  out = json.loads(done.stdout.strip().splitlines()[-1])
  if "hive" in out and not pathlib.Path(out["hive"]).resolve().is_relative_to(tree.resolve()):
    raise RuntimeError(f"the child imported {out['hive']}, not the tree {tree}")
  out["first"] = sum(out[k] for k in STAGES)
  out["wall"] = wall
  out["loadavg"] = (load_before + os.getloadavg()[0]) / 2
  return out


def median(values) -> float:
  values = sorted(values)
  n = len(values)
  return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--before", default="/tmp/hive-before",
                  help="a checkout of the 'before' commit (git worktree add --detach DIR 28dea04)")
  ap.add_argument("--no_before", action="store_true", help="measure this tree only")
  ap.add_argument("--file", default=str(DEFAULT_FILE), help="the short audio file to embed")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--no_resemblyzer", action="store_true")
  ap.add_argument("--no_write", action="store_true")
  args = ap.parse_args(argv)
  if args.repeats < 1:
    print(f"error: --repeats must be at least 1, got {args.repeats}", file=sys.stderr)
    return 2
  if not os.path.isfile(args.file):
    print(f"error: {args.file}: no such audio file", file=sys.stderr)
    return 2
  trees = {"after": REPO}
  if not args.no_before:
    before = pathlib.Path(args.before)
    if not (before / "hive" / "encoder.py").is_file():
      print(f"error: {before}: not a hive checkout; make one with `git worktree add --detach "
            f"{before} 28dea04`, or pass --no_before", file=sys.stderr)
      return 2
    trees = {"before": before, "after": REPO}
  variants = [(name, HIVE_CHILD, tree) for name, tree in trees.items()]
  if not args.no_resemblyzer:
    variants.append(("Resemblyzer", RESEMBLYZER_CHILD, REPO))

  runs = {(name, kind): [] for name, _, _ in variants for kind in ("cold", "warm")}
  cache_entries = []
  with tempfile.TemporaryDirectory(prefix="hive-first-embedding-") as scratch:
    for r in range(args.repeats):
      order = variants if r % 2 == 0 else variants[::-1]
      for name, code, tree in order:
        cache = os.path.join(scratch, f"{name}-{r}")  # Empty: a cold compilation cache.
        for kind in ("cold", "warm"):
          out = run_child(code, tree, args.file, cache)
          runs[(name, kind)].append(out)
          print(f"repeat {r + 1} {name:11s} {kind}: first embedding {out['first']:.2f} s "
                f"(load average {out['loadavg']:.1f})", file=sys.stderr, flush=True)
        if name == "after":
          jax_cache = pathlib.Path(cache) / "jax"
          cache_entries.append(len(list(jax_cache.iterdir())) if jax_cache.is_dir() else 0)

  embeddings = {name: runs[(name, "cold")][0]["embedding"] for name in trees}
  same_model = "before" in embeddings and all(
      (t / "pretrained" / "hive-mtl" / "config.json").read_bytes()
      == (REPO / "pretrained" / "hive-mtl" / "config.json").read_bytes() for t in trees.values())
  if "before" in embeddings and not same_model:
    print("note: the two trees ship different models (release 4 before, release 5 after), so "
          "their embeddings are not compared", file=sys.stderr)
  if same_model:
    diff = max(abs(a - b) for a, b in zip(embeddings["before"], embeddings["after"]))
    if diff > 1e-4:
      print(f"error: before and after embed the file differently (max |diff| {diff:.2g})",
            file=sys.stderr)
      return 1
  table = {f"{name} {kind}": {k: round(median([o[k] for o in outs]), 2)
                              for k in STAGES + ("first", "steady", "wall")}
           for (name, kind), outs in runs.items()}
  loads = [o["loadavg"] for outs in runs.values() for o in outs]
  after = runs[("after", "cold")][0]
  heavy = {name: runs[(name, "cold")][0]["heavy"] for name in trees}
  import soundfile as sf
  info = sf.info(args.file)

  programs = round(median(cache_entries))
  env = results.machine()
  lines = [
      "## First embedding", "",
      f"Run {env['date']} on {env['platform']} ({env['cpu_count']} CPUs), Python "
      f"{env['python']}, by `python benchmarks/first_embedding.py`. `import hive; enc = "
      f"hive.Encoder.pretrained(); enc.embed(path)` on one {info.duration:.1f} s file "
      f"(`{pathlib.Path(args.file).name}` of speechocean762, {after['frames']} frames), "
      f"each run a fresh process; cold: an empty compilation cache, warm: a second process "
      f"on the same cache. Median of {args.repeats} repeats, the variants alternating; the "
      f"machine was shared: load average {min(loads):.1f} to {max(loads):.1f} on its "
      f"{env['cpu_count']} cores, so compare rows of one run, not across dates. before: "
      f"commit 28dea04 (loading imported {', '.join(heavy.get('before', [])) or 'nothing heavy'}; "
      f"no compilation cache in the Python API); after: this tree (imports "
      f"{', '.join(heavy['after']) or 'none of TensorFlow, TFDS, optax, clu'}; the cache in "
      f"`$HIVE_CACHE/jax`: {programs} compiled program{'s' if programs != 1 else ''} after the "
      f"cold run).", "",
      "| variant | import s | load s | features s | model s | first embedding s | "
      "process wall s | next embed s |",
      "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for key, row in table.items():
    lines.append(f"| {key} | {row['import']:.2f} | {row['load']:.2f} | {row['features']:.2f} | "
                 f"{row['embed']:.2f} | **{row['first']:.2f}** | {row['wall']:.2f} | "
                 f"{row['steady']:.3f} |")
  lines += ["", "import: `import hive; hive.Encoder` (Resemblyzer: `from resemblyzer import "
            "...`); load: `Encoder.pretrained()` (`VoiceEncoder()`); features: "
            "`features_of` (`preprocess_wav`); model: `embed_features` (`embed_utterance`); "
            "first embedding: their sum; next embed: the same file again in that process."]
  section = "\n".join(lines) + "\n"
  print(section)
  if not args.no_write:
    results.update_section("First embedding", section)
  print(json.dumps({"first_embedding_s": {k: v["first"] for k, v in table.items()},
                    "stages_s": table, "repeats": args.repeats,
                    "loadavg": [round(min(loads), 1), round(max(loads), 1)],
                    "file_seconds": round(info.duration, 2), "date": env["date"]}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
