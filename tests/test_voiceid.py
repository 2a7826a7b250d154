"""hive.voiceid: enrol -> identify -> verify on real clips, the JSON store, calibration, errors.

A tiny barely-trained model is used, so identification accuracy is not asserted:
only the mechanics (names, score ranges, self-match ~1.0, running means, errors).
"""

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hive import export, voiceid, workdir as workdir_lib
from hive.voiceid import commands as voiceid_commands
from hive.encoder import Encoder

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def enc(tiny):
  return Encoder.from_workdir(tiny["workdir"])


@pytest.fixture
def commands(enc, monkeypatch):
  """The command functions, run in-process with the already loaded model."""
  monkeypatch.setattr(voiceid_commands, "load_encoder", lambda workdir, step=None: enc)
  return voiceid_commands


def ocean_clips(shared_data, speakers=3, per_speaker=2):
  """{speaker: [paths]} of the first speechocean762 speakers (Kaldi wav.scp + utt2spk)."""
  root = shared_data / "speechocean762"
  if not (root / "wav.scp").is_file():
    pytest.skip(f"no speechocean762 under {shared_data}")
  wav = dict(line.split(maxsplit=1) for line in (root / "wav.scp").read_text().splitlines())
  clips = {}
  for line in sorted((root / "utt2spk").read_text().splitlines()):
    utt, spk = line.split()
    if len(clips.get(spk, [])) < per_speaker and (len(clips) < speakers or spk in clips):
      clips.setdefault(spk, []).append(str(root / wav[utt].strip()))
  return clips


def unit_rows(n, d=4, seed=0):
  x = np.random.default_rng(seed).normal(size=(n, d))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def a_store(d=4, **model):
  return voiceid.new_store({"workdir": "/w", "step": 7, "config_digest": "abc", **model}, d)


# --- round trip on real clips ----------------------------------------------------------


def test_enroll_identify_verify_round_trip(commands, tiny, shared_data, tmp_path):
  clips = ocean_clips(shared_data)
  db, workdir = tmp_path / "speakers.json", str(tiny["workdir"])
  for speaker, paths in clips.items():
    commands.run_enroll(db, workdir, f"spk{speaker}", paths[:1], out=io.StringIO())
  store = voiceid.load_store(db)
  names = {f"spk{s}" for s in clips}
  assert set(store["speakers"]) == names and store["model"]["step"] == 4
  assert all(e["clips"] == 1 for e in store["speakers"].values())

  out = io.StringIO()
  queries = [p for paths in clips.values() for p in paths]
  assert commands.run_identify(db, queries, as_json=True, out=out) == 0
  results = [json.loads(line) for line in out.getvalue().splitlines()]
  assert [r["file"] for r in results] == queries
  for r in results:
    assert r["best"] in names and -1 <= r["score"] <= 1
    assert len(r["candidates"]) == 3 and r["candidates"][0]["speaker"] == r["best"]
    assert [c["score"] for c in r["candidates"]] == sorted(
        (c["score"] for c in r["candidates"]), reverse=True)
  for speaker, paths in clips.items():  # An enrolment clip matches its own speaker exactly.
    (own,) = [r for r in results if r["file"] == paths[0]]
    assert own["speaker"] == f"spk{speaker}" and own["score"] == pytest.approx(1.0, abs=1e-5)

  text = io.StringIO()  # Only an enrolment clip itself scores 1.0.
  commands.run_identify(db, queries[1:2], threshold="1.0", out=text)
  assert text.getvalue().startswith(f"{queries[1]}\tunknown (best ")

  out = io.StringIO()
  first = queries[0]
  commands.run_verify(workdir, [first, first], out=out)
  assert out.getvalue().startswith("score 1.000: same speaker")
  out = io.StringIO()
  commands.run_verify(workdir, [first, queries[-1]], as_json=True, out=out)
  result = json.loads(out.getvalue())
  assert -1 <= result["score"] <= 1 and result["threshold"] == voiceid.DEFAULT_THRESHOLD
  assert result["same"] == (result["score"] >= voiceid.DEFAULT_THRESHOLD)


def test_reenrolment_adds_clips_and_skips_known_ones(commands, tiny, shared_data, tmp_path):
  (paths,) = ocean_clips(shared_data, speakers=1, per_speaker=3).values()
  db, workdir = tmp_path / "db.json", str(tiny["workdir"])
  commands.run_enroll(db, workdir, "ann", paths[:2], out=io.StringIO())
  commands.run_enroll(db, workdir, "ann", paths[1:], out=io.StringIO())  # paths[1] is known.
  entry = voiceid.load_store(db)["speakers"]["ann"]
  assert entry["clips"] == 3 and entry["files"] == [str(pathlib.Path(p).resolve()) for p in paths]
  mean = commands.load_encoder(workdir).embed_many(paths).astype(np.float64).mean(0)
  np.testing.assert_allclose(entry["mean"], mean, atol=1e-5)
  np.testing.assert_allclose(entry["embedding"], mean / np.linalg.norm(mean), atol=1e-5)
  with pytest.raises(voiceid.VoiceIdError, match="nothing new to enroll for ann"):
    commands.run_enroll(db, workdir, "ann", paths[:1], out=io.StringIO())


def test_version_1_store_is_read_as_version_2(tmp_path):
  """Version 1 recorded a digest of the whole training config; step, centring and size
  still identify the model, so the store stays usable and is written back as version 2."""
  store = voiceid.enroll(a_store(), "ann", unit_rows(1), ["a.wav"])
  old = json.loads(json.dumps(store))
  old["version"] = 1
  old["model"] = {"workdir": "/w", "step": 7, "config_digest": "0123456789abcdef",
                  "centring": "none"}
  path = tmp_path / "old.json"
  path.write_text(json.dumps(old))
  loaded = voiceid.load_store(path)
  assert loaded["version"] == 2 and "config_digest" not in loaded["model"]
  assert loaded["speakers"] == store["speakers"]
  same = {"step": 7, "centring": "none", "embedding_dim": 4, "settings_digest": "x"}
  voiceid.check_model(loaded, same)
  with pytest.raises(voiceid.VoiceIdError, match="checkpoint step 7 there, 8 now"):
    voiceid.check_model(loaded, {**same, "step": 8})


# --- pure functions ------------------------------------------------------------------


def test_running_mean_equals_enrolling_all_at_once():
  e = unit_rows(3)
  store = a_store()
  step_by_step = voiceid.enroll(voiceid.enroll(store, "bo", e[:2], ["a", "b"]), "bo", e[2:], ["c"])
  at_once = voiceid.enroll(store, "bo", e, ["a", "b", "c"])
  assert store["speakers"] == {}  # Pure: the input store is not changed.
  a, b = step_by_step["speakers"]["bo"], at_once["speakers"]["bo"]
  assert a["clips"] == 3 and a["files"] == ["a", "b", "c"]
  np.testing.assert_allclose(a["mean"], e.mean(0))
  np.testing.assert_allclose(a["embedding"], b["embedding"])
  assert np.linalg.norm(a["embedding"]) == pytest.approx(1.0)


def test_identify_threshold_and_ranking():
  e = unit_rows(4)
  store = a_store()
  for name, row in zip("abcd", e):
    store = voiceid.enroll(store, name, row[None], [f"{name}.flac"])
  hit = voiceid.identify(store, e[2])
  assert hit["speaker"] == "c" and hit["score"] == pytest.approx(1.0)
  assert [c["speaker"] for c in hit["candidates"]][0] == "c" and len(hit["candidates"]) == 3
  miss = voiceid.identify(store, -e[2], threshold=0.5)
  assert miss["speaker"] is None and miss["best"] != "c"
  assert voiceid_commands.format_match("q.wav", miss).startswith("q.wav\tunknown (best ")
  assert voiceid.verify(e[0], e[0])["same"] and not voiceid.verify(e[0], -e[0])["same"]
  with pytest.raises(voiceid.VoiceIdError, match="empty"):
    voiceid.identify(a_store(), e[0])
  with pytest.raises(voiceid.VoiceIdError, match="speaker name"):
    voiceid.enroll(store, " ", e[:1], ["x"])
  with pytest.raises(voiceid.VoiceIdError, match="16-d, the store holds 4-d"):
    voiceid.enroll(store, "z", np.ones((1, 16)), ["x"])


def test_store_round_trip_is_plain_json(tmp_path):
  store = voiceid.enroll(a_store(), "émile", unit_rows(2), ["1.wav", "2.wav"])
  path = tmp_path / "sub" / "store.json"
  voiceid.save_store(path, store)
  raw = path.read_bytes()
  assert json.loads(raw.decode("utf-8")) == store  # Plain JSON, nothing pickled.
  assert not raw.startswith(b"\x80") and b"\x80\x04" not in raw
  assert voiceid.load_store(path) == store
  assert [p.name for p in path.parent.iterdir()] == ["store.json"]  # No temp file left.
  top = json.loads(raw)
  assert (top["format"], top["version"], top["embedding_dim"]) == ("hive-voiceid", 2, 4)
  assert set(top["model"]) == {"workdir", "step", "config_digest"}
  assert top["threshold"] == voiceid.DEFAULT_THRESHOLD


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    (None, "no such speaker store"),
    ("{not json", "not a JSON speaker store"),
    ('["hive-voiceid"]', "not a hive-voiceid speaker store"),
    ('{"format": "other"}', "not a hive-voiceid speaker store"),
    ('{"format": "hive-voiceid", "version": 99}', "unsupported store version 99"),
    ('{"format": "hive-voiceid", "version": 1, "embedding_dim": 2, "model": {}, '
     '"threshold": 0.5, "speakers": {"x": {"embedding": [1], "mean": [1], "clips": 1, '
     '"files": ["a"]}}}', "corrupt speaker store .*not 2 finite numbers"),
])
def test_bad_stores_are_named(tmp_path, content, message):
  path = tmp_path / "db.json"
  if content is not None:
    path.write_text(content)
  with pytest.raises(voiceid.VoiceIdError, match=message) as info:
    voiceid.load_store(path)
  assert str(path) in str(info.value)


def test_mismatched_model_is_refused(commands, tiny, tmp_path):
  db = tmp_path / "db.json"
  voiceid.save_store(db, voiceid.enroll(a_store(16), "x", unit_rows(1, 16), ["x.wav"]))
  with pytest.raises(voiceid.VoiceIdError, match="made by another model"):
    commands.run_enroll(db, str(tiny["workdir"]), "y", [str(db)], out=io.StringIO())
  voiceid.save_store(db, voiceid.enroll(a_store(8), "x", unit_rows(1, 8), ["x.wav"]))
  with pytest.raises(voiceid.VoiceIdError, match="holds 8-d embeddings"):
    commands.run_identify(db, [str(db)], out=io.StringIO())


def test_bad_audio_and_empty_store_through_commands(commands, tiny, tmp_path, capsys):
  workdir, db = str(tiny["workdir"]), tmp_path / "db.json"
  empty, text = tmp_path / "empty.flac", tmp_path / "text.wav"
  empty.write_bytes(b"")
  text.write_text("hello\n")
  for path, reason in ((tmp_path / "gone.flac", "file does not exist"),
                       (empty, "empty file"), (text, "cannot decode audio")):
    with pytest.raises(voiceid.VoiceIdError, match=reason) as info:
      commands.run_enroll(db, workdir, "x", [str(path)], out=io.StringIO())
    assert str(path) in str(info.value)
  assert not db.exists()  # Nothing half-enrolled.
  voiceid.save_store(db, voiceid.new_store(commands.load_encoder(workdir).model_record(), 16))
  with pytest.raises(voiceid.VoiceIdError, match="no speakers enrolled"):
    commands.run_identify(db, [str(text)], out=io.StringIO())
  good = str(sorted(tiny["corpus"].rglob("*.flac"))[0])
  commands.run_enroll(db, workdir, "x", [good], out=io.StringIO())
  out = io.StringIO()
  assert commands.run_identify(db, [str(empty), good], out=out) == 1  # One bad file, one line.
  assert out.getvalue().startswith(good + "\tx 1.000")
  assert f"error: {empty}: empty file" in capsys.readouterr().err
  with pytest.raises(voiceid.VoiceIdError, match="exactly two"):
    commands.run_verify(workdir, [good], out=io.StringIO())


def test_calibration_from_report(tmp_path):
  db, report = tmp_path / "db.json", tmp_path / "report.json"
  voiceid.save_store(db, a_store())
  report.write_text(json.dumps({"eer": 0.1, "eer_threshold": 0.42, "checkpoint_step": 7}))
  voiceid_commands.run_calibrate(db, report=str(report), out=io.StringIO())
  store = voiceid.load_store(db)
  assert store["threshold"] == 0.42 and store["threshold_source"] == str(report)
  assert voiceid.parse_threshold("auto", str(report), store) == 0.42
  assert voiceid.parse_threshold(None, None, store) is None  # Not given: the store's.
  report.write_text(json.dumps({"eer_threshold": 0.42, "checkpoint_step": 9}))
  with pytest.raises(voiceid.VoiceIdError, match="checkpoint_step 9, the model it would calibrate has 7"):
    voiceid_commands.run_calibrate(db, report=str(report), out=io.StringIO())
  report.write_text(json.dumps({"eer": 0.1}))
  with pytest.raises(voiceid.VoiceIdError, match="no numeric eer_threshold"):
    voiceid.threshold_from_report(report)
  for bad, message in (("auto", "needs --report"), ("high", "expected a number"),
                       ("1.5", "not a cosine score")):
    with pytest.raises(voiceid.VoiceIdError, match=message):
      voiceid.parse_threshold(bad, None)
  voiceid_commands.run_calibrate(db, threshold="0.3", out=io.StringIO())
  assert voiceid.load_store(db)["threshold"] == 0.3


def test_model_threshold_seeds_new_stores_and_verify(tiny, shared_data, tmp_path, monkeypatch,
                                                     capsys):
  workdir = tmp_path / "model"
  shutil.copytree(tiny["workdir"], workdir)  # The shared tiny model stays uncalibrated.
  enc = Encoder.from_workdir(workdir)
  monkeypatch.setattr(voiceid_commands, "load_encoder", lambda w, step=None: enc)
  assert voiceid.model_threshold(enc) == (voiceid.DEFAULT_THRESHOLD, "default")
  for db in (None, str(tmp_path / "db.json")):  # Neither, or both: which one to calibrate?
    with pytest.raises(voiceid.VoiceIdError, match="takes one of --db=STORE .* and --workdir"):
      voiceid_commands.run_calibrate(db, threshold="0.3", workdir=None if db is None else str(workdir))

  report = tmp_path / "report.json"
  made_for = {"checkpoint_step": enc.step, "centring": workdir_lib.mean_digest(enc.embedding_mean)}
  report.write_text(json.dumps({"eer_threshold": 0.35, **made_for}))
  voiceid_commands.run_calibrate(None, report=str(report), workdir=str(workdir), out=io.StringIO())
  assert voiceid.model_threshold(enc) == (0.35, f"model: {report}")

  paths = next(iter(ocean_clips(shared_data, speakers=1).values()))
  db = tmp_path / "db.json"
  voiceid_commands.run_enroll(db, str(workdir), "a", paths[:1], out=io.StringIO())
  store = voiceid.load_store(db)
  assert (store["threshold"], store["threshold_source"]) == (0.35, f"model: {report}")
  out = io.StringIO()
  voiceid_commands.run_verify(str(workdir), paths, out=out)
  assert "(threshold 0.350)" in out.getvalue()
  export.export_workdir(workdir, tmp_path / "export")  # Shipped with the model.
  assert json.loads((tmp_path / "export" / "threshold.json").read_text())["threshold"] == 0.35

  calibrated = workdir / "threshold.json"
  for key, value in (("checkpoint_step", enc.step + 1), ("centring", "0123456789abcdef")):
    calibrated.write_text(json.dumps({"threshold": 0.35, **made_for, key: value}))
    assert voiceid.model_threshold(enc) == (voiceid.DEFAULT_THRESHOLD, "default")
    assert f"{calibrated} was calibrated for" in capsys.readouterr().err
  report.write_text(json.dumps({"eer_threshold": 0.35, **made_for, "centring": "other"}))
  with pytest.raises(voiceid.VoiceIdError, match="centring other"):
    voiceid_commands.run_calibrate(None, report=str(report), workdir=str(workdir))
  calibrated.write_text("{")
  with pytest.raises(voiceid.VoiceIdError, match="threshold.json: not a JSON threshold file"):
    voiceid.model_threshold(enc)


def test_cli_errors_are_one_line_with_status_2(tmp_path):
  corrupt = tmp_path / "db.json"
  corrupt.write_text("not json")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  for args, message in (
      (["enroll", f"--db={corrupt}", "--workdir=w", "a.flac"], "enroll needs --speaker=NAME"),
      (["identify", f"--db={corrupt}", "a.flac"], f"{corrupt}: not a JSON speaker store")):
    done = subprocess.run([sys.executable, "-m", "hive.voiceid", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
