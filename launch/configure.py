"""Gin files and bindings -> bound config dataclasses, with one-line errors.

Users write t5x-style flags: ``--gin_file=run/quickstart.gin --gin.Experiment.objective=span_corruption``.
Gin files are looked up as given, then under the installed gin/ folder. A value on the
right of a binding that is not a gin value (a Python literal, True/False/None, an @reference
or a %macro) is taken as a string (gin itself would reject it), so
``--gin.Experiment.objective=span_corruption``, ``--gin.TrainConfig.init_from=/abs/run`` or
``--gin.LocalTextConfig.train_glob=gs://bucket/*.txt`` need no shell-quoted quotes. A value
that starts with a quote or a bracket is meant as gin; one that does not parse fails in one
line that names its binding and shows the quoting that works.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import logging
import os
import re
import tokenize
import typing

import gin
from gin import config_parser

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

_GIN_LITERALS = {"True", "False", "None"}
_GIN_OPENERS = ("'", '"', "(", "[", "{")  # a value meant as gin: it must parse
_GIN_SIGILS = ("@", "%")                  # a configurable reference or a macro
_KEY = re.compile(r"^[A-Za-z_][\w./]*$")  # [scope/...]Configurable.param (or a macro name)


def configurables() -> dict[str, type]:
  """The gin-bound config classes, by name (importing them registers them with gin)."""
  # pylint: disable=g-import-not-at-top
  from objectax.data import sources, vocab
  from objectax.objectives import registry as objective_registry
  classes = [*model_configurables().values(),
             vocab.VocabConfig, sources.LocalTextConfig, sources.TfdsConfig]
  classes += [objective_registry.get(n).config_cls for n in objective_registry.OBJECTIVES.names()]
  out = {c.__name__: c for c in classes}
  for name, cls in plugin_configurables().items():
    out.setdefault(name, cls)
  return out


def plugin_configurables() -> dict[str, type]:
  """Gin-configurable dataclasses registered by code outside objectax (a --module, a
  plugin): they get the same type checks, one-line errors and operative-config record as
  the built-in ones."""
  out = {}
  for _, configurable in gin.config._REGISTRY.items():  # pylint: disable=protected-access
    cls = configurable.wrapped
    if (isinstance(cls, type) and dataclasses.is_dataclass(cls)
        and not cls.__module__.split(".")[0] in ("objectax", "gin")):
      out[configurable.name] = cls
  return out


def model_configurables() -> dict[str, type]:
  """The configurables that need neither TensorFlow nor seqio (`objectax bench model` on a
  GPU host): experiment, training, mesh, distribution and model shapes."""
  # pylint: disable=g-import-not-at-top
  from objectax.launch import config, distributed, sharding
  from objectax.models.config import ModelConfig
  classes = [config.Experiment, config.TrainConfig, sharding.MeshConfig,
             distributed.DistributedConfig, ModelConfig]
  return {c.__name__: c for c in classes}


def _is_gin_value(value: str) -> bool:
  """Whether gin should read `value` itself: a Python literal, True/False/None, an
  @reference or %macro, or something that starts with a quote or bracket (meant as gin,
  so it must parse). Anything else is a string: a word, a path, a glob, a URL."""
  if value in _GIN_LITERALS or value.startswith(_GIN_OPENERS + _GIN_SIGILS):
    return True
  try:
    ast.literal_eval(value)
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
    return False
  return True


def _quoting_hint(key: str, value: str) -> str:
  """The flag that passes `value` as a string through a POSIX shell."""
  literal = repr(value)
  if not any(c in literal for c in '"$`\\!'):
    return f'--gin.{key}="{literal}"'
  return f"--gin.{key}=" + "'" + literal.replace("'", "'\\''") + "'"


def _check_syntax(key: str, value: str) -> None:
  """Parses one binding on its own, so a syntax error names it (not a line of all of them)."""
  text = f"{key} = {value}"
  try:
    for _ in config_parser.ConfigParser(text, gin.config.ParserDelegate(skip_unknown=True)):
      pass
  except (SyntaxError, tokenize.TokenError, ValueError, IndexError):
    raise ConfigError(f"gin binding {text} cannot be parsed; quote a string value: "
                      f"{_quoting_hint(key, value)}") from None


def normalize_binding(binding: str) -> str:
  """'A.b=value' -> 'A.b = value' as gin text: a value that is not a gin value (a word,
  a path such as /data/*.jsonl, ~/runs/x or gs://bucket/x) becomes a quoted string; a
  gin value (numbers, tuples, True, quoted strings, @references, %macros) is left alone and
  must parse, else ConfigError in one line naming the binding."""
  if "=" not in binding:
    raise ConfigError(f"gin binding {binding!r} has no '='; write --gin.Configurable.param=value")
  key, value = (s.strip() for s in binding.split("=", 1))
  if not _KEY.match(key):
    raise ConfigError(f"gin binding {binding.strip()!r}: {key!r} is not a binding key; write "
                      "--gin.Configurable.param=value")
  if not _is_gin_value(value):
    value = repr(value)
  _check_syntax(key, value)
  return f"{key} = {value}"


def axis_choices(folder: str) -> list[str]:
  path = os.path.join(GIN_DIR, folder)
  if not os.path.isdir(path):
    return []
  return sorted(f for f in os.listdir(path) if f.endswith(".gin"))


def resolve_gin_file(name: str) -> str:
  """`name` as given, else under the installed gin/ folder; a leading "gin/" (the
  repository's path, as the README writes it) also resolves there from any directory."""
  inside = name[len("gin/"):] if name.startswith("gin/") else name
  for candidate in (name, os.path.join(GIN_DIR, name), os.path.join(GIN_DIR, inside)):
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  name = inside
  folder = os.path.dirname(name)
  choices = axis_choices(folder) if folder else [f"run/{f}" for f in axis_choices("run")]
  raise ConfigError(f"gin file {name!r} not found (searched . and {GIN_DIR}); valid choices"
                    f"{' in ' + folder + '/' if folder else ''}: {', '.join(choices) or 'none'}")


def _binding_at_fault(error: Exception, bindings: list[str]) -> str | None:
  """The binding a gin error in the bindings text is about, else None (a file's error).

  Gin parses the bindings as one text joined by newlines and reports a line of it: a
  SyntaxError without a file name, or "In bindings string line N" otherwise.
  """
  line = None
  if isinstance(error, SyntaxError) and error.filename is None and error.lineno:
    line = error.lineno
  else:
    m = re.search(r"In bindings string line (\d+)", str(error))
    if m:
      line = int(m.group(1))
  first = 1
  for binding in bindings if line is not None else []:
    last = first + binding.count("\n")
    if first <= line <= last:
      return binding
    first = last + 1
  return None


def _explain(error: Exception, classes: dict[str, type], bindings: list[str] = ()) -> str:
  binding = _binding_at_fault(error, list(bindings))
  if binding is not None and isinstance(error, (SyntaxError, tokenize.TokenError)):
    key, value = (p.strip() for p in binding.split("=", 1))
    return (f"gin binding {key} = {value} cannot be parsed; quote a string value: "
            f"{_quoting_hint(key, value)}")
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
  if binding is not None:
    reason = text.split(" In bindings string line")[0]
    return f"gin binding {' '.join(binding.split())}: {reason[:300]}"
  m = re.search(r"Unable to open file: (\S+?)\.? Searched config paths", text)
  if m:
    return (f"gin file include {m.group(1)!r} not found (looked beside the including file "
            f"and in {GIN_DIR}); valid choices are the files `objectax list` shows")
  m = re.search(r"^(.*?) \((\S+), line (\d+)\)", text)
  if m:  # a syntax error inside a gin file
    return f"gin file {m.group(2)} line {m.group(3)}: {m.group(1)[:200]}"
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
    where = _file_at_fault(files) if isinstance(e, (SyntaxError, tokenize.TokenError)) else None
    raise ConfigError(where or _explain(e, classes, bindings)) from None
  finally:
    root.setLevel(level)


def _file_at_fault(files: list[str]) -> str | None:
  """'gin file F line N: problem' for the first of `files` (includes followed) that does
  not tokenize or parse as gin, else None."""
  from gin import config_parser  # pylint: disable=g-import-not-at-top
  for path in [p for f in files for p in _included_files(f)]:
    with open(path, encoding="utf-8") as f:
      text = f.read()
    try:
      for _ in config_parser.ConfigParser(text, gin.config.ParserDelegate(skip_unknown=True)):
        pass
    except (SyntaxError, tokenize.TokenError) as e:
      line = getattr(e, "lineno", None) or (e.args[1][0] if len(e.args) > 1 else "?")
      problem = e.msg if isinstance(e, SyntaxError) else e.args[0]
      return f"gin file {path} line {line}: {problem}; see the gin syntax in the files under {GIN_DIR}"
  return None


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
  global _MODEL_OVERRIDES
  _MODEL_OVERRIDES = {}
  bindings = size_bindings + [normalize_binding(b) for b in bindings]
  _parse_gin(files, bindings, classes, model_only)  # first pass: which size?
  size = bound_or_default(Experiment, "size")
  check_size(size)
  size_file = os.path.join(size_dir, f"{size}.gin")
  _parse_gin([size_file], [], classes, model_only)  # the size's model alone
  size_model = _model_values()
  _parse_gin([size_file, *files], bindings, classes, model_only)
  check_types(classes)
  _MODEL_OVERRIDES = {k: v for k, v in _model_values().items() if v != size_model[k]}


# ModelConfig fields the last `parse` set to other values than its size's gin file alone.
_MODEL_OVERRIDES: dict[str, object] = {}
_SUFFIX_CHARS = re.compile(r"^[A-Za-z0-9_.=+\-]+$")
_SUFFIX_MAX = 40


def _model_values() -> dict[str, object]:
  """ModelConfig's bound-or-default values in the current gin config (nothing is built, so
  an invalid model still fails where it did, when the run resolves its config)."""
  from objectax.models.config import ModelConfig  # pylint: disable=g-import-not-at-top
  return {f.name: bound_or_default(ModelConfig, f.name) for f in dataclasses.fields(ModelConfig)}


def model_overrides() -> dict[str, object]:
  """{ModelConfig field: value} where the last `parse`d config differs from what its
  gin/size/<size>.gin alone gives: the experiment's files and the bindings changed the
  model of that size. Empty before any parse."""
  return dict(_MODEL_OVERRIDES)


def _suffix_value(value) -> str:
  return value if isinstance(value, str) else repr(value)


def workdir_suffix() -> str:
  """A short, deterministic, filesystem-safe suffix naming `model_overrides()` other than
  execution settings ("" when none), so runs of one experiment name with different models do not share a workdir:
  "+mlp_activation=relu" (fields sorted, joined by "+") when that is at most 40 characters
  of [A-Za-z0-9_.=+-], else "+model-" and 8 hex digits of a SHA-1 of the sorted overrides."""
  from objectax.models.config import EXECUTION_SETTINGS  # pylint: disable=g-import-not-at-top
  overrides = {k: v for k, v in model_overrides().items() if k not in EXECUTION_SETTINGS}
  if not overrides:
    return ""
  items = sorted(overrides.items())
  readable = "".join(f"+{k}={_suffix_value(v)}" for k, v in items)
  if len(readable) <= _SUFFIX_MAX and _SUFFIX_CHARS.match(readable):
    return readable
  digest = hashlib.sha1(repr([(k, _suffix_value(v)) for k, v in items]).encode("utf-8"))
  return f"+model-{digest.hexdigest()[:8]}"


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


def _undefined_macro(value) -> str | None:
  """The name of a %macro in `value` (nested in tuples, lists or dicts too) that no
  binding defines, else None."""
  if isinstance(value, (tuple, list)):
    return next(filter(None, map(_undefined_macro, value)), None)
  if isinstance(value, dict):
    return next(filter(None, map(_undefined_macro, value.values())), None)
  if (isinstance(value, gin.config.ConfigurableReference) and value.evaluate
      and value.configurable.wrapped is gin.config.macro):
    name = "/".join(value.scopes)
    try:
      gin.query_parameter(f"{name}/gin.macro.value")
    except ValueError:
      return name
  return None


def check_types(classes: dict[str, type]) -> None:
  """Gin does not type-check: `TrainConfig.steps = 'ten'` would fail deep inside a loop."""
  for name, cls in classes.items():
    try:
      hints = typing.get_type_hints(cls)
    except Exception:  # pylint: disable=broad-except  (a plugin's unresolvable annotation)
      hints = {}
    for field in dataclasses.fields(cls):
      try:
        value = gin.query_parameter(f"{name}.{field.name}")
      except ValueError:
        continue  # not bound: the dataclass default applies
      undefined = _undefined_macro(value)
      if undefined:  # gin would fail with a TypeError when the class is built
        raise ConfigError(f"gin binding {name}.{field.name} = {value!r} uses the macro "
                          f"%{undefined}, which is not defined; define it, e.g. "
                          f"--gin.{undefined}=VALUE or `{undefined} = VALUE` in a gin file")
      if type(value).__module__.startswith("gin"):
        continue  # a @reference or %macro: gin resolves it
      if field.name in hints and not _type_ok(value, hints[field.name]):
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
  from objectax.launch import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  workdir_lib.atomic_write(path, text)  # a crash mid-write leaves the previous one whole
  return path
