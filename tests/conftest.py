"""Shared test settings: TensorFlow quiet, slow tests opt-in, one TFDS dir per session."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # pylint: disable=g-import-not-at-top


def pytest_addoption(parser):
  parser.addoption("--slow", action="store_true", default=False,
                   help="also run tests marked @pytest.mark.slow")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: slower than about a minute; run with --slow")


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
