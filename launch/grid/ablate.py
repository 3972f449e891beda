"""`objectax ablate GRID.gin`: run a paper's grid cell by cell, then write its report.

A grid file is gin text with `Grid.*` bindings (which cells, where their experiment files
live, which paper's numbers to print beside ours) and bindings applied to every cell:

  Grid.cells = ['causal_decoder_full_lm', 'encoder_decoder_span_corruption']
  Grid.experiment_dir = 'experiments/wang2022'
  Grid.paper = 'wang2022'
  TrainConfig.log_every = 10             # every size
  tiny/TrainConfig.steps = 200           # only with --size=tiny (a gin scope named a size)

Cell `c` at `--size=s` is the experiment file `<experiment_dir>/<c>_<s>_<corpus>.gin`, or,
for a `Grid.variants` cell, its base cell's file plus the variant's bindings.
Each (cell, seed k) runs as two subprocesses, `objectax train --gin_file=FILE <grid bindings>
--gin.TrainConfig.seed=k --workdir=OUT/<c>/seed_k` then `objectax eval --workdir=...`, so a
cluster can run the same commands (`--print_commands`). A run whose summary.json reached the
configured steps and whose eval/yardstick.json exists is skipped on a rerun; a run that
trained but was not evaluated is only evaluated. Every cell is configured (and checked) in
this process before anything runs: a bad name or binding fails in one line.

Cells are matched on tokens seen (Wang et al. 2022 sec. 3.1, Table 2): steps x batch_size x
pieces per row (2 where an example pairs two pieces) x sequence_length, the per-piece
budget (len(inputs) + len(targets)), must agree.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

import gin
from gin import config_parser

from objectax.launch import plugins, preemption
from objectax.launch import workdir as workdir_lib
from objectax.models.registry import ConfigError

# Lines of TensorFlow's/absl's C++ logging that a subprocess prints before Python can
# silence them; the grid's terminal shows Objectax's own lines only (logs keep everything).
_NOISE = re.compile(r"^(WARNING: All log messages|[IWE]\d{4} |\S+\.cc:\d+\])")
_STEP = re.compile(r"step (\d+)/(\d+)")
_BAR = re.compile(r"^\[[#.]+\] ")  # the trainer's progress bar; the step count says as much


@dataclasses.dataclass(frozen=True)
class Grid:
  """The `Grid.*` bindings of a grid file.

  Attributes:
    cells: cell names: an experiment file `<cell>_<size>_<corpus>.gin` under experiment_dir,
      or a variant.
    variants: {name: [base cell, 'Configurable.param=value', ...]}: a cell that is a base
      cell's experiment file plus bindings (T5's corruption rates: one objective, several
      densities), so experiment files keep their grid-coordinate names.
    experiment_dir: folder of the cells' experiment files (relative to gin/ or a path).
    paper: whose published numbers the report prints beside ours ('' = none); see
      ablate_report.PAPERS.
    reference: the cell differences are taken against (default: the first cell).
    eval_documents: held-out documents of `objectax eval --documents`.
    match_tokens: refuse cells that would see different numbers of tokens.
    stages: what each pretrained run goes on to, in order, each a run of its own started
      from the previous one's parameters (`objectax finetune --init_from`) in a workdir
      inside it: [{'name': 'finetune', 'task': TASK, 'bindings': ['X.y=v', ...],
      'eval_tasks': [TASK, ...]}] fine-tunes on a task and scores it by generation
      (eval_tasks default: the task's own tasks that have metrics); {'name': 'mtf',
      'gin_file': 'adapt/mtf.gin'} continues with a recipe of its own and is evaluated as
      a pretrained run is (yardstick and zero-shot).
    orderings: {our metric (e.g. 'finetune/pydocs_summary/rougeL'): the paper's column
      (e.g. 'CNNDM')}: the report says, cell pair by cell pair, whether the paper's
      ordering on that column holds on ours.
  """
  cells: tuple[str, ...] = ()
  variants: dict = dataclasses.field(default_factory=dict)
  experiment_dir: str = ""
  paper: str = ""
  reference: str = ""
  eval_documents: int = 64
  match_tokens: bool = True
  stages: tuple = ()
  orderings: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Cell:
  """One configured cell: its experiment file and what it trains."""
  name: str
  gin_file: str
  steps: int
  batch_size: int
  sequence_length: int
  arch: str
  objective: str
  bindings: tuple[str, ...] = ()  # a variant's own, applied after the grid's
  per_row: int = 1  # budget-sized pieces per example (TaskLengths.per_row)

  @property
  def tokens_seen(self) -> int:
    """Tokens read per run, padding included (Wang et al.'s compute match)."""
    return self.steps * self.batch_size * self.per_row * self.sequence_length


@dataclasses.dataclass(frozen=True)
class Stage:
  """A run that continues each pretrained run (see Grid.stages)."""
  name: str
  task: str = ""
  gin_file: str = ""
  bindings: tuple[str, ...] = ()
  eval_tasks: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Plan:
  """A grid resolved at one size: the cells, the bindings every cell gets, the seeds."""
  grid: Grid
  grid_file: str
  size: str
  cells: tuple[Cell, ...]
  bindings: tuple[str, ...]
  seeds: int
  out: str
  stages: tuple[Stage, ...] = ()

  def workdir(self, cell: str, seed: int, stage: Optional[Stage] = None) -> str:
    """A pretraining run's workdir; a stage's lies inside its parent's."""
    base = os.path.join(self.out, cell, f"seed_{seed}")
    if stage is None:
      return base
    chain = [st.name for st in self.stages[:self.stages.index(stage) + 1]]
    return os.path.join(base, *chain)

  def parent(self, stage: Stage) -> Optional[Stage]:
    i = self.stages.index(stage)
    return self.stages[i - 1] if i else None

  def runs(self) -> list[tuple[Cell, int]]:
    return [(c, s) for c in self.cells for s in range(self.seeds)]


# ----------------------------------------------------------------------------- parsing


def _literal(value, where: str):
  """Grid files hold plain values: gin references and macros would not survive the trip
  to a subprocess's command line."""
  if isinstance(value, (list, tuple)):
    return type(value)(_literal(v, where) for v in value)
  if isinstance(value, dict):
    return {k: _literal(v, where) for k, v in value.items()}
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  raise ConfigError(f"{where}: grid files take plain values (numbers, strings, lists), "
                    f"not gin references or macros")


def parse_grid(path: str) -> tuple[Grid, list[tuple[str, str]]]:
  """Grid file -> (Grid, [(scope, 'Configurable.param=value')]); scope '' = every size."""
  from objectax.launch import configure  # pylint: disable=g-import-not-at-top
  path = configure.resolve_gin_file(path)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  grid_fields = {f.name for f in dataclasses.fields(Grid)}
  values, bindings = {}, []
  try:
    statements = list(config_parser.ConfigParser(text, gin.config.ParserDelegate(True)))
  except SyntaxError as e:
    raise ConfigError(f"{path}:{e.lineno}: gin syntax error: {e.msg}") from None
  for st in statements:
    if not isinstance(st, config_parser.BindingStatement):
      raise ConfigError(f"{path}:{st.location.line_num}: grid files hold bindings only "
                        f"(no include or import)")
    where = f"{path}:{st.location.line_num}"
    value = _literal(st.value, where)
    if st.selector == "Grid":
      if st.scope:
        raise ConfigError(f"{where}: Grid.{st.arg_name} cannot be scoped")
      if st.arg_name not in grid_fields:
        raise ConfigError(f"{where}: unknown grid binding Grid.{st.arg_name}; valid: "
                          f"{', '.join(sorted(grid_fields))}")
      if st.arg_name == "cells":
        if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) for c in value):
          raise ConfigError(f"{where}: Grid.cells must be a list of cell names")
        value = tuple(value)
      values[st.arg_name] = value
    else:
      bindings.append((st.scope, f"{st.selector}.{st.arg_name}={value!r}"))
  grid = Grid(**values)
  if not grid.cells or not grid.experiment_dir:
    raise ConfigError(f"{path}: a grid needs Grid.cells and Grid.experiment_dir")
  if len(set(grid.cells)) != len(grid.cells):
    raise ConfigError(f"{path}: Grid.cells repeats a cell")
  return grid, bindings


def experiment_files(experiment_dir: str) -> dict[str, dict[str, str]]:
  """{cell: {size: path}} of `<cell>_<size>_<corpus>.gin` files in the folder."""
  from objectax.launch import configure  # pylint: disable=g-import-not-at-top
  folder = experiment_dir if os.path.isdir(experiment_dir) else os.path.join(
      configure.GIN_DIR, experiment_dir)
  if not os.path.isdir(folder):
    raise ConfigError(f"Grid.experiment_dir {experiment_dir!r} is not a folder (as a path or "
                      f"under {configure.GIN_DIR}); valid: "
                      f"{', '.join('experiments/' + e for e in _experiment_dirs()) or 'none'}")
  sizes = sorted((f[:-4] for f in configure.axis_choices("size")), key=len, reverse=True)
  pattern = re.compile(rf"^(\w+?)_({'|'.join(map(re.escape, sizes))})_([a-z0-9]+)\.gin$")
  found: dict[str, dict[str, str]] = {}
  for name in sorted(os.listdir(folder)):
    m = pattern.match(name)
    if m:
      found.setdefault(m.group(1), {})[m.group(2)] = os.path.join(os.path.abspath(folder), name)
  return found


def _experiment_dirs() -> list[str]:
  from objectax.launch import configure  # pylint: disable=g-import-not-at-top
  root = os.path.join(configure.GIN_DIR, "experiments")
  return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def bindings_for(scoped: Sequence[tuple[str, str]], size: str, sizes: Sequence[str]) -> list[str]:
  """The grid's bindings that apply at `size`: unscoped ones, then `<size>/...` ones."""
  for scope, binding in scoped:
    if scope and scope not in sizes:
      raise ConfigError(f"grid binding {scope}/{binding.split('=')[0]}: scope {scope!r} is not "
                        f"a size; valid: {', '.join(sizes)}")
  return ([b for scope, b in scoped if not scope] +
          [b for scope, b in scoped if scope == size])


def configure_cell(name: str, gin_file: str, bindings: Sequence[str],
                   own: Sequence[str] = ()) -> Cell:
  """Parses the cell as `objectax train` would and validates its config (no compile)."""
  # pylint: disable=g-import-not-at-top
  from objectax.launch import builder, configure
  try:
    configure.parse([gin_file], [*bindings, *own])
    cfg = builder.resolve()
  except ConfigError as e:
    raise ConfigError(f"cell {name}: {str(e).strip().splitlines()[0]}") from None
  return Cell(name, gin_file, cfg.train.steps, cfg.train.batch_size, cfg.exp.sequence_length,
              cfg.exp.arch, cfg.exp.trains_on, tuple(own), cfg.task_lengths().per_row)


def _variants(grid: Grid, files: dict) -> dict[str, tuple[str, tuple[str, ...]]]:
  """{variant: (base cell, bindings)}, checked."""
  if not isinstance(grid.variants, dict):
    raise ConfigError("Grid.variants must be a dict {name: [base cell, 'X.y=value', ...]}")
  out = {}
  for name, spec in grid.variants.items():
    if not isinstance(spec, (list, tuple)) or not spec or spec[0] not in files \
        or not all(isinstance(b, str) and "=" in b for b in spec[1:]):
      raise ConfigError(f"Grid.variants[{name!r}] must be [base cell, 'Configurable.param=value'"
                        f", ...] with a base cell of {', '.join(sorted(files)) or 'none'}")
    out[name] = (spec[0], tuple("=".join(p.strip() for p in b.split("=", 1)) for b in spec[1:]))
  return out


def make_plan(grid_file: str, size: str, seeds: int, out: Optional[str] = None) -> Plan:
  """Resolves and checks the whole grid; raises ConfigError before anything runs."""
  from objectax.launch import configure  # pylint: disable=g-import-not-at-top
  if seeds < 1:
    raise ConfigError(f"--seeds={seeds} must be >= 1")
  grid, scoped = parse_grid(grid_file)
  files = experiment_files(grid.experiment_dir)
  variants = _variants(grid, files)
  base = {c: variants[c][0] if c in variants else c for c in grid.cells}
  unknown = [c for c in grid.cells if base[c] not in files]
  if unknown:
    raise ConfigError(f"unknown cell {unknown[0]!r} in {grid.experiment_dir}; valid cells: "
                      f"{', '.join(sorted([*files, *variants])) or 'none'}")
  if grid.reference and grid.reference not in grid.cells:
    raise ConfigError(f"Grid.reference {grid.reference!r} is not one of Grid.cells: "
                      f"{', '.join(grid.cells)}")
  if grid.paper:
    from objectax.launch.grid import report as ablate_report  # pylint: disable=g-import-not-at-top
    ablate_report.PAPERS.get(grid.paper)
  valid_sizes = sorted(set.intersection(*(set(files[base[c]]) for c in grid.cells)))
  if size not in valid_sizes:
    raise ConfigError(f"unknown size {size!r} for this grid (every cell needs "
                      f"<cell>_{size}_<corpus>.gin); valid sizes: "
                      f"{', '.join(valid_sizes) or 'none'}")
  all_sizes = [f[:-4] for f in configure.axis_choices("size")]
  bindings = tuple(bindings_for(scoped, size, all_sizes))
  cells = tuple(configure_cell(c, files[base[c]][size], bindings, variants.get(c, ("", ()))[1])
                for c in grid.cells)
  tokens = {c.name: c.tokens_seen for c in cells}
  if grid.match_tokens and len(set(tokens.values())) > 1:
    raise ConfigError("cells would see different numbers of tokens (steps x batch x "
                      f"sequence_length): {', '.join(f'{k} {v:,}' for k, v in tokens.items())}; "
                      "bind the same TrainConfig.steps/batch_size and Experiment.sequence_length "
                      "in the grid file, or set Grid.match_tokens = False")
  stages = _stages(grid)
  if not isinstance(grid.orderings, dict) or not all(
      isinstance(k, str) and isinstance(v, str) for k, v in grid.orderings.items()):
    raise ConfigError("Grid.orderings must be a dict {'stage/task/metric': 'paper column'}")
  stem = os.path.splitext(os.path.basename(grid_file))[0]
  out = os.path.abspath(out or os.path.join(
      "workdir", "ablate", f"{os.path.basename(grid.experiment_dir.rstrip('/'))}_{stem}_{size}"))
  return Plan(grid, configure.resolve_gin_file(grid_file), size, cells, bindings, seeds, out,
              stages)


_STAGE_KEYS = ("name", "task", "gin_file", "bindings", "eval_tasks")


def _stages(grid: Grid) -> tuple[Stage, ...]:
  """Grid.stages, checked: names, tasks and gin files exist before anything runs."""
  # pylint: disable=g-import-not-at-top
  from objectax.data import any_task
  from objectax.launch import configure
  from objectax.launch.eval import downstream
  if not isinstance(grid.stages, (list, tuple)):
    raise ConfigError("Grid.stages must be a list of {'name': ..., 'task': ... or "
                      "'gin_file': ...} dicts")
  out, names = [], set()
  for i, spec in enumerate(grid.stages):
    where = f"Grid.stages[{i}]"
    if not isinstance(spec, dict) or set(spec) - set(_STAGE_KEYS):
      raise ConfigError(f"{where} must be a dict with keys among {', '.join(_STAGE_KEYS)}")
    name = spec.get("name", "")
    if not (isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_]*", name)) or name in names:
      raise ConfigError(f"{where}: 'name' must be a new lower-case word (a folder), got "
                        f"{name!r}")
    names.add(name)
    task, gin_file = spec.get("task", ""), spec.get("gin_file", "")
    if not task and not gin_file:
      raise ConfigError(f"{where} ({name}): give a 'task' to fine-tune on or a 'gin_file' "
                        "recipe (e.g. 'adapt/mtf.gin')")
    if task:
      any_task.lookup(task, flag=f"{where}['task']")
    if gin_file:
      gin_file = configure.resolve_gin_file(gin_file)
    bindings = spec.get("bindings", [])
    if not isinstance(bindings, (list, tuple)) or not all(
        isinstance(b, str) and "=" in b for b in bindings):
      raise ConfigError(f"{where} ({name}): 'bindings' must be a list of 'X.y=value'")
    if "eval_tasks" in spec:
      eval_tasks = tuple(spec["eval_tasks"])
    else:
      eval_tasks = tuple(t.name for t in downstream.leaf_tasks(task)[1]) if task else ()
    for t in eval_tasks:
      downstream.leaf_tasks(t, flag=f"{where}['eval_tasks']")
    out.append(Stage(name, task, gin_file, tuple(bindings), eval_tasks))
  return tuple(out)


# ----------------------------------------------------------------------------- running


def commands(plan: Plan, cell: Cell, seed: int, program: Sequence[str] = ("objectax",)
             ) -> tuple[list[str], list[str]]:
  """(train argv, eval argv) of one run."""
  wd = plan.workdir(cell.name, seed)
  train = [*program, "train", *(f"--module={m}" for m in plugins.loaded()),
           f"--gin_file={cell.gin_file}",
           *(f"--gin.{b}" for b in (*plan.bindings, *cell.bindings)),
           f"--gin.TrainConfig.seed={seed}",
           f"--workdir={wd}"]
  evaluate = [*program, "eval", f"--workdir={wd}", f"--documents={plan.grid.eval_documents}"]
  return train, evaluate


def stage_commands(plan: Plan, cell: Cell, seed: int, stage: Stage,
                   program: Sequence[str] = ("objectax",)) -> tuple[list[str], list[str]]:
  """(train argv, eval argv) of one stage of one run: `objectax finetune` from the parent
  run's workdir, then its evaluation (the stage's tasks, or the yardstick and zero-shot)."""
  parent = plan.parent(stage)
  wd = plan.workdir(cell.name, seed, stage)
  train = [*program, "finetune", *(f"--module={m}" for m in plugins.loaded()),
           f"--init_from={plan.workdir(cell.name, seed, parent)}",
           *([f"--task={stage.task}"] if stage.task else []),
           *([f"--gin_file={stage.gin_file}"] if stage.gin_file else []),
           *(f"--gin.{b}" for b in stage.bindings),
           f"--gin.TrainConfig.seed={seed}", f"--workdir={wd}"]
  if stage.eval_tasks:
    evaluate = [*program, "eval", f"--workdir={wd}",
                *(f"--module={m}" for m in plugins.loaded()),
                *(a for t in stage.eval_tasks for a in ("--task", t))]
  else:
    evaluate = [*program, "eval", f"--workdir={wd}", f"--documents={plan.grid.eval_documents}"]
  return train, evaluate


def shell_commands(plan: Plan) -> list[str]:
  """One shell line per (cell, seed): train, then evaluate, then each stage's train and
  evaluate (for a cluster's job array)."""
  lines = []
  for cell, seed in plan.runs():
    steps = [commands(plan, cell, seed)] + [stage_commands(plan, cell, seed, st)
                                           for st in plan.stages]
    lines.append(" && ".join(shlex.join(argv) for pair in steps for argv in pair))
  return lines


STAGE_DONE = "ablate_stage_done.json"


def stage_state(plan: Plan, cell: Cell, seed: int, stage: Stage) -> str:
  """'done' (trained and evaluated) or 'todo'."""
  done = os.path.isfile(os.path.join(plan.workdir(cell.name, seed, stage), STAGE_DONE))
  return "done" if done else "todo"


def run_state(plan: Plan, cell: Cell, seed: int) -> str:
  """'done' (trained to the configured steps and evaluated), 'trained' (needs eval) or 'todo'."""
  wd = plan.workdir(cell.name, seed)
  try:
    with open(os.path.join(wd, "summary.json"), encoding="utf-8") as f:
      if json.load(f).get("final_step") != cell.steps:
        return "todo"
  except (OSError, ValueError):
    return "todo"
  return "done" if os.path.isfile(os.path.join(wd, "eval", "yardstick.json")) else "trained"


def _clock(seconds: Optional[float]) -> str:
  if seconds is None:
    return "?"
  s = int(max(seconds, 0))
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class GridProgress:
  """'[run k/n cell seed s] ... | grid ETA h:mm:ss', the ETA from finished runs' durations
  (before any has finished: the running one's step rate, extrapolated)."""

  def __init__(self, total: int, say: Callable[[str], None]):
    self.total, self.say = total, say
    self.durations: list[float] = []
    self.t_run = time.perf_counter()
    self.label = ""
    self.remaining = total
    self.step = (0, 0)  # the running run's last reported (step, steps)

  def start(self, index: int, label: str, remaining: int) -> None:
    self.label = f"[run {index}/{self.total} {label}]"
    self.remaining, self.t_run, self.step = remaining, time.perf_counter(), (0, 0)

  def eta(self) -> Optional[float]:
    elapsed = time.perf_counter() - self.t_run
    if self.durations:
      mean = sum(self.durations) / len(self.durations)
      return mean * (self.remaining - 1) + max(mean - elapsed, 0.0)
    step, steps = self.step
    if step and steps:  # training only: an underestimate until a run has finished
      return elapsed / step * steps * self.remaining - elapsed
    return None

  def line(self, text: str, step: int = 0, steps: int = 0) -> None:
    if steps:
      self.step = (step, steps)
    self.say(f"{self.label} {text}  | grid ETA {_clock(self.eta())}")

  def finish(self) -> None:
    self.durations.append(time.perf_counter() - self.t_run)


def stream(argv: Sequence[str], log_path: str, on_line: Callable[[str], None]) -> int:
  """Runs argv, stdout and stderr merged; every line to `log_path`, Objectax's to on_line."""
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
         "PYTHONUNBUFFERED": "1"}
  with open(log_path, "a", encoding="utf-8", buffering=1) as log, subprocess.Popen(
      list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
      bufsize=1) as proc:
    for raw in proc.stdout:
      log.write(raw)
      for line in raw.replace("\r", "\n").splitlines():
        if line.strip() and not _NOISE.match(line):
          on_line(_BAR.sub("", line.strip()))
  return proc.returncode


def run_grid(plan: Plan, *, say: Callable[[str], None] = print,
             program: Sequence[str] = (sys.executable, "-m", "objectax.launch.main")) -> dict:
  """Trains and evaluates every (cell, seed) not yet done, in order; returns
  {'ran': n, 'skipped': n, 'failed': [workdir, ...]}, plus 'stopped': workdir when a run
  was stopped by a signal (it saved; the grid stops there and a rerun resumes it)."""
  os.makedirs(plan.out, exist_ok=True)
  lock = _lock(plan.out)  # held until this process exits
  runs = plan.runs()
  todo = [(c, s) for c, s in runs if not _finished(plan, c, s)]
  stages = f" then {' -> '.join(st.name for st in plan.stages)}" if plan.stages else ""
  say(f"grid {plan.grid_file} at size {plan.size}: {len(plan.cells)} cells x {plan.seeds} "
      f"seeds = {len(runs)} runs{stages}, {len(runs) - len(todo)} already done; "
      f"{plan.cells[0].tokens_seen:,} tokens seen per run; out {plan.out}")
  progress = GridProgress(len(runs), say)
  failed = []
  for i, (cell, seed) in enumerate(todo):
    index = runs.index((cell, seed)) + 1
    progress.start(index, f"{cell.name} seed {seed}", len(todo) - i)
    wd = plan.workdir(cell.name, seed)
    os.makedirs(wd, exist_ok=True)
    rc, seconds = 0, {}
    if run_state(plan, cell, seed) != "done":
      train, evaluate = commands(plan, cell, seed, program)
      rc = _train_and_evaluate(progress, train, evaluate, wd, seconds,
                               train_first=run_state(plan, cell, seed) == "todo")
      if rc == 0:
        # Wall time of the subprocesses, start-up included: what a rerun of the grid costs.
        with open(os.path.join(wd, "ablate_seconds.json"), "w", encoding="utf-8") as f:
          json.dump(seconds, f)
    for stage in plan.stages:
      if rc != 0:
        break
      if stage_state(plan, cell, seed, stage) == "done":
        continue
      swd = plan.workdir(cell.name, seed, stage)
      os.makedirs(swd, exist_ok=True)
      progress.line(f"stage {stage.name}")
      train, evaluate = stage_commands(plan, cell, seed, stage, program)
      stage_seconds: dict = {}
      rc = _train_and_evaluate(progress, train, evaluate, swd, stage_seconds, train_first=True)
      if rc == 0:
        with open(os.path.join(swd, STAGE_DONE), "w", encoding="utf-8") as f:
          json.dump(stage_seconds, f)
        seconds.update({f"{stage.name}_{k}": v for k, v in stage_seconds.items()})
      else:
        wd = swd
    if rc == preemption.EXIT_PREEMPTED:  # the run saved on a signal: so stops the grid
      progress.line(f"stopped by a signal; {wd} saved a checkpoint: run the same "
                    "`objectax ablate` again to resume the grid")
      lock.close()
      return {"ran": i, "skipped": len(runs) - len(todo), "failed": failed, "stopped": wd}
    if rc != 0:
      failed.append(wd)
      progress.line(f"FAILED (exit {rc}); see {wd}/train.log and eval.log")
      continue
    progress.finish()
    progress.line(f"done in {progress.durations[-1]:.0f} s "
                  f"({', '.join(f'{k[:-8]} {v:.0f} s' for k, v in seconds.items())})")
  lock.close()
  return {"ran": len(todo) - len(failed), "skipped": len(runs) - len(todo), "failed": failed}


def _finished(plan: Plan, cell: Cell, seed: int) -> bool:
  return run_state(plan, cell, seed) == "done" and all(
      stage_state(plan, cell, seed, st) == "done" for st in plan.stages)


def _train_and_evaluate(progress: GridProgress, train: Sequence[str], evaluate: Sequence[str],
                        wd: str, seconds: dict, *, train_first: bool) -> int:
  """Runs one workdir's training (unless already trained) then its evaluation, logging to
  wd/train.log and wd/eval.log; fills `seconds`; returns the first non-zero exit code."""
  rc = 0
  if train_first:
    progress.line("training")

    def on_train(line: str) -> None:
      m = _STEP.search(line)
      if m:
        progress.line(line, int(m.group(1)), int(m.group(2)))
      elif "validation loss" in line or line.startswith(("objectax: error", "Traceback")):
        progress.line(line)
    t = time.perf_counter()
    rc = stream(train, os.path.join(wd, "train.log"), on_train)
    seconds["train_seconds"] = time.perf_counter() - t
  if rc == 0:
    progress.line("evaluating")
    t = time.perf_counter()
    rc = stream(evaluate, os.path.join(wd, "eval.log"),
                lambda line: progress.line(line) if "error" in line or "wrote" in line else None)
    seconds["eval_seconds"] = time.perf_counter() - t
  return rc


def _lock(out: str) -> workdir_lib.WorkdirLock:
  """An exclusive lock on OUT (the trainer's workdir lock under another name): two grids
  writing the same workdirs would corrupt both."""
  lock = workdir_lib.WorkdirLock(out, ".ablate.lock")
  try:
    lock.acquire()
  except ConfigError:
    raise ConfigError(f"another `objectax ablate` is running into {out}; wait for it or "
                      "pass another --out") from None
  return lock


def describe(plan: Plan) -> str:
  """The --dry_run listing: each cell, its file, tokens, and each run's state."""
  lines = [f"grid {plan.grid_file} at size {plan.size}, {plan.seeds} seed(s), out {plan.out}",
           f"bindings for every cell: {' '.join(plan.bindings) or '-'}"]
  for cell in plan.cells:
    states = [run_state(plan, cell, s) for s in range(plan.seeds)]
    lines.append(f"  {cell.name}: {os.path.relpath(cell.gin_file)}; {cell.arch}/{cell.objective}, "
                 f"{cell.steps} steps x {cell.batch_size}"
                 f"{f' rows x {cell.per_row} pieces' if cell.per_row > 1 else ''} x "
                 f"{cell.sequence_length} = "
                 f"{cell.tokens_seen:,} tokens{'; ' if cell.bindings else ''}"
                 f"{' '.join(cell.bindings)}; runs: {', '.join(states)}")
  for stage in plan.stages:
    what = " ".join(filter(None, [f"task {stage.task}" if stage.task else "",
                                  f"recipe {stage.gin_file and os.path.relpath(stage.gin_file)}"
                                  if stage.gin_file else "", " ".join(stage.bindings)]))
    judged = (f"scored on {', '.join(stage.eval_tasks)}" if stage.eval_tasks
              else "evaluated as a pretrained run (yardstick, zero-shot)")
    states = [stage_state(plan, c, s, stage) for c, s in plan.runs()]
    lines.append(f"  then stage {stage.name}: {what}; {judged}; "
                 f"{states.count('done')}/{len(states)} done")
  return "\n".join(lines)


def main(grid_file: str, size: str, seeds: int, out: Optional[str] = None, *,
         dry_run: bool = False, print_commands: bool = False) -> int:
  """The command. Returns the exit code (1 if any run failed)."""
  plan = make_plan(grid_file, size, seeds, out)
  if print_commands:
    print("\n".join(shell_commands(plan)))
    return 0
  if dry_run:
    print(describe(plan))
    return 0
  result = run_grid(plan, say=lambda msg: print(f"objectax ablate: {msg}", flush=True))
  if result.get("stopped"):
    return preemption.EXIT_PREEMPTED
  from objectax.launch.grid import report as ablate_report  # pylint: disable=g-import-not-at-top
  written = ablate_report.write_report(plan)
  print(f"objectax ablate: {result['ran']} run(s) trained/evaluated, {result['skipped']} "
        f"skipped as done, {len(result['failed'])} failed; wrote {', '.join(written)}",
        flush=True)
  return 1 if result["failed"] else 0
