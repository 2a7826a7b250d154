"""The workdir's files: one atomic writer, and one answer to "is this the same model?"."""

import errno
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from hive import cli, config as config_lib, workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_atomic_write_replaces_whole_and_leaves_nothing_behind(tmp_path):
  target = tmp_path / "sub" / "file.json"
  workdir_lib.write_atomically(target, "first")
  workdir_lib.write_atomically(target, b"second")
  assert target.read_text() == "second"
  assert [p.name for p in target.parent.iterdir()] == ["file.json"]


@pytest.mark.parametrize("fails", ["fsync", "replace"])
def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch, fails):
  target = tmp_path / "file.json"
  workdir_lib.write_atomically(target, "old")

  def full_disk(*args):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, fails, full_disk)
  with pytest.raises(cli.StorageError) as raised:
    workdir_lib.write_atomically(target, "new!")
  assert target.read_text() == "old"
  assert [p.name for p in tmp_path.iterdir()] == ["file.json"]  # The temporary file is gone.
  mount, free = cli.disk_of(tmp_path)
  assert cli.error_lines(raised.value) == [
      f"{target}: No space left on device ({mount} has {cli.format_size(free)} free; about "
      "4 B needed); free some space or use a disk with room"]
  assert raised.value.cause.errno == errno.ENOSPC


def test_a_read_only_folder_is_named(tmp_path, monkeypatch):
  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")

  monkeypatch.setattr(workdir_lib.tempfile, "mkstemp", read_only)
  with pytest.raises(cli.StorageError, match=f"^{tmp_path / 'x.npz'}: Read-only file system$"):
    workdir_lib.write_npz(tmp_path / "x.npz", {"a": np.zeros(2)})
  assert list(tmp_path.iterdir()) == []


def test_sizes_read_as_people_write_them():
  assert [cli.format_size(n) for n in (0, 1023, 1024, 1536, 5 * 2**20, 3 * 2**30)] == [
      "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB"]


HOLD = """
import sys, time
from hive import workdir
lock = workdir.FileLock(sys.argv[1], "the thing").acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_lock_is_one_process_at_a_time_and_dies_with_its_holder(tmp_path):
  file = tmp_path / "x.lock"
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(file)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(workdir_lib.Busy, match=rf"^the thing is in use by another process "
                       rf"\(pid {holder.pid} on {socket.gethostname()}\)$"):
      workdir_lib.FileLock(file, "the thing").acquire()
    with pytest.raises(workdir_lib.Busy, match="waited 0.2 s"):
      workdir_lib.FileLock(file, "the thing").acquire(timeout=0.2)
  finally:
    holder.kill()  # SIGKILL: no chance to clean up, and no need to.
    holder.wait()
  assert file.exists()  # Left behind, and harmless:
  with workdir_lib.FileLock(file, "the thing") as lock:
    assert lock.held and lock.holder() == f"pid {os.getpid()} on {socket.gethostname()}"
    with pytest.raises(workdir_lib.Busy):  # Also within one process, another open file waits.
      workdir_lib.FileLock(file, "the thing").acquire()
  assert not lock.held
  workdir_lib.FileLock(file, "the thing").acquire().release()


def test_npz_round_trip(tmp_path):
  workdir_lib.save_mean(tmp_path, [0.1, 0.2, 0.0], step=12)
  mean, step = workdir_lib.read_mean(tmp_path)
  np.testing.assert_allclose(mean, [0.1, 0.2, 0.0], rtol=1e-6)
  assert step == 12 and workdir_lib.read_mean(tmp_path / "none") is None


def test_model_record_tells_models_apart():
  c = config_lib.base_config()
  record = workdir_lib.model_record(c, 10, None)
  workdir_lib.check_same_model(record, workdir_lib.model_record(c, 10, None), "store")
  c2 = config_lib.base_config()
  c2.train.steps = 1  # Not a model setting: the same model.
  assert workdir_lib.model_record(c2, 10, None) == record
  c2.model.lstm.hidden = 128
  with pytest.raises(workdir_lib.ModelMismatch, match="store: made by another model "
                     r"\(model settings"):
    workdir_lib.check_same_model(record, workdir_lib.model_record(c2, 10, None), "store")
  with pytest.raises(workdir_lib.ModelMismatch, match="centring none there"):
    workdir_lib.check_same_model(record, workdir_lib.model_record(c, 10, [0.1] * 256), "store")
  old = {"step": 10}  # Written by an older hive: what it lacks is not compared.
  workdir_lib.check_same_model(old, record, "store")


def test_settings_differences_name_the_field():
  a, b = config_lib.base_config(), config_lib.base_config()
  b.data.n_mels = 80
  assert workdir_lib.settings_differences(a, b) == ["data.n_mels=40 there, 80 here"]


def test_bad_workdir_files_are_one_line_user_errors(tmp_path):
  (tmp_path / "config.json").write_text("{not json")
  (tmp_path / "speakers.json").write_text('{"train": 3}')
  with pytest.raises(workdir_lib.BadWorkdirFile, match="config.json: not a JSON config"):
    workdir_lib.load_config(tmp_path)
  with pytest.raises(workdir_lib.BadWorkdirFile, match="speakers.json: expected"):
    workdir_lib.load_speakers(tmp_path)
  with pytest.raises(FileNotFoundError, match="is .* a hive workdir"):
    workdir_lib.load_config(tmp_path / "elsewhere")
  assert cli.is_user_error(workdir_lib.BadWorkdirFile("x"))
  assert not cli.is_user_error(RuntimeError("a bug"))
  assert not cli.is_user_error(OSError(errno.EIO, "I/O error"))  # Hardware: a traceback.
