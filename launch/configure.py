"""Gin files and bindings -> bound config dataclasses, with one-line errors.

Users write t5x-style flags: ``--gin_file=run/quickstart.gin --gin.Experiment.objective=span_corruption``.
Gin files are looked up as given, then under the installed gin/ folder. A bare word on the
right of a binding is taken as a string (gin itself would reject it), so
``--gin.Experiment.objective=span_corruption`` needs no shell-quoted quotes.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import typing

import gin

from objectax.models.registry import ConfigError


def _gin_dir() -> str:
  """The installed gin/ folder. It has no __init__.py on purpose: a regular package named
  gin at the repository root would shadow gin-config for scripts run from there."""
  import objectax.gin  # pylint: disable=g-import-not-at-top
  for path in objectax.gin.__path__:
    if os.path.isdir(os.path.join(path, "run")):
      return os.path.abspath(path)
  raise RuntimeError(f"objectax's gin/ folder was not installed (looked in {list(objectax.gin.__path__)})")


GIN_DIR = _gin_dir()

_BARE_WORD = re.compile(r"^[A-Za-z_][\w\-./]*$")
_GIN_LITERALS = {"True", "False", "None"}


def configurables() -> dict[str, type]:
  """The gin-bound config classes, by name (importing them registers them with gin)."""
  # pylint: disable=g-import-not-at-top
  from objectax.data import sources, vocab
  from objectax.objectives import registry as objective_registry
  classes = [*model_configurables().values(),
             vocab.VocabConfig, sources.LocalTextConfig, sources.TfdsConfig]
  classes += [objective_registry.get(n).config_cls for n in objective_registry.OBJECTIVES.names()]
  return {c.__name__: c for c in classes}


def model_configurables() -> dict[str, type]:
  """The configurables that need neither TensorFlow nor seqio (`objectax bench model` on a
  GPU host): experiment, training, mesh, distribution and model shapes."""
  # pylint: disable=g-import-not-at-top
  from objectax.launch import config, distributed, sharding
  from objectax.models.config import ModelConfig
  classes = [config.Experiment, config.TrainConfig, sharding.MeshConfig,
             distributed.DistributedConfig, ModelConfig]
  return {c.__name__: c for c in classes}


def normalize_binding(binding: str) -> str:
  """'A.b=word' -> "A.b='word'"; anything gin can already parse is left alone."""
  if "=" not in binding:
    raise ConfigError(f"gin binding {binding!r} has no '='; write --gin.Configurable.param=value")
  key, value = (s.strip() for s in binding.split("=", 1))
  if _BARE_WORD.match(value) and value not in _GIN_LITERALS:
    value = repr(value)
  return f"{key} = {value}"


def axis_choices(folder: str) -> list[str]:
  path = os.path.join(GIN_DIR, folder)
  if not os.path.isdir(path):
    return []
  return sorted(f for f in os.listdir(path) if f.endswith(".gin"))


def resolve_gin_file(name: str) -> str:
  for candidate in (name, os.path.join(GIN_DIR, name)):
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  folder = os.path.dirname(name)
  choices = axis_choices(folder) if folder else [f"run/{f}" for f in axis_choices("run")]
  raise ConfigError(f"gin file {name!r} not found (searched . and {GIN_DIR}); valid choices"
                    f"{' in ' + folder + '/' if folder else ''}: {', '.join(choices) or 'none'}")


def _explain(error: Exception, classes: dict[str, type]) -> str:
  text = " ".join(str(error).split())
  m = re.search(r"Configurable '(\w+)' doesn't have a parameter named '(\w+)'", text)
  if m and m.group(1) in classes:
    fields = [f.name for f in dataclasses.fields(classes[m.group(1)])]
    return (f"unknown gin binding {m.group(1)}.{m.group(2)}; valid parameters of "
            f"{m.group(1)}: {', '.join(fields)}")
  m = re.search(r"No configurable matching '([\w.]+)'", text)
  if m:
    return (f"unknown gin configurable {m.group(1)!r}; valid choices: "
            f"{', '.join(sorted(classes))}")
  return f"bad gin config: {text[:300]}"


_INCLUDE = re.compile(r"^\s*include\s+['\"]([^'\"]+)['\"]", re.MULTILINE)


def _included_files(path: str, seen: set[str] | None = None) -> list[str]:
  """`path` and every file it includes, recursively (gin's own lookup order)."""
  seen = set() if seen is None else seen
  if path in seen:
    return []
  seen.add(path)
  out = [path]
  with open(path, encoding="utf-8") as f:
    text = f.read()
  for name in _INCLUDE.findall(text):
    for candidate in (os.path.join(os.path.dirname(path), name), os.path.join(GIN_DIR, name)):
      if os.path.isfile(candidate):
        out += _included_files(os.path.abspath(candidate), seen)
        break
  return out


def _parse_gin(files: list[str], bindings: list[str], classes: dict[str, type],
               skip_unknown: bool = False) -> None:
  gin.clear_config()
  if GIN_DIR not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(GIN_DIR)  # once: gin appends, even duplicates
  # gin logs "Path not found" for every include it first tries relative to the including
  # file before its search path; those lines are noise, real failures raise.
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)
  try:
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=False,
                                        skip_unknown=skip_unknown)
  except Exception as e:  # ValueError, SyntaxError, OSError, tokenize.TokenError: one line
    raise ConfigError(_explain(e, classes)) from None
  finally:
    root.setLevel(level)


def bound_or_default(cls: type, field: str):
  try:
    return gin.query_parameter(f"{cls.__name__}.{field}")
  except ValueError:
    return {f.name: f.default for f in dataclasses.fields(cls)}[field]


def parse(gin_files: list[str], bindings: list[str], *, model_only: bool = False) -> None:
  """Clears gin, then parses files and bindings; raises ConfigError in one line.

  model_only: register only `model_configurables` (no TensorFlow or seqio imported) and
  skip bindings of any other configurable (objective and corpus settings), for paths that
  train on synthetic batches.

  The size is one switch, `Experiment.size`: its file `gin/size/<size>.gin` is applied
  first, so the experiment's files and the command line's bindings override it.
  `--gin_file=size/small.gin` means `Experiment.size = 'small'`. Other files must not
  include a size file (the name and the model would disagree).
  """
  from objectax.launch.config import Experiment  # pylint: disable=g-import-not-at-top
  classes = model_configurables() if model_only else configurables()
  size_dir = os.path.join(GIN_DIR, "size")
  files, size_bindings = [], []
  for path in (resolve_gin_file(f) for f in gin_files):
    if os.path.dirname(path) == size_dir:
      size_bindings.append(f"Experiment.size = {os.path.basename(path)[:-4]!r}")
      continue
    nested = [p for p in _included_files(path)[1:] if os.path.dirname(p) == size_dir]
    if nested:
      raise ConfigError(f"{path} includes {os.path.relpath(nested[0], GIN_DIR)}; choose the size "
                        f"with Experiment.size = '<name>' instead (valid: "
                        f"{', '.join(f[:-4] for f in axis_choices('size'))})")
    files.append(path)
  bindings = size_bindings + [normalize_binding(b) for b in bindings]
  _parse_gin(files, bindings, classes, model_only)  # first pass: which size?
  size = bound_or_default(Experiment, "size")
  check_size(size)
  _parse_gin([os.path.join(size_dir, f"{size}.gin"), *files], bindings, classes, model_only)
  check_types(classes)


def _type_ok(value, hint) -> bool:
  origin = typing.get_origin(hint)
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if hint in (str, bool):
    return isinstance(value, hint)
  if origin in (tuple, list):
    return isinstance(value, (tuple, list))
  return True


def check_types(classes: dict[str, type]) -> None:
  """Gin does not type-check: `TrainConfig.steps = 'ten'` would fail deep inside a loop."""
  for name, cls in classes.items():
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
      try:
        value = gin.query_parameter(f"{name}.{field.name}")
      except ValueError:
        continue  # not bound: the dataclass default applies
      if type(value).__module__.startswith("gin"):
        continue  # a @reference or %macro: gin resolves it
      if not _type_ok(value, hints[field.name]):
        raise ConfigError(f"gin binding {name}.{field.name} = {value!r} should be of type "
                          f"{getattr(hints[field.name], '__name__', hints[field.name])}")


def check_size(size) -> None:
  sizes = [f[:-4] for f in axis_choices("size")]
  if size not in sizes:
    raise ConfigError(f"unknown size {size!r}; valid choices: {', '.join(sizes)} "
                      f"(set Experiment.size)")


def write_operative_config(workdir: str) -> str:
  """Writes every bound and default value of the run's config classes to <workdir>/config.gin."""
  lines = ["# Operative config of this run: every parameter, bound or default.", ""]
  for name, cls in configurables().items():
    try:
      instance = cls()
    except Exception:  # pylint: disable=broad-except
      continue
    for field in dataclasses.fields(cls):
      lines.append(f"{name}.{field.name} = {getattr(instance, field.name)!r}")
    lines.append("")
  text = "\n".join(lines)
  path = os.path.join(workdir, "config.gin")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return path
