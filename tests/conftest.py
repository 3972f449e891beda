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
