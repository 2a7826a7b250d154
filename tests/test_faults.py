"""Fault injection: concurrent writers, damaged checkpoints, full disks, kill -9.

The issue [reliability] as tests, each named after its row: what a user does, the fault,
and what they must see (every enrolment kept; the newest intact checkpoint, loudly; one
`error:` line with exit status 2 and no traceback or shutdown noise; earlier state intact;
the same command works again once the fault is gone).

Small disks are real tmpfs mounts (`mount -t tmpfs -o size=...`, which needs root); where
this process may not mount, those tests skip, and the mocked ones, which raise the error a
full disk gives where orbax or the atomic writer meets it, still cover each writer.
Commands run as subprocesses where exit status, stderr or kill -9 is what is tested.
"""

import errno
import logging
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import tiny_config
from hive import checkpoint, cli, export, train, workdir as workdir_lib
from hive.encoder import Encoder
from hive.models import abstract_params
from hive.voiceid import store as store_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = pathlib.Path(__file__).resolve().parent
ENV = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
NOISE = ("Traceback", "Event loop is closed", "sys.meta_path is None", "Exception ignored")


def command(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=timeout)


def start(*args):
  return subprocess.Popen([sys.executable, "-m", *map(str, args)], cwd=REPO, env=ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def one_error(stderr: str) -> str:
  """The one `error:` line of a failed command, after checking there is nothing else a
  user would take for a crash."""
  errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, stderr[-4000:]
  for noise in NOISE:
    assert noise not in stderr, stderr[-4000:]
  return errors[0][len("error: "):]


def wait_for(condition, process=None, timeout=180.0, poll=0.005):
  """Polls `condition()` until it is true; fails if `process` ends first or time runs out."""
  deadline = time.monotonic() + timeout
  while not condition():
    if process is not None and process.poll() is not None:
      pytest.fail(f"the command ended before the fault could be injected: "
                  f"{process.stderr.read()[-2000:]}")
    if time.monotonic() > deadline:
      pytest.fail("timed out waiting for the command")
    time.sleep(poll)


def kill_9(process) -> None:
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL


def write_config(folder, tiny, steps, **train_fields) -> pathlib.Path:
  """A config file for `python -m hive.main`: the tiny model on the tiny corpus."""
  fields = "".join(f"  c.train.{k} = {v!r}\n" for k, v in train_fields.items())
  file = folder / "tiny_config.py"
  file.write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                  "from conftest import tiny_config\n\n\ndef get_config():\n"
                  f"  c = tiny_config({str(tiny['corpus'])!r}, {str(tiny['data_dir'])!r}, "
                  f"steps={steps})\n{fields}  return c\n")
  return file


# --- small disks ----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
  """mount(size) -> a folder on a new tmpfs of that size, unmounted afterwards. Skips
  where this process may not mount one."""
  mounted = []

  def mount(size: str, name: str = "disk") -> pathlib.Path:
    folder = tmp_path / name
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
      pytest.skip("a tmpfs needs root to mount; the mocked tests cover these writers")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
      pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    mounted.append(folder)
    return folder

  yield mount
  for folder in mounted:
    subprocess.run(["umount", "-l", str(folder)], check=False)


def resize(disk, size: str) -> None:
  subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def fill(disk) -> None:
  """Fills a disk to the last byte."""
  fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
  try:
    while os.write(fd, b"\0" * 4096):
      pass
  except OSError as e:
    assert e.errno == errno.ENOSPC
  finally:
    os.close(fd)


def files_under(folder) -> list[str]:
  return sorted(str(p.relative_to(folder)) for p in pathlib.Path(folder).rglob("*"))


# --- row 1: concurrent enrolments -------------------------------------------------------


def test_four_concurrent_enrolments_all_land(tiny, tmp_path):
  """Four `hive.voiceid enroll` processes into one store at once, different speakers."""
  clips = sorted(tiny["corpus"].rglob("*.flac"))[:4]
  db = tmp_path / "speakers.json"
  processes = [start("hive.voiceid", "enroll", f"--db={db}", f"--workdir={tiny['workdir']}",
                     f"--speaker=spk{i}", clip) for i, clip in enumerate(clips)]
  for i, p in enumerate(processes):
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert out.startswith(f"enrolled spk{i}: 1 clips (1 new)"), out
  stored = store_lib.load_store(db)
  assert sorted(stored["speakers"]) == ["spk0", "spk1", "spk2", "spk3"]
  for i, clip in enumerate(clips):
    assert stored["speakers"][f"spk{i}"]["files"] == [str(clip.resolve())]


WRITER = """
import sys
import numpy as np
from hive.voiceid import store
db, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
  store.update_store(db, lambda s: store.enroll(
      s or store.new_store({"step": 1}, 4), f"spk{i}", np.eye(4)[[i % 4]] + 0.1, [f"c{i}"]))
"""


def test_readers_always_see_a_whole_store_while_it_is_written(tmp_path):
  """identify/verify read the store without the lock: every read is a complete store."""
  db = tmp_path / "speakers.json"
  store_lib.save_store(db, store_lib.new_store({"step": 1}, 4))
  writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), "60"], cwd=REPO, env=ENV,
                            stderr=subprocess.PIPE, text=True)
  counts = []
  while writer.poll() is None:
    counts.append(len(store_lib.load_store(db)["speakers"]))  # Raises on a partial file.
  assert writer.returncode == 0, writer.stderr.read()
  assert counts == sorted(counts) and len(store_lib.load_store(db)["speakers"]) == 60


def test_a_store_held_too_long_is_a_clear_refusal(tmp_path, monkeypatch):
  db = tmp_path / "speakers.json"
  store_lib.save_store(db, store_lib.new_store({"step": 1}, 4))
  before = db.read_bytes()
  monkeypatch.setattr(store_lib, "LOCK_TIMEOUT", 0.2)
  with workdir_lib.FileLock(store_lib.lock_file(db), "another writer"):
    with pytest.raises(store_lib.VoiceIdError) as raised:
      store_lib.update_store(db, lambda s: store_lib.enroll(s, "a", np.eye(4)[:1], ["a.flac"]))
  assert str(raised.value) == (
      f"{db}: speaker store is in use by another process (pid {os.getpid()} on "
      f"{socket.gethostname()}); waited 0.2 s; try again")
  assert db.read_bytes() == before


# --- row 2: a damaged checkpoint ---------------------------------------------------------


@pytest.fixture(scope="module")
def two_checkpoints(tiny, tmp_path_factory):
  """A tiny run with checkpoints at steps 2 and 4 (copy it before damaging it)."""
  config = tiny_config(tiny["corpus"], tiny["data_dir"], steps=4)
  config.train.checkpoint_every = 2
  workdir = tmp_path_factory.mktemp("two-checkpoints") / "run"
  train.train_and_evaluate(config, str(workdir))
  assert checkpoint.make_manager(workdir, create=False).all_steps() == [2, 4]
  return {"workdir": workdir, "config": config}


def damaged_copy(two_checkpoints, tmp_path, *steps, every_file=False) -> pathlib.Path:
  """A copy of the run whose `steps` have their largest data file (or `every_file` of their
  data: the model parameters need not be in the largest) cut to half its size."""
  workdir = tmp_path / "run"
  shutil.copytree(two_checkpoints["workdir"], workdir)
  for step in steps:
    data = sorted((workdir / "checkpoints" / str(step)).rglob("d/*"),
                  key=lambda f: f.stat().st_size)
    for file in data if every_file else data[-1:]:
      os.truncate(file, file.stat().st_size // 2)
  return workdir


# orbax leaves the coroutine of a failed read unawaited; pytest would report it as a warning.
unawaited_read = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def model_abstract(workdir):
  config = workdir_lib.load_config(workdir)
  return abstract_params(config, len(workdir_lib.load_speakers(workdir)["train"]))


@unawaited_read
def test_training_resumes_from_the_newest_intact_checkpoint(two_checkpoints, tmp_path, caplog):
  workdir = damaged_copy(two_checkpoints, tmp_path, 4)
  config = two_checkpoints["config"].copy_and_resolve_references()
  config.train.steps = 6
  summary = train.train_and_evaluate(config, str(workdir))  # The same command, run again.
  assert summary["steps"] == 6
  warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
  assert f"Checkpoint {workdir}/checkpoints/4 is damaged (OUT_OF_RANGE" in warnings
  assert "set aside as 4.damaged. Resuming from the newest intact checkpoint, step 2." in warnings
  # Step 4 was trained and written again from step 2; the damaged copy is kept aside.
  assert checkpoint.make_manager(workdir, create=False).all_steps() == [2, 4, 6]
  assert (workdir / "checkpoints" / "4.damaged").is_dir()
  manager = checkpoint.make_manager(workdir, create=False)
  checkpoint.restore_model_params(manager, 4, model_abstract(workdir))


@unawaited_read
def test_no_intact_checkpoint_is_one_line_and_nothing_is_moved(two_checkpoints, tmp_path):
  workdir = damaged_copy(two_checkpoints, tmp_path, 2, 4)
  before = files_under(workdir / "checkpoints")
  with pytest.raises(checkpoint.DamagedCheckpoint) as raised:
    train.train_and_evaluate(two_checkpoints["config"], str(workdir))
  [line] = cli.error_lines(raised.value)
  assert line.startswith(f"{workdir}/checkpoints: no checkpoint can be restored (step 4: "
                         "OUT_OF_RANGE")
  assert "; step 2: OUT_OF_RANGE" in line and line.endswith(
      f"move {workdir}/checkpoints away to start afresh, or put back an intact copy")
  assert files_under(workdir / "checkpoints") == before


@unawaited_read
def test_loading_a_model_skips_a_damaged_checkpoint_loudly(two_checkpoints, tmp_path, caplog):
  workdir = damaged_copy(two_checkpoints, tmp_path, 4, every_file=True)
  manager = checkpoint.make_manager(workdir, create=False)
  abstract = model_abstract(workdir)
  params, step = checkpoint.load_model_params(manager, None, abstract)
  assert step == 2 and f"{workdir}/checkpoints/4 is damaged" in caplog.text
  intact = checkpoint.restore_model_params(manager, 2, abstract)
  jax.tree.map(np.testing.assert_array_equal, params, intact)
  # Asked for by number: which one is damaged, and which one to use instead.
  with pytest.raises(checkpoint.DamagedCheckpoint) as raised:
    checkpoint.load_model_params(manager, 4, abstract)
  [line] = cli.error_lines(raised.value)
  assert line.startswith(f"{workdir}/checkpoints/4 is damaged (OUT_OF_RANGE")
  assert line.endswith("the newest intact checkpoint is step 2: load that one (--step=2), or "
                       "put back an intact copy")
  # Encoder.from_workdir (hive.evaluate, hive.embed, hive.voiceid, hive.export) either takes
  # step 2 with that warning or stops with that line: never a traceback, never step 4.
  caplog.clear()
  try:
    encoder = Encoder.from_workdir(workdir)
  except checkpoint.DamagedCheckpoint as e:
    assert str(e) == line
  else:
    assert encoder.step == 2 and f"{workdir}/checkpoints/4 is damaged" in caplog.text


def test_evaluate_with_a_damaged_checkpoint(tiny, two_checkpoints, tmp_path):
  """hive.evaluate either scores step 2, warning about step 4, or stops with one line."""
  workdir = damaged_copy(two_checkpoints, tmp_path, 4, every_file=True)
  done = command("hive.evaluate", f"--workdir={workdir}", f"--data={tiny['corpus']}",
                 f"--data_dir={tiny['data_dir']}")
  if done.returncode == 2:
    line = one_error(done.stderr)
    assert line.startswith(f"{workdir}/checkpoints/4 is damaged (OUT_OF_RANGE"), line
    assert line.endswith("the newest intact checkpoint is step 2: load that one (--step=2), or "
                         "put back an intact copy")
  else:
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"{workdir}/checkpoints/4 is damaged" in done.stderr
    assert '"checkpoint_step": 2' in done.stdout


@unawaited_read
def test_a_model_with_no_intact_checkpoint_is_one_line(two_checkpoints, tmp_path):
  workdir = damaged_copy(two_checkpoints, tmp_path, 2, 4, every_file=True)
  manager = checkpoint.make_manager(workdir, create=False)
  with pytest.raises(checkpoint.DamagedCheckpoint) as raised:
    checkpoint.load_model_params(manager, None, model_abstract(workdir))
  [line] = cli.error_lines(raised.value)
  assert line.startswith(f"{workdir}/checkpoints: no checkpoint can be read (step 4: ")
  with pytest.raises(checkpoint.DamagedCheckpoint, match="no older checkpoint is intact"):
    Encoder.from_workdir(workdir, step=4)


# --- row 3: a full disk ---------------------------------------------------------------


def test_full_disk_while_checkpointing(tiny, two_checkpoints, tmp_path, small_disk):
  disk = small_disk("1m")
  workdir = disk / "run"
  shutil.copytree(two_checkpoints["workdir"], workdir)
  config = write_config(tmp_path, tiny, steps=12, checkpoint_every=1, keep_checkpoints=100)
  done = command("hive.main", f"--config={config}", f"--workdir={workdir}")
  assert done.returncode == 2, done.stderr[-4000:]
  line = one_error(done.stderr)
  match = re.fullmatch(
      rf"{workdir}/checkpoints/(\d+): No space left on device \({disk} has [\d.]+ KiB free; "
      r"about [\d.]+ KiB needed\); free some space or use a disk with room; earlier "
      r"checkpoints are intact: run the same command again to resume", line)
  assert match, line
  failed = int(match.group(1))
  # Nothing half-written is left; every earlier checkpoint reads.
  steps = checkpoint.make_manager(workdir, create=False).all_steps()
  assert steps == [2, 4, *range(5, failed)] and 4 < failed < 12, (steps, line)
  assert not [p for p in (workdir / "checkpoints").iterdir() if not p.name.isdigit()]
  manager, abstract = checkpoint.make_manager(workdir, create=False), model_abstract(workdir)
  for step in steps:
    checkpoint.restore_model_params(manager, step, abstract)
  # Moved to a disk with room, the same run resumes and finishes.
  moved = tmp_path / "moved"
  shutil.copytree(workdir, moved)
  resumed = tiny_config(tiny["corpus"], tiny["data_dir"], steps=12)
  resumed.train.checkpoint_every, resumed.train.keep_checkpoints = 1, 100
  assert train.train_and_evaluate(resumed, str(moved))["steps"] == 12


TENSORSTORE_FULL = ('RESOURCE_EXHAUSTED: Error writing "params.model.w/0" in OCDBT database at '
                    'local file "{tmp}/default.orbax-checkpoint-tmp/ocdbt.process_0/": Failed '
                    'writing: "{tmp}/default.orbax-checkpoint-tmp/ocdbt.process_0/d/0a1b": '
                    "Failed to write 6789 bytes to file 15: No space left on device "
                    "[os_error_code='28']")


def orbax_disk_full(monkeypatch):
  """orbax's save fails as it does on a full disk: its temporary directory half-written, the
  error tensorstore's ValueError (wrapped in orbax's Exception) in the main thread."""
  def save(self, step, *args, **kwargs):
    tmp = pathlib.Path(self.directory) / f"{step}.orbax-checkpoint-tmp"
    (tmp / "default.orbax-checkpoint-tmp").mkdir(parents=True)
    try:
      raise ValueError(TENSORSTORE_FULL.format(tmp=tmp))
    except ValueError as e:
      raise Exception("Encountered error while writing") from e

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)


def test_refused_checkpoint_write_mocked(two_checkpoints, tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  shutil.copytree(two_checkpoints["workdir"], workdir)
  manager = checkpoint.make_manager(workdir)
  orbax_disk_full(monkeypatch)
  with pytest.raises(cli.StorageError) as raised:
    manager.save(6, args=None)
  mount, free = cli.disk_of(workdir)
  [line] = cli.error_lines(raised.value)
  assert line.startswith(f"{workdir}/checkpoints/6: No space left on device ({mount} has "
                         f"{cli.format_size(free)} free; about ")
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]


def test_a_killed_runs_unfinished_checkpoint_is_removed_by_the_next_writer(tmp_path):
  unfinished = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp" / "default"
  unfinished.mkdir(parents=True)
  checkpoint.make_manager(tmp_path, create=False).all_steps()  # A reader leaves it alone.
  assert unfinished.is_dir()
  manager = checkpoint.make_manager(tmp_path)
  manager.save(8, args=ocp.args.StandardSave({"a": np.ones(2)}))
  manager.wait_until_finished()
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["8"]


def test_echoes_of_a_reported_failure_are_dropped_and_nothing_else():
  seen = []
  hook = cli._drop_background_noise(seen.append)

  def unraisable(value, source=None):
    return type("Unraisable", (), {"exc_value": value, "object": source})()

  async def orbax_read():  # A coroutine of orbax's, as far as the hook can tell.
    pass

  orbax_read.__code__ = orbax_read.__code__.replace(
      co_filename="/site-packages/orbax/checkpoint/_src/serialization/serialization.py")
  coroutine = orbax_read()
  hook(unraisable(RuntimeError("Event loop is closed")))
  hook(unraisable(Exception("Encountered error while reading array index"), coroutine))
  assert seen == []
  coroutine.close()
  others = [unraisable(RuntimeError("something else")),
            unraisable(Exception("Encountered error"), (lambda: None))]
  for other in others:
    hook(other)
  assert seen == others


def test_export_on_a_full_disk(tiny, tmp_path, small_disk):
  disk = small_disk("64k")
  out = disk / "exported"
  with pytest.raises(cli.StorageError) as raised:
    export.export_workdir(tiny["workdir"], out)
  [line] = cli.error_lines(raised.value)
  assert line.startswith(f"{out}: No space left on device ({disk} has ")
  assert files_under(disk) == []  # No half export, no staging folder.
  resize(disk, "4m")
  export.export_workdir(tiny["workdir"], out)  # The same command, with room.
  a, b = Encoder.from_workdir(tiny["workdir"]), Encoder.from_workdir(out)
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def test_export_refused_write_mocked(tiny, tmp_path, monkeypatch):
  orbax_disk_full(monkeypatch)
  out = tmp_path / "exported"
  with pytest.raises(cli.StorageError, match=f"^{out}: No space left on device"):
    export.export_workdir(tiny["workdir"], out)
  assert files_under(tmp_path) == []


def writers(tmp_path):
  """Every file hive writes through the atomic writer: name -> (target, write it)."""
  return {
      "store": (tmp_path / "speakers.json", lambda f: store_lib.update_store(
          f, lambda s: store_lib.enroll(s, "bob", np.eye(4)[:1], ["b.flac"]))),
      "embeddings .npz": (tmp_path / "emb.npz",
                          lambda f: workdir_lib.write_npz(f, {"e": np.ones((64, 256))})),
      "report": (tmp_path / "report.json",
                 lambda f: workdir_lib.write_atomically(f, '{"eer": 0.1}\n' * 500)),
      "config": (tmp_path / workdir_lib.CONFIG_FILE, lambda f: workdir_lib.save_config(
          f.parent, tiny_config("c", "d"))),
  }


def seed(target) -> bytes:
  """An earlier version of `target`, which the failed write must leave as it was."""
  if target.name == "speakers.json":
    store_lib.update_store(target, lambda s: store_lib.new_store({"step": 1}, 4))
  else:
    target.write_bytes(b"earlier")
  return target.read_bytes()


@pytest.mark.parametrize("writer", ["store", "embeddings .npz", "report", "config"])
def test_writers_on_a_full_disk(writer, small_disk):
  disk = small_disk("64k")
  target, write = writers(disk)[writer]
  earlier = seed(target)
  fill(disk)
  with pytest.raises(cli.StorageError) as raised:
    write(target)
  [line] = cli.error_lines(raised.value)
  assert line.startswith(f"{target}: No space left on device ({disk} has ")
  assert "needed); free some space or use a disk with room" in line
  assert target.read_bytes() == earlier
  assert [p for p in files_under(disk) if p.endswith(".tmp")] == []


@pytest.mark.parametrize("writer", ["store", "embeddings .npz", "report", "config"])
def test_writers_refused_mocked(writer, tmp_path, monkeypatch):
  target, write = writers(tmp_path)[writer]
  earlier = seed(target)

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(cli.StorageError, match=f"^{target}: No space left on device"):
    write(target)
  assert target.read_bytes() == earlier
  assert [p for p in files_under(tmp_path) if p.endswith(".tmp")] == []


def test_preparing_on_a_full_disk(tiny, small_disk):
  disk = small_disk("64k")
  args = ("hive.prepare", f"--data={tiny['corpus']}", f"--data_dir={disk}", "--num_workers=1")
  done = command(*args)
  assert done.returncode == 2, done.stderr[-4000:]
  line = one_error(done.stderr)
  assert line.startswith(str(disk)) and f": No space left on device ({disk} has " in line
  resize(disk, "8m")
  done = command(*args)  # The same command, with room: prepared afresh, in full.
  assert done.returncode == 0, done.stderr[-4000:]
  assert "Prepared:" in done.stdout and "read:        24 utterances" in done.stdout


@pytest.mark.parametrize("message, path", [
    (TENSORSTORE_FULL.format(tmp="/r/checkpoints/7.orbax-checkpoint-tmp"),
     "/r/checkpoints/7.orbax-checkpoint-tmp/default.orbax-checkpoint-tmp/ocdbt.process_0/d/0a1b"),
    ('Failed to finalize writing of split "corpus": write() failed: No space left on device; '
     "writing /d/speech_corpus/incomplete.Q_2.0.0/x.array_record-00000-of-00001; at byte 65536",
     "/d/speech_corpus/incomplete.Q_2.0.0/x.array_record-00000-of-00001"),
])
def test_library_worded_disk_errors_are_found(message, path):
  try:
    try:
      raise ValueError(message)
    except ValueError as e:
      raise Exception("Encountered error while writing") from e
  except Exception as e:  # noqa: BLE001 - the wrapped error is what is tested.
    wrapped = e
  found = cli.environment_error(wrapped)
  assert (found.errno, found.filename) == (errno.ENOSPC, path)
  assert cli.is_user_error(wrapped)
  [line] = cli.error_lines(wrapped)
  assert line.startswith(f"{path}: No space left on device (/ has ")
  assert cli.environment_error(ValueError("Requested byte range is not valid")) is None
  assert not cli.is_user_error(RuntimeError("a bug"))


def test_background_writers_error_logs_give_way_to_the_one_line():
  """orbax and clu log a refused write from their threads before raising it in the main
  thread: those logs are dropped (the command's `error:` line says it once); others stay."""
  full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/events.out.tfevents.1")

  def record(path, exc=None, message="Error in producer thread for AsyncWriter"):
    return logging.LogRecord("absl", logging.ERROR, path, 1, message, None,
                             (type(exc), exc, None) if exc else None)

  keep = cli.ReportedByHive().filter
  assert not keep(record("/site-packages/clu/asynclib.py", full))
  assert not keep(record("/site-packages/orbax/checkpoint/future.py", None,
                         TENSORSTORE_FULL.format(tmp="/w/checkpoints/7.orbax-checkpoint-tmp")))
  assert keep(record("/site-packages/clu/asynclib.py", RuntimeError("a bug")))
  assert keep(record("/site-packages/other/lib.py", full))  # Not known to raise it again.


# --- kill -9 ----------------------------------------------------------------------------


def test_prepare_killed_then_run_again_reads_everything(tiny, tmp_path):
  data_dir = tmp_path / "tfds"
  args = ("hive.prepare", f"--data={tiny['corpus']}", f"--data_dir={data_dir}")
  preparing = start(*args)
  wait_for(lambda: data_dir.is_dir() and any(p.is_file() for p in data_dir.rglob("*")),
           preparing)
  kill_9(preparing)  # While it writes the dataset.
  done = command(*args)
  assert done.returncode == 0, done.stderr[-4000:]
  assert "Prepared:" in done.stdout, done.stdout  # Not a cache hit on the killed one's files.
  assert "listed:      24 entries" in done.stdout and "read:        24 utterances" in done.stdout


def test_export_killed_then_run_again(tiny, tmp_path):
  out = tmp_path / "exported"
  args = ("hive.export", f"--workdir={tiny['workdir']}", f"--out={out}")
  exporting = start(*args)
  wait_for(lambda: any(tmp_path.glob(".exported.export-*.tmp")), exporting)
  kill_9(exporting)  # While it writes the export.
  assert not out.exists()  # Never half an export under the name asked for.
  done = command(*args)
  assert done.returncode == 0, done.stderr[-4000:]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # Leftover removed.
  a, b = Encoder.from_workdir(tiny["workdir"]), Encoder.from_workdir(out)
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


# --- two trainers on one workdir ----------------------------------------------------------


def test_a_second_training_process_on_a_workdir_is_refused(tiny, two_checkpoints, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(two_checkpoints["workdir"], workdir)
  config = write_config(tmp_path, tiny, steps=100000)
  lock = workdir_lib.FileLock(workdir / workdir_lib.LOCK_FILE, "test")
  first = start("hive.main", f"--config={config}", f"--workdir={workdir}")
  try:
    # The holder's name, written once it holds the lock (taking the lock here to find out
    # could make the first run the one refused).
    wait_for(lambda: lock.holder().startswith(f"pid {first.pid} "), first, poll=0.05)
    before = files_under(workdir / "checkpoints")
    done = command("hive.main", f"--config={config}", f"--workdir={workdir}")
    assert done.returncode == 2, done.stderr[-4000:]
    assert one_error(done.stderr) == (
        f"{workdir}: training is in use by another process (pid {first.pid} on "
        f"{socket.gethostname()}): two runs must not write one workdir; wait for that run to "
        "finish (or stop it) and run this command again, or choose another --workdir")
    assert files_under(workdir / "checkpoints") == before  # The second wrote nothing.
  finally:
    kill_9(first)
  lock.acquire().release()  # The lock died with its holder: a new run may start.


# --- row 5: a damaged store, unusable files -------------------------------------------------


def test_damaged_store_and_unusable_files_are_one_line_errors(tiny, tmp_path):
  db = tmp_path / "speakers.json"
  db.write_text('{"format": "hive-voiceid", "version": 2, "embedding_di')  # Cut short.
  damaged = db.read_bytes()
  clip = sorted(tiny["corpus"].rglob("*.flac"))[0]
  empty, text = tmp_path / "empty.wav", tmp_path / "notes.wav"
  empty.write_bytes(b"")
  text.write_text("not audio at all\n" * 100)
  cases = [
      (("identify", f"--db={db}", clip), f"{db}: not a JSON speaker store"),
      (("enroll", f"--db={db}", f"--workdir={tiny['workdir']}", "--speaker=x", clip),
       f"{db}: not a JSON speaker store"),
      (("verify", f"--workdir={tiny['workdir']}", clip, tmp_path / "missing.wav"),
       f"{tmp_path / 'missing.wav'}: file does not exist"),
      (("verify", f"--workdir={tiny['workdir']}", clip, empty), f"{empty}: empty file"),
      (("verify", f"--workdir={tiny['workdir']}", clip, text), f"{text}: "),
  ]
  for args, message in cases:
    done = command("hive.voiceid", *args)
    assert done.returncode == 2 and done.stdout == "", (args, done.stderr[-3000:])
    assert one_error(done.stderr).startswith(message), (args, done.stderr[-2000:])
  assert db.read_bytes() == damaged and sorted(p.name for p in tmp_path.iterdir()) == [
      "empty.wav", "notes.wav", "speakers.json"]
