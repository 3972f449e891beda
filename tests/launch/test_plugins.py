"""A user's own module, outside the package, in every command: `--module`, installed
plugins (entry points), and the run's record that `objectax eval` re-imports.

Every command runs as a subprocess from a folder outside the repository, as a user runs
it, so nothing the plugin registers leaks into the other tests' registries."""
import json
import os
import re
import subprocess
import sys

import pytest

from objectax.launch import plugins

# The README's worked example, copied out of the repository before each use.
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "my_tasks.py")


def _copy_example(dest):
  with open(EXAMPLE, encoding="utf-8") as f:
    dest.write_text(f.read())


def _objectax(args, cwd, env=None, timeout=300):
  return subprocess.run([sys.executable, "-m", "objectax.launch.main", *args], cwd=cwd,
                        env={**os.environ, **(env or {})}, capture_output=True, text=True,
                        timeout=timeout)


def _one_error_line(out):
  lines = [l for l in out.stderr.splitlines() if l.startswith("objectax")]
  assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
  return lines[0]


@pytest.fixture
def user_dir(tmp_path):
  """A folder outside the package holding the user's module my_tasks.py."""
  home = tmp_path / "user"
  home.mkdir()
  _copy_example(home / "my_tasks.py")
  return home


@pytest.mark.e2e
@pytest.mark.slow
def test_module_adds_its_objective_and_its_config_gets_one_line_errors(user_dir):
  listed = _objectax(["objectives", "--module", "my_tasks"], cwd=user_dir)
  assert listed.returncode == 0, listed.stderr[-2000:]
  assert re.search(r"^reversed_lm +full LM on reversed documents", listed.stdout, re.M), \
      listed.stdout
  assert "reversed_lm" not in _objectax(["objectives"], cwd=user_dir).stdout
  # A gin file's `import` line loads the module for every command, listings included.
  (user_dir / "mine.gin").write_text("import my_tasks\n")
  imported = _objectax(["list", "--gin_file=mine.gin"], cwd=user_dir)
  assert imported.returncode == 0, imported.stderr[-2000:]
  assert "objective reversed_lm:" in imported.stdout
  others = re.search(r"others: (.*)$", imported.stdout, re.M)
  assert others and {"word_reversal", "word_reversal_and_spans"} <= set(
      others.group(1).split(", ")), imported.stdout

  wrong_type = _one_error_line(_objectax(
      ["train", "--module=my_tasks", "--gin.ReversedLMConfig.flip=sometimes"], cwd=user_dir))
  assert "gin binding ReversedLMConfig.flip = 'sometimes' should be of type bool" in wrong_type
  unknown = _one_error_line(_objectax(
      ["train", "--module=my_tasks", "--gin.ReversedLMConfig.flipp=True"], cwd=user_dir))
  assert ("unknown gin binding ReversedLMConfig.flipp; valid parameters of ReversedLMConfig: "
          "flip") in unknown
  missing = _one_error_line(_objectax(["list", "--module=my_taskz"], cwd=user_dir))
  assert "--module my_taskz: no such module" in missing


@pytest.mark.e2e
def test_an_installed_plugin_needs_no_flag(tmp_path):
  """A distribution on the path with an `objectax.plugins` entry point, as `pip install`
  leaves it: its objective is listed by a command given nothing else."""
  site = tmp_path / "site"
  (site / "demo_plugin").mkdir(parents=True)
  _copy_example(site / "demo_plugin" / "__init__.py")
  info = site / "demo_plugin-0.1.dist-info"
  info.mkdir()
  (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 0.1\n")
  (info / "entry_points.txt").write_text(
      f"[{plugins.ENTRY_POINT_GROUP}]\ndemo = demo_plugin\n")
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
  out = _objectax(["objectives"], cwd=elsewhere, env={"PYTHONPATH": pythonpath})
  assert out.returncode == 0, out.stderr[-2000:]
  assert re.search(r"^reversed_lm +full LM on reversed documents", out.stdout, re.M), out.stdout


@pytest.mark.e2e
@pytest.mark.slow
def test_a_run_records_its_modules_and_eval_reimports_them_from_anywhere(user_dir, tmp_path,
                                                                        tfds_data_dir):
  wd = tmp_path / "wd"
  trained = _objectax(["train", "--module", "my_tasks", f"--workdir={wd}", "--quiet",
                       "--gin.Experiment.objective=reversed_lm", "--gin.TrainConfig.steps=4",
                       "--gin.TrainConfig.warmup_steps=3", "--gin.TrainConfig.batch_size=4",
                       "--gin.TrainConfig.eval_batches=1", "--gin.Experiment.sequence_length=64"],
                      cwd=user_dir, env={"TFDS_DATA_DIR": tfds_data_dir})
  assert trained.returncode == 0, trained.stderr[-3000:]
  record = json.loads((wd / plugins.RECORD).read_text())
  assert record == {"modules": ["my_tasks"], "paths": [str(user_dir)]}
  assert "ReversedLMConfig.flip = True" in (wd / "config.gin").read_text()
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  evaluated = _objectax(["eval", f"--workdir={wd}", "--no_zeroshot", "--documents=2"],
                        cwd=elsewhere, env={"TFDS_DATA_DIR": tfds_data_dir})
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert (wd / "eval" / "yardstick.json").exists()


def test_modules_a_gin_file_imports_are_recorded_too(tmp_path, monkeypatch):
  import gin  # pylint: disable=g-import-not-at-top
  (tmp_path / "gin_imported_helpers.py").write_text("VALUE = 1\n")  # registers nothing
  monkeypatch.syspath_prepend(str(tmp_path))
  gin.clear_config()
  try:
    gin.parse_config("import gin_imported_helpers")
    wd = tmp_path / "wd"
    wd.mkdir()
    plugins.record(str(wd))
  finally:
    gin.clear_config()
  record = json.loads((wd / plugins.RECORD).read_text())
  assert "gin_imported_helpers" in record["modules"] and str(tmp_path) in record["paths"]
