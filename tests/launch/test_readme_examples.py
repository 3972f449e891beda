"""The README's example commands run verbatim, from a directory outside the repository."""
import os
import re
import shlex
import shutil

import pytest

from objectax.launch import configure, main

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def _commands(prefix):
  """Every README line that starts with `prefix`, as argv (comments and `\\` joins removed)."""
  with open(README, encoding="utf-8") as f:
    text = f.read().replace("\\\n", " ")
  return [shlex.split(line.split("  #")[0])[1:] for line in text.splitlines()
          if line.startswith(prefix)]


def test_the_readme_names_grid_files_by_their_repository_path_from_anywhere(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  commands = _commands("objectax ablate gin/")
  assert len(commands) >= 3
  for argv in commands:
    assert configure.resolve_gin_file(argv[1]) == os.path.join(
        configure.GIN_DIR, argv[1][len("gin/"):])


@pytest.mark.e2e
def test_the_readme_inspect_and_ablate_examples_run_verbatim(tfds_data_dir, tmp_path, monkeypatch,
                                                            capsys):
  monkeypatch.chdir(tmp_path)
  # The worked example's module and data, for the lines the README runs in examples/.
  examples = os.path.join(os.path.dirname(README), "examples")
  shutil.copy(os.path.join(examples, "my_tasks.py"), tmp_path / "my_tasks.py")
  shutil.copytree(os.path.join(examples, "data"), tmp_path / "data")
  monkeypatch.setattr("sys.dont_write_bytecode", True)
  runs = [*_commands("objectax inspect "),
          *[[*argv, "--dry_run"] for argv in _commands("objectax ablate gin/")]]
  assert len(runs) >= 4
  for argv in runs:
    code = main.run(argv)
    err = capsys.readouterr().err
    assert code == 0, (argv, err)
    assert not re.search(r"^objectax: error", err, re.M), (argv, err)
