"""What clusters and crashes do to a run: SIGTERM, a second trainer, a refused resume, torn
and corrupt files. Each ends with the state an uninterrupted run reaches, bit for bit."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from objectax.launch import configure, main, metrics, preemption, train
from objectax.launch import workdir as workdir_lib
from objectax.models.registry import ConfigError

FAST = ["TrainConfig.batch_size=4", "TrainConfig.eval_batches=1", "TrainConfig.log_every=1",
        "Experiment.sequence_length=64"]


def _train(workdir, *bindings):
  configure.parse(["run/quickstart.gin"], [*FAST, *bindings])
  return train.train(str(workdir), quiet=True)


def _state(workdir, step):
  """Every array of checkpoint `step` (parameters, optimizer state, step), as numpy."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path)
  metadata = getattr(metadata, "item_metadata", metadata)  # newer orbax wraps the tree
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  # numpy: the arrays may have been saved by several processes on devices this one lacks
  tree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_same_state(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _logged_steps(workdir):
  return [r["step"] for r in metrics.MetricsWriter(str(workdir), enabled=False).read()[0]
          if "loss" in r]


def _tree_hash(root):
  """path -> sha256 of every file under root (the lock file's absence included)."""
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


# ------------------------------------------------------------------ preemption, one writer

SIGNALLED = [*FAST, "TrainConfig.steps=120", "TrainConfig.warmup_steps=10",
             "TrainConfig.checkpoint_every=50", "TrainConfig.eval_every=120"]


def _command(workdir, bindings):
  return [sys.executable, "-m", "objectax.launch.main", "train", f"--workdir={workdir}",
          "--quiet", *[f"--gin.{b}" for b in bindings]]


def _wait_for_rows(proc, workdir, rows, timeout=300):
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(path):
      with open(path) as f:
        if sum(1 for _ in f) >= rows:
          return
    time.sleep(0.05)
  out = proc.communicate()[0] if proc.poll() is not None else ""
  raise AssertionError(f"the run did not reach {rows} metrics rows while running:\n{out[-3000:]}")


@pytest.mark.e2e
@pytest.mark.slow
def test_sigterm_saves_exits_75_and_resumes_bit_identically(tfds_data_dir, tmp_path, capsys):
  straight = tmp_path / "straight"
  _train(straight, *SIGNALLED)

  wd = tmp_path / "wd"
  env = {**os.environ, "TFDS_DATA_DIR": tfds_data_dir}
  proc = subprocess.Popen(_command(wd, SIGNALLED), cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  _wait_for_rows(proc, wd, 8)

  # A second trainer on the same workdir is refused in one line naming the holder.
  code = main.run(["train", f"--workdir={wd}", "--quiet", *[f"--gin.{b}" for b in SIGNALLED]])
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert code == 2 and len(err) == 1, err
  assert f"is in use by another objectax train (pid {proc.pid} on host" in err[0], err[0]

  proc.send_signal(signal.SIGTERM)
  t = time.time()
  out = proc.communicate(timeout=120)[0]
  # One step (milliseconds here) plus the save and the exit: seconds, not the next
  # checkpoint or the end of the run.
  assert time.time() - t < 30, time.time() - t
  assert proc.returncode == preemption.EXIT_PREEMPTED, out[-3000:]
  assert "Traceback" not in out, out[-3000:]
  summary = json.loads((wd / "summary.json").read_text())
  stopped = summary["final_step"]
  assert summary["stopped_by"] == "SIGTERM" and 8 <= stopped < 120, summary
  assert str(stopped) in os.listdir(wd / "checkpoints")
  assert not (wd / workdir_lib.LOCK_NAME).exists()

  again = subprocess.run(_command(wd, SIGNALLED), cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
  assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
  resumed = json.loads((wd / "summary.json").read_text())
  assert resumed["start_step"] == stopped and resumed["data_resume"] == "iterator_state"
  _assert_same_state(_state(straight, 120), _state(wd, 120))
  assert _logged_steps(wd) == list(range(1, 121))  # each step exactly once


# ------------------------------------------------------------------ refused resumes

SHORT = ["TrainConfig.steps=4", "TrainConfig.warmup_steps=3", "TrainConfig.checkpoint_every=2",
         "TrainConfig.eval_every=4"]


@pytest.fixture(scope="module")
def _short_run(tfds_data_dir, tmp_path_factory):
  """A 4-step run (checkpoints at 2 and 4), trained once for this module's tests."""
  wd = tmp_path_factory.mktemp("short") / "wd"
  summary = _train(wd, *SHORT)
  return wd, summary


@pytest.fixture
def short_run(_short_run, tmp_path):
  wd, summary = _short_run
  return shutil.copytree(wd, tmp_path / "wd"), summary


@pytest.mark.e2e
@pytest.mark.parametrize("binding, says", [
    ("ModelConfig.mlp_activation='relu'", "another model (mlp_activation 'silu' there, 'relu' here)"),
    ("ModelConfig.position_embedding='none'", "position_embedding 'rope' there, 'none' here"),
    ("ModelConfig.num_layers=3", "num_layers 2 there, 3 here"),
    ("TrainConfig.seed=1", "was written with data seed=0 but this run has 1"),
])
def test_a_refused_resume_leaves_every_file_byte_identical(short_run, binding, says, capsys):
  wd, _ = short_run
  before = _tree_hash(wd)
  code = main.run(["train", f"--workdir={wd}", "--quiet", *[f"--gin.{b}" for b in FAST],
                   *[f"--gin.{b}" for b in SHORT], f"--gin.{binding}"])
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert code == 2 and len(err) == 1, err
  assert says in err[0] and "nothing was written" in err[0], err[0]
  assert _tree_hash(wd) == before


@pytest.mark.e2e
def test_execution_settings_may_change_across_a_resume(short_run):
  wd, _ = short_run
  s = _train(wd, *SHORT, "TrainConfig.steps=5", "TrainConfig.warmup_steps=4",
             "ModelConfig.remat='full'", "ModelConfig.logits_chunk=32")
  assert (s["start_step"], s["final_step"]) == (4, 5)


# ------------------------------------------------------------------ faults

def _corrupt_checkpoint(wd):
  for folder, _, files in os.walk(wd / "checkpoints" / "4" / "state"):
    for name in files:
      with open(os.path.join(folder, name), "r+b") as f:
        f.truncate(max(0, os.path.getsize(os.path.join(folder, name)) // 2))


def _crash_before_step_4(wd):
  """As if killed between the saves of steps 2 and 4 (metrics of 3 and 4 logged)."""
  shutil.rmtree(wd / "checkpoints" / "4")
  shutil.rmtree(wd / "data_iterators" / "4")


def _corrupt_iterator(wd):
  _crash_before_step_4(wd)
  for path in (wd / "data_iterators" / "2").iterdir():
    if ".data-" in path.name:
      path.write_bytes(b"\0garbage" * 7)


def _torn_metrics(wd):
  _crash_before_step_4(wd)
  with open(wd / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "loss": 3.2')  # a full disk, mid-line


@pytest.mark.e2e
@pytest.mark.parametrize("fault, start, moved", [
    (_corrupt_checkpoint, 2, "corrupt/checkpoints/4"),
    (_corrupt_iterator, 2, "corrupt/data_iterators/2"),
    (_torn_metrics, 2, None),
])
def test_a_fault_resumes_from_the_previous_good_state_bit_identically(short_run, fault, start,
                                                                      moved, capsys):
  wd, straight = short_run
  reference = _state(wd, 4)
  fault(wd)
  configure.parse(["run/quickstart.gin"], [*FAST, *SHORT])
  s = train.train(str(wd), quiet=True)
  captured = capsys.readouterr()
  out = captured.out + captured.err
  assert s["start_step"] == start and s["final_step"] == 4
  _assert_same_state(reference, _state(wd, 4))
  assert s["final_eval_loss"] == straight["final_eval_loss"]
  assert _logged_steps(wd) == [1, 2, 3, 4]
  assert "Traceback" not in out
  warnings = [l for l in captured.err.splitlines() if l.startswith("objectax: warning:")]
  if moved:  # one line on stderr, even with --quiet
    assert (wd / moved).exists() and len(warnings) == 1, captured.err
  if fault is _torn_metrics:
    assert len(warnings) == 1 and "dropped 1 unreadable line(s)" in warnings[0], warnings
  rows, bad = metrics.MetricsWriter(str(wd), enabled=False).read()
  assert not bad and len(rows) == len({(r["step"], tuple(sorted(r))) for r in rows})


@pytest.mark.e2e
def test_a_stray_empty_checkpoint_folder_is_passed_over(short_run, capsys):
  wd, _ = short_run
  (wd / "checkpoints" / "6").mkdir()
  s = _train(wd, *SHORT, "TrainConfig.steps=6", "TrainConfig.warmup_steps=5")
  assert (s["start_step"], s["final_step"]) == (4, 6)
  assert (wd / "corrupt" / "checkpoints" / "6").is_dir()


@pytest.mark.e2e
def test_no_restorable_checkpoint_refuses_and_moves_nothing(short_run, capsys):
  wd, _ = short_run
  for step in ("2", "4"):
    (wd / "checkpoints" / step / "data" / "metadata").write_text("{torn")
  before = _tree_hash(wd)
  code = main.run(["train", f"--workdir={wd}", "--quiet", *[f"--gin.{b}" for b in FAST],
                   *[f"--gin.{b}" for b in SHORT]])
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert code == 2 and len(err) == 1 and "no checkpoint in" in err[0], err
  assert "step 4: its data record is missing or unreadable" in err[0]
  assert _tree_hash(wd) == before


# ------------------------------------------------------------------ units

def test_the_lock_names_its_holder_and_goes_stale_with_it(tmp_path):
  with workdir_lib.WorkdirLock(str(tmp_path)):
    holder = json.loads((tmp_path / workdir_lib.LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid()
    # Another process is refused while this one holds it.
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from objectax.launch import workdir as w\n"
         "try:\n  w.WorkdirLock(sys.argv[1]).acquire()\nexcept Exception as e:\n  print(e)",
         str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert f"in use by another objectax train (pid {os.getpid()} on host" in probe.stdout
  assert not (tmp_path / workdir_lib.LOCK_NAME).exists()
  # A lock file left by a dead process (kill -9) is taken over.
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  (tmp_path / workdir_lib.LOCK_NAME).write_text(json.dumps({"host": "h", "pid": int(dead)}))
  with workdir_lib.WorkdirLock(str(tmp_path)):
    assert json.loads((tmp_path / workdir_lib.LOCK_NAME).read_text())["pid"] == os.getpid()


def test_metrics_drop_a_torn_last_line_with_a_warning(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path), enabled=True)
  for step in (1, 2, 3):
    writer.write(step, {"loss": float(step)})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 4, "lo')
  warnings = []
  kept = metrics.MetricsWriter(str(tmp_path), enabled=True).truncate(after_step=2,
                                                                     warn=warnings.append)
  assert [r["step"] for r in kept] == [1, 2]
  assert len(warnings) == 1 and "dropped 1 unreadable line(s) (line 4)" in warnings[0]
  assert [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
  path = tmp_path / "config.gin"
  workdir_lib.atomic_write(str(path), "old")
  monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space")))
  with pytest.raises(OSError):
    workdir_lib.atomic_write(str(path), "new")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["config.gin"]
  umask = os.umask(0o022)
  try:
    monkeypatch.undo()
    workdir_lib.atomic_write(str(path), "new")
  finally:
    os.umask(umask)
  assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o644


def test_a_signal_asks_once_and_a_second_aborts():
  with preemption.StopSignals() as signals:
    assert not signals.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.should_stop(2) and signals.received == "SIGTERM"
    with pytest.raises(preemption.Interrupted):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_workdir_that_is_a_file_or_a_url_is_refused(tmp_path):
  (tmp_path / "f").write_text("")
  with pytest.raises(ConfigError, match="is a file, not a directory"):
    workdir_lib.resolve(str(tmp_path / "f"))
  with pytest.raises(ConfigError, match="is a URL"):
    workdir_lib.resolve("gs://bucket/run")
