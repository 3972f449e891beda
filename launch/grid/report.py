"""The grid's report: results.md, results.csv and PNG plots from the runs' workdirs.

Reads, per (cell, seed) workdir: summary.json and metrics.jsonl (training), eval/yardstick.json
(bits per byte of the common yardstick, with per-document figures) and eval/zeroshot.json
(rank-classification accuracies, with per-example correctness) when present. Differences
against the reference cell come with paired-bootstrap 95% intervals (`paired_bootstrap`).
The paper's published numbers for the same cells are printed beside ours, with their source
(also in docs/objectives.md#published-results), for orientation only: other scale, other metrics.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Optional, Sequence

import numpy as np

from objectax.models.registry import Registry

LN2 = math.log(2.0)
BOOTSTRAP_SAMPLES = 2000


# ----------------------------------------------------------------------- paper numbers


@dataclasses.dataclass(frozen=True)
class PaperTable:
  """Published numbers keyed by our cell names; None = not reported."""
  source: str
  columns: tuple[str, ...]
  rows: dict[str, tuple[Optional[float], ...]]
  note: str = ""


PUBLISHED_FILE = "published.json"


def _load_papers() -> None:
  """Registers every `gin/experiments/<grid>/published.json` under its "paper" name.

  The numbers live beside the grid they belong to, as data: {"paper", "source",
  "columns", "rows": {cell: [value or null, ...]}, "note"} ("comment" is for readers).
  """
  # pylint: disable=g-import-not-at-top
  import glob
  from objectax.launch import configure
  for path in sorted(glob.glob(os.path.join(configure.GIN_DIR, "experiments", "*",
                                            PUBLISHED_FILE))):
    with open(path, encoding="utf-8") as f:
      table = json.load(f)
    PAPERS.add(table["paper"], PaperTable(
        source=table["source"], columns=tuple(table["columns"]),
        rows={cell: tuple(values) for cell, values in table["rows"].items()},
        note=table.get("note", "")))


PAPERS = Registry[PaperTable]("paper", loader=_load_papers)


# ----------------------------------------------------------------------- statistics


def paired_bootstrap(num_a_SE: np.ndarray, den_a_SE: np.ndarray, num_b_SE: np.ndarray,
                     den_b_SE: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
  """(difference, low, high): statistic(A) - statistic(B) with a percentile interval.

  A cell's statistic is the mean over seeds of a ratio over examples, sum(num) / sum(den)
  (bits per byte: nats / ln 2 over bytes; accuracy: correct over 1 per example). Each
  bootstrap replicate draws S seeds and E examples with replacement and uses the SAME draw
  for both cells: seed k of A is paired with seed k of B, document e with document e.
  With one seed only documents are resampled.
  """
  shapes = {x.shape for x in (num_a_SE, den_a_SE, num_b_SE, den_b_SE)}
  if len(shapes) != 1:
    raise ValueError(f"paired data must have one shape, got {shapes}")
  s, e = num_a_SE.shape
  stat = lambda num_SE, den_SE: float(np.mean(num_SE.sum(1) / den_SE.sum(1)))
  point = stat(num_a_SE, den_a_SE) - stat(num_b_SE, den_b_SE)
  rng = np.random.default_rng(seed)
  seeds_RS = (rng.integers(0, s, size=(samples, s)) if s > 1
              else np.zeros((samples, 1), np.int64))
  examples_RE = rng.integers(0, e, size=(samples, e))
  pick = lambda x_SE: x_SE[seeds_RS[:, :, None], examples_RE[:, None, :]]  # (R, S, E)
  ratio = lambda num_SE, den_SE: (pick(num_SE).sum(2) / pick(den_SE).sum(2)).mean(1)
  diffs_R = ratio(num_a_SE, den_a_SE) - ratio(num_b_SE, den_b_SE)
  tail = (1 - level) / 2 * 100
  low, high = np.percentile(diffs_R, [tail, 100 - tail])
  return point, float(low), float(high)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
  if not len(v):
    return float("nan"), float("nan")
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


# ----------------------------------------------------------------------- collection


def _read_json(path: str) -> Optional[dict]:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


@dataclasses.dataclass
class Run:
  """What one (cell, seed) workdir holds."""
  summary: Optional[dict]
  metrics: list[dict]
  yardstick: Optional[dict]
  zeroshot: Optional[dict]
  seconds: Optional[dict] = None  # ablate_seconds.json: subprocess wall times of the grid
  downstream: Optional[dict] = None  # eval/tasks_<step>.json of its latest step

  @classmethod
  def load(cls, workdir: str) -> "Run":
    rows = []
    try:
      with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
      pass
    return cls(_read_json(os.path.join(workdir, "summary.json")), rows,
               _read_json(os.path.join(workdir, "eval", "yardstick.json")),
               _read_json(os.path.join(workdir, "eval", "zeroshot.json")),
               _read_json(os.path.join(workdir, "ablate_seconds.json")),
               _latest_tasks(workdir))

  def loss_tokens(self, steps: int) -> Optional[float]:
    """Tokens that carried loss over the run: the mean `target_tokens` (the batch's loss
    weight sum) of the logged steps, times the steps. Exact when every batch has the same
    count (full LM, span corruption); an estimate from a sample of steps otherwise."""
    counts = [r["target_tokens"] for r in self.metrics if "target_tokens" in r]
    return float(np.mean(counts)) * steps if counts else None

  def mean_logged(self, key: str) -> Optional[float]:
    """The mean of `key` over the logged training steps of metrics.jsonl; None when no
    row has it (a run from before it was logged)."""
    values = [r[key] for r in self.metrics if key in r]
    return float(np.mean(values)) if values else None

  def eval_curve(self) -> list[tuple[int, float]]:
    return [(r["step"], r["eval_loss"]) for r in self.metrics if "eval_loss" in r]


def _latest_tasks(workdir: str) -> Optional[dict]:
  """The downstream scores (`objectax eval --task`) of the workdir's latest step."""
  folder = os.path.join(workdir, "eval")
  try:
    steps = [int(n[len("tasks_"):-len(".json")]) for n in os.listdir(folder)
             if n.startswith("tasks_") and n.endswith(".json") and n[6:-5].isdigit()]
  except OSError:
    return None
  return _read_json(os.path.join(folder, f"tasks_{max(steps)}.json")) if steps else None


@dataclasses.dataclass(frozen=True)
class Metric:
  """One reported quantity: per-seed values, and per-example (num, den) for the bootstrap."""
  name: str
  values: tuple[Optional[float], ...]
  num_SE: Optional[np.ndarray] = None
  den_SE: Optional[np.ndarray] = None


def _paired(runs: Sequence[Run], get) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
  """(num_SE, den_SE) over all seeds, or None when a seed lacks them or lengths differ."""
  pairs = [get(r) for r in runs]
  if not pairs or any(p is None for p in pairs) or len({len(p[0]) for p in pairs}) != 1 \
      or not len(pairs[0][0]):
    return None, None
  return (np.asarray([p[0] for p in pairs], np.float64),
          np.asarray([p[1] for p in pairs], np.float64))


def _evaluations(run: Run) -> dict:
  return (run.yardstick or {}).get("evaluations") or {}


def _tasks(run: Run) -> dict:
  return (run.zeroshot or {}).get("tasks") or {}


def _per_document(evaluation: dict):
  """(bits, bytes) per held-out document of one yardstick evaluation, or None."""
  if not evaluation.get("example_nats"):
    return None
  return np.asarray(evaluation["example_nats"]) / LN2, evaluation["example_bytes"]


def _per_example(task: dict, key: str):
  """(correct, 1) per example of one zero-shot task, or None."""
  if not task.get(key):
    return None
  return task[key], [1.0] * len(task[key])


def cell_metrics(runs: Sequence[Run], steps: int) -> dict[str, Metric]:
  """Every metric of one cell, from its seeds' runs, in report order."""
  out: dict[str, Metric] = {}
  add = lambda m: out.__setitem__(m.name, m)
  summaries = [r.summary or {} for r in runs]
  add(Metric("final_eval_loss", tuple(s.get("final_eval_loss") for s in summaries)))
  add(Metric("loss_tokens", tuple(r.loss_tokens(steps) for r in runs)))
  add(Metric("train_wall_seconds", tuple(s.get("wall_seconds") for s in summaries)))
  add(Metric("run_seconds", tuple(sum((r.seconds or {}).values()) or None for r in runs)))
  # Per seed, the mean over its logged steps (each the logged step's own batch): the share
  # of the computed positions that was padding, and MFU counted on the other tokens only.
  add(Metric("padding_fraction", tuple(r.mean_logged("padding_fraction") for r in runs)))
  add(Metric("useful_mfu", tuple(r.mean_logged("useful_mfu") for r in runs)))
  names = [n for r in runs for n in _evaluations(r)]
  for name in dict.fromkeys(names):
    get = lambda r, name=name: _per_document(_evaluations(r).get(name) or {})
    add(Metric(f"bpb/{name}", tuple((_evaluations(r).get(name) or {}).get("bits_per_byte")
                                    for r in runs), *_paired(runs, get)))
  tasks = [t for r in runs for t in _tasks(r)]
  for task in dict.fromkeys(tasks):
    for key, per_example in (("accuracy", "correct"), ("accuracy_norm", "correct_norm")):
      get = lambda r, task=task, per_example=per_example: _per_example(
          _tasks(r).get(task) or {}, per_example)
      add(Metric(f"zeroshot/{task}/{key}", tuple((_tasks(r).get(task) or {}).get(key)
                                                 for r in runs), *_paired(runs, get)))
  return out


def downstream_metrics(runs: Sequence[Run], prefix: str) -> dict[str, Metric]:
  """`<prefix><task>/<metric>` of the runs' downstream scores, with per-example values
  (a mean over examples) for the bootstrap where the metric has them."""
  out: dict[str, Metric] = {}
  tasks = lambda r: (r.downstream or {}).get("tasks") or {}
  for task in dict.fromkeys(t for r in runs for t in tasks(r)):
    keys = dict.fromkeys(k for r in runs for k in (tasks(r).get(task) or {}).get("metrics", {}))
    for key in keys:
      def get(r, task=task, key=key):
        column = ((tasks(r).get(task) or {}).get("per_example") or {}).get(key)
        return None if column is None else (column, [1.0] * len(column))
      out[f"{prefix}{task}/{key}"] = Metric(
          f"{prefix}{task}/{key}",
          tuple(((tasks(r).get(task) or {}).get("metrics") or {}).get(key) for r in runs),
          *_paired(runs, get))
  return out


def stage_metrics(stage, runs: Sequence[Run]) -> dict[str, Metric]:
  """A stage's metrics, named `<stage>/...`: its downstream task scores, or (a stage
  evaluated as a pretrained run) its yardstick and zero-shot figures."""
  out = downstream_metrics(runs, f"{stage.name}/")
  if stage.eval_tasks:
    return out
  for name, metric in cell_metrics(runs, 0).items():
    if name.startswith(("bpb/", "zeroshot/")) or name == "final_eval_loss":
      renamed = f"{stage.name}/{name}"
      out[renamed] = dataclasses.replace(metric, name=renamed)
  return out


def collect(plan) -> dict[str, tuple[list[Run], dict[str, Metric]]]:
  """{cell: (runs of the seeds that finished training, metrics)}; a stage's metrics join
  its cell's, named `<stage>/...`."""
  out = {}
  for cell in plan.cells:
    runs = [Run.load(plan.workdir(cell.name, s)) for s in range(plan.seeds)]
    runs = [r for r in runs if r.summary]
    metrics = cell_metrics(runs, cell.steps)
    for stage in getattr(plan, "stages", ()):
      stage_runs = [Run.load(plan.workdir(cell.name, s, stage)) for s in range(plan.seeds)]
      metrics.update(stage_metrics(stage, [r for r in stage_runs if r.summary]))
    out[cell.name] = (runs, metrics)
  return out


# ----------------------------------------------------------------------- writing


def _fmt(mean: float, std: float, digits: int = 4) -> str:
  if not math.isfinite(mean):
    return "–"
  return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def _pct(mean: float, std: float) -> str:
  """A fraction as a percentage, mean ± std over seeds like `_fmt`."""
  if not math.isfinite(mean):
    return "–"
  return f"{mean:.1%}" + (f" ± {std:.1%}" if math.isfinite(std) else "")


def _delta(metric: Metric, ref: Optional[Metric], digits: int = 4) -> tuple[str, list]:
  """Markdown cell and CSV fields of metric - ref with its paired-bootstrap interval."""
  if ref is None or metric.num_SE is None or ref.num_SE is None \
      or metric.num_SE.shape != ref.num_SE.shape:
    return "–", ["", "", ""]
  d, lo, hi = paired_bootstrap(metric.num_SE, metric.den_SE, ref.num_SE, ref.den_SE)
  star = "*" if lo > 0 or hi < 0 else ""
  return f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]{star}", [d, lo, hi]


def _bar_chart(path: str, title: str, ylabel: str, cells: Sequence[str],
               stats: Sequence[tuple[float, float]], hline: Optional[float] = None) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cells)), 4.5))
  means = [m if math.isfinite(m) else 0.0 for m, _ in stats]
  errs = [s if math.isfinite(s) else 0.0 for _, s in stats]
  ax.bar(range(len(cells)), means, yerr=errs, capsize=4, color="tab:blue")
  if hline is not None:
    ax.axhline(hline, color="gray", linestyle="--", label="chance")
    ax.legend()
  ax.set_xticks(range(len(cells)), cells, rotation=30, ha="right", fontsize=8)
  ax.set_title(title, fontsize=10)
  ax.set_ylabel(ylabel)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _loss_plot(path: str, plan, collected) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for cell in plan.cells:
    curves = [dict(r.eval_curve()) for r in collected[cell.name][0]]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    if not steps:
      continue
    tokens = [s * cell.batch_size * cell.sequence_length for s in steps]
    loss_SN = np.asarray([[c[s] for s in steps] for c in curves])
    ax.plot(tokens, loss_SN.mean(0), marker="o", markersize=3, label=cell.name)
    if len(curves) > 1:
      ax.fill_between(tokens, loss_SN.min(0), loss_SN.max(0), alpha=0.2)
  ax.set_xlabel("tokens seen")
  ax.set_ylabel("validation loss (nats/target token)")
  ax.set_title("Validation loss of each cell's own objective (not comparable across "
               "objectives)", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _slug(name: str) -> str:
  return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _orderings(plan, names: Sequence[str], collected) -> list[str]:
  """For each (our metric, paper column) of Grid.orderings and each pair of cells the paper
  reports: does the paper's order hold on ours? "holds"/"reversed" when our paired 95%
  interval excludes 0, else "not resolved" at this scale."""
  paper = PAPERS.get(plan.grid.paper)
  lines = ["Per pair of cells, the paper's order on its column against the difference on "
           "ours (paired bootstrap over examples and seeds, 95% interval). Nothing is tuned "
           "to agree: the tasks are analogues at this scale, not the paper's.", "",
           "| our metric | paper column | pair (paper's better first) | paper | ours: difference "
           "[95% interval] | verdict |", "|---|---|---|---|---|---|"]
  counts = {"holds": 0, "reversed": 0, "not resolved": 0}
  for ours, column in plan.grid.orderings.items():
    if column not in paper.columns:
      lines.append(f"| {ours} | {column} | – | – | – | the paper has no column {column!r} |")
      continue
    col = paper.columns.index(column)
    scored = [n for n in names if (paper.rows.get(n) or [None] * len(paper.columns))[col]
              is not None and ours in collected[n][1]]
    for i, a in enumerate(scored):
      for b in scored[i + 1:]:
        pa, pb = paper.rows[a][col], paper.rows[b][col]
        if pa == pb:
          continue
        hi_cell, lo_cell = (a, b) if pa > pb else (b, a)
        metric, other = collected[hi_cell][1][ours], collected[lo_cell][1][ours]
        if metric.num_SE is None or other.num_SE is None or \
            metric.num_SE.shape != other.num_SE.shape:
          verdict, shown = "no per-example values", "–"
        else:
          d, lo, hi = paired_bootstrap(metric.num_SE, metric.den_SE, other.num_SE, other.den_SE)
          verdict = "holds" if lo > 0 else "reversed" if hi < 0 else "not resolved"
          shown = f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]"
          counts[verdict] += 1
        lines.append(f"| {ours} | {column} | {hi_cell} > {lo_cell} | "
                     f"{max(pa, pb)} vs {min(pa, pb)} | {shown} | {verdict} |")
  lines.extend(["", f"In all: {counts['holds']} hold, {counts['reversed']} are reversed, "
                f"{counts['not resolved']} are not resolved at this scale."])
  return lines


def write_report(plan) -> list[str]:
  """Writes OUT/results.md, OUT/results.csv and OUT/*.png; returns their paths."""
  os.makedirs(plan.out, exist_ok=True)
  collected = collect(plan)
  names = [c.name for c in plan.cells]
  ref_name = plan.grid.reference or names[0]
  ref_metrics = collected[ref_name][1]
  all_metrics = list(dict.fromkeys(m for n in names for m in collected[n][1]))
  stats = {(n, m): _mean_std(collected[n][1][m].values) if m in collected[n][1]
           else (float("nan"),) * 2 for n in names for m in all_metrics}
  # Evaluations no cell could run (e.g. a skipped yardstick row) get no column and no plot.
  all_metrics = [m for m in all_metrics
                 if any(math.isfinite(stats[(n, m)][0]) for n in names)]
  written = []

  csv_path = os.path.join(plan.out, "results.csv")
  with open(csv_path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["cell", "metric", "seeds", "mean", "std", "values", "reference",
                "delta_vs_reference", "ci95_low", "ci95_high"])
    for cell in plan.cells:
      n = cell.name
      w.writerow([n, "tokens_seen", len(collected[n][0]), cell.tokens_seen, 0, "", "", "", "", ""])
      for m, metric in collected[n][1].items():
        mean, std = stats[(n, m)]
        fields = _delta(metric, ref_metrics.get(m))[1] if n != ref_name else ["", "", ""]
        w.writerow([n, m, len(collected[n][0]), mean, std,
                    ";".join("" if v is None else repr(v) for v in metric.values), ref_name,
                    *fields])
  written.append(csv_path)

  md = [f"# Grid results: {os.path.basename(plan.grid_file)} at size {plan.size}", "",
        f"{len(names)} cells x {plan.seeds} seed(s); figures are mean ± std over seeds "
        "(std needs >= 2 seeds). Every cell trains the same number of tokens (steps x batch x "
        "pieces per row x sequence length, the per-piece budget inputs + targets, as Wang et "
        "al. 2022 match compute; a row holds two pieces where the encoder-decoder pairs "
        "them); tokens that carried loss differ by objective (mean `target_tokens` of the "
        "logged steps x steps, from metrics.jsonl).", "",
        "## Training", "",
        "The validation loss is each cell's OWN objective's loss on held-out batches: a "
        "span-corruption loss and a full-LM loss measure different things, so these losses "
        "are not comparable across objectives; compare cells with the yardstick below.", "",
        "Padding is the mean over the logged steps of the share of the computed positions "
        "(every stream the model reads) that were padding; useful MFU is MFU counted on the "
        "other tokens only, MFU x (1 - padding), also a mean over the logged steps.", "",
        "| cell | seeds | tokens seen | loss tokens (fraction) | final validation loss | "
        "padding | useful MFU | train s | train + eval s (processes) |",
        "|---|---|---|---|---|---|---|---|---|"]
  for cell in plan.cells:
    n = cell.name
    lt, _ = stats[(n, "loss_tokens")]
    frac = f"{lt:,.0f} ({lt / cell.tokens_seen:.1%})" if math.isfinite(lt) else "–"
    md.append(f"| {n} | {len(collected[n][0])}/{plan.seeds} | {cell.tokens_seen:,} | {frac} | "
              f"{_fmt(*stats[(n, 'final_eval_loss')])} | "
              f"{_pct(*stats[(n, 'padding_fraction')])} | "
              f"{_pct(*stats[(n, 'useful_mfu')])} | "
              f"{_fmt(*stats[(n, 'train_wall_seconds')], digits=0)} | "
              f"{_fmt(*stats[(n, 'run_seconds')], digits=0)} |")

  def section(title: str, prefix: str, intro: str, digits: int) -> None:
    cols = [m for m in all_metrics if m.startswith(prefix)]
    if not cols:
      md.extend(["", f"## {title}", "", "(no results yet)"])
      return
    head = [c[len(prefix):] for c in cols]
    md.extend(["", f"## {title}", "", intro, "", "| cell | " + " | ".join(head) + " |",
               "|---" * (len(cols) + 1) + "|"])
    for n in names:
      md.append(f"| {n} | " + " | ".join(_fmt(*stats[(n, c)], digits=digits) for c in cols) + " |")
    if len(names) < 2:
      return
    md.extend(["", f"Difference vs {ref_name} (paired bootstrap over documents/examples and "
               f"seeds, {BOOTSTRAP_SAMPLES} replicates, 95% interval; * = excludes 0):", "",
               "| cell | " + " | ".join(head) + " |", "|---" * (len(cols) + 1) + "|"])
    for n in names:
      if n != ref_name:
        md.append(f"| {n} | " + " | ".join(
            _delta(collected[n][1][c], ref_metrics.get(c), digits)[0]
            if c in collected[n][1] else "–" for c in cols) + " |")

  section("Yardstick: bits per byte (rows: training objective; columns: evaluation)", "bpb/",
          "Every model scored the same ways on the same held-out text (`objectax eval`); lower "
          "is better.", 4)
  section("Zero-shot rank classification: accuracy", "zeroshot/",
          "Raw and length-normalised accuracy per generated task; higher is better.", 3)

  for stage in getattr(plan, "stages", ()):
    if stage.eval_tasks:
      section(f"After {stage.name}: downstream scores (fine-tuned on {stage.task})",
              f"{stage.name}/",
              "Each pretrained run fine-tuned from its own parameters, then scored by "
              "generation with seqio's Evaluator on the tasks' validation splits (0-100, "
              "higher is better). Intervals only for metrics that are means over examples.", 2)
    else:
      section(f"After {stage.name}: zero-shot rank classification", f"{stage.name}/zeroshot/",
              "Each pretrained run continued with this stage's recipe, then scored as a "
              "pretrained run is; higher is better.", 3)

  if plan.grid.paper and getattr(plan.grid, "orderings", None):
    md.extend(["", "## Which of the paper's orderings hold here", "",
               *_orderings(plan, names, collected)])

  if plan.grid.paper:
    paper = PAPERS.get(plan.grid.paper)
    md.extend(["", "## Published numbers for the same cells (orientation only)", "",
               f"Source: {paper.source}. {paper.note}", "",
               "| cell | " + " | ".join(paper.columns) + " |",
               "|---" * (len(paper.columns) + 1) + "|"])
    for n in names:
      row = paper.rows.get(n)
      md.append(f"| {n} | " + " | ".join("–" if row is None or v is None else f"{v}"
                                          for v in (row or (None,) * len(paper.columns))) + " |")

  plots = [os.path.join(plan.out, "loss_vs_tokens.png")]
  _loss_plot(plots[0], plan, collected)
  for m in all_metrics:
    if m.startswith(("bpb/", "zeroshot/")):
      chance = None
      if m.startswith("zeroshot/"):
        task = m.split("/")[1]
        chance = next((r.zeroshot["tasks"][task].get("chance") for n in names
                       for r in collected[n][0] if r.zeroshot and task in r.zeroshot["tasks"]),
                      None)
      path = os.path.join(plan.out, _slug(m.replace("/", "_")) + ".png")
      _bar_chart(path, m, "bits per byte (lower is better)" if m.startswith("bpb/")
                 else "accuracy", names, [stats[(n, m)] for n in names], chance)
      plots.append(path)
  md.extend(["", "## Plots", ""] + [f"- `{os.path.basename(p)}`" for p in plots])
  md_path = os.path.join(plan.out, "results.md")
  with open(md_path, "w", encoding="utf-8") as f:
    f.write("\n".join(md) + "\n")
  return [md_path, csv_path, *plots]
