"""The embedded corpus: a real TFDS builder, offline, deterministic, splits disjoint."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import gin
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from objectax.data import pydocs


def _read(data_dir, split):
  """(id, text) pairs in file order, through seqio exactly as a task reads them."""
  source = seqio.TfdsDataSource(tfds_name=pydocs.TFDS_NAME, tfds_data_dir=data_dir)
  ds = source.get_dataset(split, shuffle=False)
  return [(ex["id"].decode(), ex["text"].decode()) for ex in ds.as_numpy_iterator()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  assert pydocs.ensure_built(path) == path
  return path


def test_name_follows_the_interpreter_and_is_registered():
  major, minor = sys.version_info[:2]
  assert pydocs.TFDS_NAME == f"objectax_pydocs/py{major}{minor}:1.0.0"
  assert tfds.builder_cls("objectax_pydocs") is pydocs.ObjectaxPydocs


@pytest.mark.e2e
def test_reads_back_through_seqio(data_dir):
  train, validation = _read(data_dir, "train"), _read(data_dir, "validation")
  # Measured with CPython 3.11.7: 412 train / 30 validation documents, 2.0 MB.
  assert len(train) > 200 and len(validation) > 5
  assert 0.02 < len(validation) / (len(train) + len(validation)) < 0.12  # ~5% held out
  n_bytes = sum(len(t.encode()) for _, t in train + validation)
  assert n_bytes > 1_000_000
  assert all(len(t) >= pydocs.MIN_CHARS for _, t in train + validation)
  ids = {i for i, _ in train}
  assert "topics/assert" in ids | {i for i, _ in validation}
  assert any(i.startswith("stdlib/") for i in ids)


@pytest.mark.e2e
def test_splits_are_disjoint_by_id_and_text_and_follow_the_hash_rule(data_dir):
  train, validation = _read(data_dir, "train"), _read(data_dir, "validation")
  assert not {i for i, _ in train} & {i for i, _ in validation}
  assert not {t for _, t in train} & {t for _, t in validation}
  assert len({t for _, t in train}) == len(train)  # deduplicated
  assert all(pydocs.is_validation(i) for i, _ in validation)
  assert not any(pydocs.is_validation(i) for i, _ in train)


@pytest.mark.e2e
def test_skips_tests_apps_and_site_packages(data_dir):
  ids = [i for i, _ in _read(data_dir, "train") + _read(data_dir, "validation")]
  banned = ("/test/", "/tests/", "idlelib/", "lib2to3/", "turtledemo/", "site-packages/")
  assert not [i for i in ids if any(b in i + "/" for b in banned)]
  assert not [i for i in ids if i.startswith("stdlib/test")]


@pytest.mark.e2e
def test_two_builds_give_the_same_ids_in_the_same_order(data_dir, tmp_path, capsys):
  pydocs.documents.cache_clear()  # re-walk and re-parse the stdlib from scratch
  other = pydocs.ensure_built(str(tmp_path))
  assert "building the embedded corpus" in capsys.readouterr().out
  for split in ("train", "validation"):
    assert _read(other, split) == _read(data_dir, split)


@pytest.mark.e2e
def test_ensure_built_reuses_prepared_data(data_dir, capsys):
  info = os.path.join(pydocs.dataset_dir(data_dir), "dataset_info.json")
  before = os.stat(info).st_mtime_ns
  assert pydocs.ensure_built(data_dir) == data_dir
  assert os.stat(info).st_mtime_ns == before
  assert capsys.readouterr().out == ""


def test_data_dir_argument_then_gin_then_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  assert pydocs.resolve_data_dir() == str(tmp_path)
  assert pydocs.dataset_dir() == str(tmp_path / "objectax_pydocs" / pydocs.CONFIG_NAME / "1.0.0")
  gin.clear_config()
  try:
    gin.parse_config(["TfdsConfig.data_dir = '~/bound'"])
    assert pydocs.resolve_data_dir() == os.path.expanduser("~/bound")
    assert pydocs.resolve_data_dir("/elsewhere") == "/elsewhere"
  finally:
    gin.clear_config()


def test_clean_text_keeps_paragraphs_and_collapses_whitespace():
  raw = "Summary line.\n\n    Args:\n      x:   the   input.\n\n\n    Returns:\n      y.\n"
  assert pydocs.clean_text(raw) == "Summary line.\n\nArgs: x: the input.\n\nReturns: y."


def test_module_text_parses_without_importing(tmp_path):
  flag = tmp_path / "imported"
  source = textwrap.dedent(f'''\
      """Module doc."""
      open({str(flag)!r}, "w").write("side effect")

      def f():
        """F doc."""

      class C:
        """C doc."""
        def m(self):
          """M   doc,
          second line."""

      def g():
        """G doc."""
      ''').encode()
  assert pydocs._module_text(source) == (
      "Module doc.\n\nF doc.\n\nC doc.\n\nM doc, second line.\n\nG doc.")
  assert not flag.exists()


@pytest.mark.e2e
def test_racing_processes_both_succeed(tmp_path):
  """Two processes build at once with the lock disabled: TFDS's rename is the last guard.

  A barrier lines the two builds up, so both generate and one loses the rename.
  """
  script = textwrap.dedent("""\
      import contextlib, os, sys, time
      from objectax.data import pydocs
      pydocs._build_lock = lambda d: contextlib.nullcontext()
      original = pydocs.ObjectaxPydocs.download_and_prepare
      def instrumented(self, **kwargs):
        try:
          original(self, **kwargs)
        except OSError:
          sys.stderr.write("\\nlost\\n"); raise
        sys.stderr.write("\\nbuilt\\n")  # stderr: ensure_built silences TFDS's stdout
      pydocs.ObjectaxPydocs.download_and_prepare = instrumented
      data_dir, me = sys.argv[1], sys.argv[2]
      open(os.path.join(os.path.dirname(data_dir), "ready" + me), "w").close()
      while len([f for f in os.listdir(os.path.dirname(data_dir)) if f.startswith("ready")]) < 2:
        time.sleep(0.01)
      print(pydocs.ensure_built(data_dir))
      """)
  data_dir = str(tmp_path / "tfds")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  procs = [subprocess.Popen([sys.executable, "-c", script, data_dir, str(i)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
    assert out.strip().endswith(data_dir)
  outcomes = sorted(line for _, err in outs for line in err.split() if line in ("built", "lost"))
  assert outcomes == ["built", "lost"]
  leftovers = os.listdir(os.path.dirname(pydocs.dataset_dir(data_dir)))
  assert leftovers == [pydocs.VERSION]  # the loser's incomplete.* directory is gone
  assert len(_read(data_dir, "validation")) > 5


def test_is_validation_reads_text_or_its_bytes():
  keys = [f"stdlib/m{i}.py" for i in range(200)] + ["naïve café"]
  assert [pydocs.is_validation(k) for k in keys] == [
      pydocs.is_validation(k.encode("utf-8")) for k in keys]
  assert 0 < sum(pydocs.is_validation(k) for k in keys) < 30  # ~5% of 201


def test_file_lock_excludes_the_same_name_only(tmp_path):
  events = []

  def hold(barrier, name, tag):
    barrier.wait()
    with pydocs.file_lock(str(tmp_path), name):
      events.append(f"+{tag}")
      time.sleep(0.3)
      events.append(f"-{tag}")

  def run(name_a, name_b):
    events.clear()
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=hold, args=(barrier, n, t))
               for n, t in ((name_a, "a"), (name_b, "b"))]
    for t in threads:
      t.start()
    for t in threads:
      t.join(timeout=30)
    return [e[0] for e in events]

  assert run("x", "x") == ["+", "-", "+", "-"]  # one waited for the other
  assert run("x", "y") == ["+", "+", "-", "-"]  # other names don't wait
  assert os.path.exists(tmp_path / "objectax_pydocs" / ".x.lock")


def test_keep_tensorflow_off_accelerators_tolerates_initialized_tf(monkeypatch):
  pydocs.keep_tensorflow_off_accelerators()
  assert tf.config.get_visible_devices("GPU") == []
  calls = []

  def too_late(devices, device_type):
    calls.append((devices, device_type))
    raise RuntimeError("Visible devices cannot be modified after being initialized")

  monkeypatch.setattr(tf.config, "set_visible_devices", too_late)
  pydocs.keep_tensorflow_off_accelerators()  # no error: whoever initialized TF decided
  assert calls == [([], "GPU")]
