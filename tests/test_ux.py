"""The first hour of a new user: readable summaries, plots of one's own files, verify with the
shipped model, and the Python API's compilation cache."""

import io
import json
import os
import pathlib
import subprocess
import sys
import tomllib

import jax
import numpy as np
import pytest
from PIL import Image

from hive import embed, evaluate, workdir as workdir_lib
from hive.encoder import PRETRAINED_DIR, Encoder
from hive.voiceid import VoiceIdError, commands as voiceid_commands, new_store

REPO = pathlib.Path(__file__).resolve().parents[1]


def check_png(path, size):
  """A PNG that opens, has the figure's pixel size, holds a picture (not one flat colour)
  and is small enough for a README."""
  with Image.open(path) as image:
    image.load()
    assert image.format == "PNG" and image.size == size
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
  assert colours is not None and len(colours) > 20
  assert 5_000 < os.path.getsize(path) < 200_000


# --- hive.evaluate: the summary ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_report(tiny, tiny_encoder, tiny_examples):
  """A report as hive.evaluate's main builds it."""
  report = evaluate.evaluate(tiny_encoder, tiny_examples)
  report.pop("_embeddings")
  report.update({"workdir": str(tiny["workdir"]), "checkpoint_step": tiny_encoder.step,
                 "centring": workdir_lib.mean_digest(tiny_encoder.embedding_mean),
                 "data": str(tiny["corpus"]), "split": "all", "segment_seconds": None,
                 "skipped_files": 0, "plots": ["p/det.png", "p/embeddings.png"]})
  return evaluate.strict_json(report)


def test_evaluate_prints_json_on_stdout_and_its_numbers_on_stderr(tiny_report, capsys):
  r = tiny_report
  evaluate.print_report(r, "json", out="r.json")
  captured = capsys.readouterr()
  assert json.loads(captured.out.strip().splitlines()[-1]) == r  # What scripts read.
  summary = captured.err
  assert summary == evaluate.format_summary(r, "r.json") + "\n"
  expected = [
      f"hive.evaluate: {pathlib.Path(r['data']).name}, all speakers, whole utterances",
      f"{r['workdir']} (step {r['checkpoint_step']}), centred",
      f"speakers     {r['num_speakers']}; utterances {r['num_utterances']} "
      f"({r['seconds_of_audio']:.1f} s of audio",
      f"trials       {r['num_trials']:,} pairs, {r['num_target_trials']:,} same-speaker",
      f"EER          {100 * r['eer']:.2f} % (threshold {r['eer_threshold']:.3f})",
      f"minDCF       {r['min_dcf']:.3f} (p_target 0.01, ",
      f"one-shot ID  {100 * r['identification_accuracy']:.2f} % of "
      f"{r['num_identification_trials']} utterances",
      f"gender       {100 * r['gender_accuracy']:.2f} % of {r['num_gender_labelled']} labelled",
      "plots        p/det.png, p/embeddings.png", "report       r.json"]
  for line in expected:
    assert line in summary, line
  evaluate.print_report(r, "table")
  captured = capsys.readouterr()  # The summary alone, on stdout.
  assert captured.out == evaluate.format_summary(r) + "\n" and captured.err == ""
  assert "report " not in captured.out  # No --out, no report line.


def test_evaluate_summary_by_hand():
  report = {"data": "/data/librispeech/", "split": "dev", "segment_seconds": 3.0,
            "workdir": "runs/x", "checkpoint_step": 12, "centring": None,
            "num_speakers": 1234, "num_utterances": 5000, "seconds_of_audio": 12345.67,
            "embed_seconds": 9.87, "skipped_files": 2, "num_trials": 12497500,
            "num_target_trials": 20000, "eer": 0.0588, "eer_threshold": 0.32547,
            "min_dcf": 0.6436, "min_dcf_threshold": None, "identification_accuracy": None,
            "num_identification_trials": 0, "gender_accuracy": None, "num_gender_labelled": 0}
  assert evaluate.format_summary(report).splitlines() == [
      "hive.evaluate: librispeech, the model's dev speakers, 3-s segments",
      "  model        runs/x (step 12), not centred",
      "  speakers     1,234; utterances 5,000 (12,345.7 s of audio, embedded in 9.9 s); "
      "2 files skipped",
      "  trials       12,497,500 pairs, 20,000 same-speaker",
      "  EER          5.88 % (threshold 0.325)",
      "  minDCF       0.644 (p_target 0.01, no finite threshold)",
      "  one-shot ID  n/a (no speaker has a second utterance)",
      "  gender       n/a (no gender labels)"]


# --- hive.embed: labels, the summary, the plots --------------------------------------------


def test_pair_scores_by_hand():
  e = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # Unit rows.
  p = embed.pair_scores(e, ["a", "a", "b"])
  # Same: (0, 1) = 0.8. Different: (0, 2) = 0, (1, 2) = 0.6. Every same pair scores above
  # every different one, so no threshold errs: EER 0.
  assert p["same"] == pytest.approx(0.8) and p["same_pairs"] == 1
  assert p["different"] == pytest.approx(0.3) and p["different_pairs"] == 2
  assert p["eer"] == pytest.approx(0.0)
  lone = embed.pair_scores(e, ["a", "b", "c"])  # No same-speaker pair: no EER.
  assert lone["same"] is None and lone["same_pairs"] == 0 and lone["eer"] is None


def test_speaker_labels_from_folders_and_from_a_labels_file(tmp_path, monkeypatch):
  paths = [str(tmp_path / "alice" / "1.wav"), "bob/2.wav", str(tmp_path / "my clips" / "3.wav")]
  assert embed.speaker_labels(paths) == ["alice", "bob", "my clips"]
  labels = tmp_path / "labels.txt"
  labels.write_text(f"# path label\n\n{paths[0]} A\nbob/2.wav   B\nmy clips/3.wav C\n")
  monkeypatch.chdir(tmp_path)  # "bob/2.wav" on the command line is relative to here...
  (tmp_path / "sub").mkdir()
  nested = tmp_path / "sub" / "labels.txt"  # ...and in a labels file, to its folder.
  nested.write_text("../bob/2.wav B2\n")
  assert embed.speaker_labels(paths, labels) == ["A", "B", "C"]
  assert embed.speaker_labels(paths[1:2], nested) == ["B2"]
  with pytest.raises(embed.EmbedError, match=r"labels.txt: no label for 1 of the 2 files "
                                             r"\(first: .*other.wav\)"):
    embed.speaker_labels([paths[0], "other.wav"], labels)
  labels.write_text("lonely\n")
  with pytest.raises(embed.EmbedError, match=r"labels.txt:1: expected 'PATH LABEL'"):
    embed.speaker_labels(paths, labels)
  with pytest.raises(embed.EmbedError, match="no such labels file"):
    embed.speaker_labels(paths, tmp_path / "missing.txt")


def test_map_2d_keeps_planar_distances_and_draws_any_count():
  rng = np.random.default_rng(0)
  basis = np.linalg.qr(rng.normal(size=(16, 2)))[0].T  # Two orthonormal rows in 16-D.
  points = rng.normal(size=(5, 2)) @ basis + 0.3
  xy = embed.map_2d(points)  # Up to 5 points: PCA, a rigid motion of planar data.
  distances = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)
  np.testing.assert_allclose(distances(xy), distances(points), atol=1e-9)
  assert embed.map_2d(points[:1]).shape == (1, 2)
  many = embed.map_2d(rng.normal(size=(12, 16)))  # t-SNE.
  assert many.shape == (12, 2) and np.isfinite(many).all()


@pytest.fixture(scope="module")
def two_speaker_folders(tiny, tmp_path_factory):
  """alice/ and bob/: the tiny corpus's first two speakers, three clips each (links)."""
  root = tmp_path_factory.mktemp("my-speakers")
  speakers = sorted(p for p in (tiny["corpus"] / "train-synthetic").iterdir() if p.is_dir())
  for name, speaker in zip(("alice", "bob"), speakers):
    (root / name).mkdir()
    for clip in sorted(speaker.rglob("*.flac"))[:3]:
      (root / name / clip.name).symlink_to(clip)
  return root


def test_embed_plot_writes_pngs_and_a_summary_with_speakers(tiny_encoder, two_speaker_folders,
                                                            tmp_path, capsys):
  plots = tmp_path / "plots"
  arrays = embed.embed_command(None, None, [str(two_speaker_folders)], encoder=tiny_encoder,
                               plot=plots)
  out = capsys.readouterr().out
  labels = embed.speaker_labels(arrays["paths"].tolist())
  assert labels == ["alice"] * 3 + ["bob"] * 3
  p = embed.pair_scores(arrays["embeddings"], labels)
  assert out.splitlines() == [
      "embedded 6, skipped 0",
      f"  model     {tiny_encoder.source} (step {tiny_encoder.step}), 16-d embeddings, centred",
      "  speakers  2 by parent folder: alice 3, bob 3",
      f"  cosine    same speaker {p['same']:.3f} (6 pairs), different speakers "
      f"{p['different']:.3f} (9 pairs); EER {100 * p['eer']:.2f} %",
      f"  plots     {plots / 'map.png'}, {plots / 'similarity.png'}"]
  check_png(plots / "map.png", (750, 600))
  check_png(plots / "similarity.png", (700, 600))
  assert sorted(os.listdir(plots)) == ["map.png", "similarity.png"]  # No .npz without --out.


def test_embed_labels_file_names_the_speakers(tiny_encoder, two_speaker_folders, tmp_path,
                                              capsys):
  clips = sorted(str(p) for p in two_speaker_folders.rglob("*.flac"))
  labels = tmp_path / "labels.txt"
  labels.write_text("".join(f"{c} {'x' if i % 2 else 'y'}\n" for i, c in enumerate(clips)))
  out = tmp_path / "e.npz"
  embed.embed_command(None, out, clips, encoder=tiny_encoder, labels_file=labels)
  printed = capsys.readouterr().out
  assert printed.startswith(f"embedded 6, skipped 0 -> {out}\n")
  assert f"  speakers  2 by {labels}: x 3, y 3\n" in printed and "plots" not in printed
  with pytest.raises(embed.EmbedError, match="--out=FILE.npz or --plot=DIR is required"):
    embed.embed_command(None, None, clips, encoder=tiny_encoder)


def test_evaluate_map_marks_gender(tiny_report, tiny_encoder, tiny_examples, tmp_path):
  embeddings = tiny_encoder.embed_features(tiny_examples.features)
  path = tmp_path / "embeddings.png"
  evaluate.plot_embeddings(embeddings, tiny_examples.speakers, tiny_examples.genders, path)
  check_png(path, (750, 600))


# --- verify with the shipped model -------------------------------------------------------


def two_clips(shared_data):
  root = shared_data / "speechocean762"
  if not (root / "wav.scp").is_file():
    pytest.skip(f"no speechocean762 under {shared_data}")
  lines = sorted((root / "wav.scp").read_text().splitlines())[:2]
  return [str(root / line.split(maxsplit=1)[1].strip()) for line in lines]


def test_verify_without_workdir_uses_the_shipped_model(shared_data, tmp_path):
  a, b = two_clips(shared_data)
  out = io.StringIO()
  voiceid_commands.run_verify(None, [a, b], out=out)
  shipped = voiceid_commands.load_encoder(str(PRETRAINED_DIR), None)  # The one it loaded.
  assert shipped.source == str(PRETRAINED_DIR)
  score = float(Encoder.similarity(*shipped.embed_many([a, b])))
  threshold = json.loads((PRETRAINED_DIR / "threshold.json").read_text())["threshold"]
  decision = "same speaker" if score >= threshold else "different speakers"
  line = out.getvalue()
  assert line.startswith(f"score {score:.3f}")
  assert line.endswith(f": {decision} (threshold {threshold:.3f}, "
                       "the shipped model pretrained/hive-mtl)\n")
  if (PRETRAINED_DIR / "calibration.json").is_file():  # A calibrated model also prints the LLR.
    assert ", LLR " in line
  out = io.StringIO()
  voiceid_commands.run_verify(None, [a, b], as_json=True, out=out)
  result = json.loads(out.getvalue())
  assert result["workdir"] == str(PRETRAINED_DIR) and result["score"] == pytest.approx(score)
  # A store's threshold is for the store's model: with --db, the model must be named.
  db = tmp_path / "db.json"
  db.write_text(json.dumps(new_store(shipped.model_record(), shipped.config.model.embed_dim)))
  with pytest.raises(VoiceIdError, match="verify needs --workdir"):
    voiceid_commands.run_verify(None, [a, b], db=str(db))


def test_hive_verify_console_script(shared_data):
  a, b = two_clips(shared_data)
  scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
  module, function = scripts["hive-verify"].split(":")
  code = (f"import sys; sys.argv = ['hive-verify', {a!r}, {b!r}]; "
          f"from {module} import {function}; {function}()")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.startswith("score ")
  assert done.stdout.rstrip().endswith(", the shipped model pretrained/hive-mtl)")


# --- the Python API's compilation cache ----------------------------------------------------


def test_loading_a_model_turns_on_hives_compilation_cache_unless_configured(tiny, tmp_path,
                                                                             monkeypatch):
  saved = (jax.config.jax_compilation_cache_dir,
           jax.config.jax_persistent_cache_min_compile_time_secs)
  monkeypatch.setenv("HIVE_CACHE", str(tmp_path))
  try:
    jax.config.update("jax_compilation_cache_dir", None)
    Encoder.from_workdir(tiny["workdir"], compilation_cache=False)  # The opt-out.
    assert jax.config.jax_compilation_cache_dir is None
    Encoder.from_workdir(tiny["workdir"])
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax")
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    Encoder.from_workdir(tiny["workdir"])  # A directory the user chose is kept.
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
  finally:
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])
