"""Shared test settings: TensorFlow quiet, slow tests opt-in, one TFDS dir per session."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Implicit rank promotion is an error everywhere the tests reach, subprocesses included
# (they inherit the environment variable; this process gets the config update below).
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
# Compiled XLA programs persist between test runs, since compiling the same tiny models is
# most of a re-run's time; jax keys each entry by the program, its devices and its own
# version, so a stale entry is never used. Subprocesses inherit the setting.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.expanduser("~"), ".cache", "objectax", "jax_tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

# The interop tests load torch in the same process as TensorFlow; a CUDA build of torch
# brings triton, which crashes when loaded after TensorFlow, so it is loaded first.
from objectax.launch.interop import load_triton_before_tensorflow  # pylint: disable=g-import-not-at-top
load_triton_before_tensorflow()

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_addoption(parser):
  parser.addoption("--slow", action="store_true", default=False,
                   help="also run tests marked @pytest.mark.slow")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: slower than about a minute; run with --slow")
  config.addinivalue_line(
      "markers", "e2e: trains a model for real, runs a CLI command end to end, spawns "
      "subprocesses or reads the built TFDS corpus through the input pipeline; "
      "`-m \"not e2e\"` is the quick unit tier")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--slow"):
    return
  skip = pytest.mark.skip(reason="slow: run with --slow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
  """One TFDS data dir per test session, with the embedded corpus and vocabulary built.

  Set as TFDS_DATA_DIR for the whole session (and inherited by subprocesses), so no test
  reads or writes the user's ~/tensorflow_datasets.
  """
  from objectax.data import pydocs, vocab  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("tfds"))
  os.environ["TFDS_DATA_DIR"] = path
  pydocs.ensure_built(path)
  vocab.train_sentencepiece(path)
  return path


@pytest.fixture(scope="session")
def _trained_quickstart(tfds_data_dir, tmp_path_factory):
  """A quickstart run trained 12 steps (checkpoints at 6 and 12), trained once per session."""
  from objectax.launch import configure, train  # pylint: disable=g-import-not-at-top
  wd = tmp_path_factory.mktemp("trained") / "wd"
  configure.parse(["run/quickstart.gin"], [
      "TrainConfig.steps=12", "TrainConfig.checkpoint_every=6", "TrainConfig.eval_every=12",
      "TrainConfig.batch_size=8", "TrainConfig.eval_batches=1", "TrainConfig.warmup_steps=2",
      "TrainConfig.learning_rate=1e-2", "Experiment.sequence_length=64"])
  train.train(str(wd), quiet=True)
  return wd


@pytest.fixture
def trained_quickstart(_trained_quickstart, tmp_path):
  """A private copy of the shared 12-step quickstart workdir (the tests of `objectax eval`)."""
  import shutil  # pylint: disable=g-import-not-at-top
  return shutil.copytree(_trained_quickstart, tmp_path / "wd")
