"""Your own code in every command: modules named with `--module`, and installed plugins.

A plugin is any Python module that registers things when it is imported: seqio tasks and
mixtures, objectives (`objectax.objectives.registry.register`), corpora, architectures, gin
configurables. Two ways to load one, honoured by every `objectax` command:

- `--module my_tasks` (repeatable; a dotted name, looked up on the Python path and in the
  current directory), anywhere on the command line;
- an installed distribution that declares an entry point in the group `objectax.plugins`
  (`[project.entry-points."objectax.plugins"] my_tasks = "my_tasks"` in its
  pyproject.toml): imported by every command, with no flag at all.

`objectax train` records the modules it was given, and those its gin files import, in
`<workdir>/plugins.json` (with the folder each was found in), and `objectax eval` re-imports them from there, so a run's own
code never has to be named again.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import sys
from typing import Sequence

from objectax.models.registry import ConfigError

ENTRY_POINT_GROUP = "objectax.plugins"
RECORD = "plugins.json"

_loaded: dict[str, str] = {}  # module name -> the sys.path entry it was found under
_entry_points_loaded = False


def _root_of(module, name: str) -> str:
  """The sys.path entry `module` (named `name`) was imported from."""
  path = os.path.abspath(getattr(module, "__file__", "") or "")
  for _ in range(name.count(".") + 1 + (os.path.basename(path) == "__init__.py")):
    path = os.path.dirname(path)
  return path


def load_entry_points() -> list[str]:
  """Imports every installed plugin (entry points in ENTRY_POINT_GROUP), once."""
  global _entry_points_loaded
  if _entry_points_loaded:
    return []
  _entry_points_loaded = True
  names = []
  for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
    try:
      entry.load()
    except Exception as e:  # pylint: disable=broad-except  (someone else's code: one line)
      raise ConfigError(f"plugin {entry.name!r} ({entry.value}, entry point group "
                        f"{ENTRY_POINT_GROUP}) failed to import: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from e
    names.append(entry.name)
  return names


def load(modules: Sequence[str] = (), paths: Sequence[str] = ()) -> None:
  """Imports the installed plugins, then `modules` (searching `paths`, then sys.path, then
  the current directory). A module that is missing or fails to import is one ConfigError
  line naming it."""
  load_entry_points()
  for path in [*paths, os.getcwd()]:
    if path and path not in sys.path:
      sys.path.append(path)  # after the installed packages: never shadows them
  for name in modules:
    if not name:
      continue
    try:
      module = importlib.import_module(name)
    except ModuleNotFoundError as e:
      if e.name and name.startswith(e.name):
        raise ConfigError(f"--module {name}: no such module on the Python path or in "
                          f"{os.getcwd()}; give its dotted name (my_tasks for my_tasks.py) "
                          "and run from its folder, or install it") from None
      raise ConfigError(f"--module {name} failed to import: {e}") from e
    except ConfigError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (the user's code: one line)
      raise ConfigError(f"--module {name} failed to import: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from e
    _loaded.setdefault(name, _root_of(module, name))


def loaded() -> list[str]:
  """The modules loaded with `load` (not the entry points), in order."""
  return list(_loaded)


def _gin_imports() -> dict[str, str]:
  """Modules a gin file imported (`import my_tasks` lines), other than objectax's own."""
  import gin  # pylint: disable=g-import-not-at-top
  out = {}
  for statement in sorted(gin.config._IMPORTS, key=lambda s: s.module):  # pylint: disable=protected-access
    name = statement.module
    module = sys.modules.get(name)
    if module is not None and name.split(".")[0] not in ("objectax", "gin"):
      out[name] = _root_of(module, name)
  return out


def record(workdir: str) -> None:
  """Writes <workdir>/plugins.json: the modules loaded with --module or imported by the
  run's gin files, and where each was found (nothing when there are none)."""
  from objectax.launch import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  modules = {**_loaded, **_gin_imports()}
  if not modules:
    return
  workdir_lib.atomic_write(os.path.join(workdir, RECORD), json.dumps(
      {"modules": list(modules), "paths": sorted(set(modules.values()))}, indent=1))


def load_recorded(workdir: str) -> list[str]:
  """Imports the modules a run recorded in <workdir>/plugins.json (none: nothing to do)."""
  path = os.path.join(workdir, RECORD)
  if not os.path.exists(path):
    load_entry_points()
    return []
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    modules, paths = list(saved["modules"]), list(saved.get("paths", []))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"{path} could not be read ({e}); it lists the run's --module "
                      "modules: fix it, or delete it and pass --module again") from None
  load(modules, paths)
  return modules
