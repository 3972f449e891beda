"""`objectax ablate`: grid files, the run loop's skip logic, the report and its statistics.

The run loop is exercised with a stand-in program (a few lines of Python that write what
`objectax train` and `objectax eval` write), so the default tests train nothing; one real
two-cell grid is slow-marked.
"""
import csv
import json
import math
import os
import sys
import textwrap

import numpy as np
import pytest

from objectax.models.registry import ConfigError
from objectax.launch import main
from objectax.launch.grid import ablate
from objectax.launch.grid import report as ablate_report
from objectax.launch.eval import yardstick
from objectax.models import registry as arch_registry

WANG = "gin/experiments/wang2022/grid.gin"
WANG_CELLS = ["causal_decoder_full_lm", "causal_decoder_span_corruption",
              "prefix_decoder_prefix_lm", "prefix_decoder_span_corruption",
              "encoder_decoder_prefix_lm", "encoder_decoder_span_corruption"]


def _grid(tmp_path, body: str, name: str = "grid.gin") -> str:
  path = tmp_path / name
  path.write_text(textwrap.dedent(body))
  return str(path)


# --------------------------------------------------------------------------- grid files


def test_wang_grid_resolves_six_cells_matched_on_tokens(tmp_path):
  plan = ablate.make_plan(WANG, "tiny", 2, str(tmp_path / "out"))
  assert [c.name for c in plan.cells] == WANG_CELLS
  assert all(c.gin_file.endswith(f"{c.name}_tiny_pydocs.gin") for c in plan.cells)
  assert len({c.tokens_seen for c in plan.cells}) == 1
  cell = plan.cells[0]
  assert cell.sequence_length == 626  # Wang et al.'s per-example budget
  assert cell.tokens_seen == cell.steps * cell.batch_size * 626
  # The encoder-decoder prefix LM's rows hold two pieces each: half the rows, same tokens.
  ed_plm = plan.cells[WANG_CELLS.index("encoder_decoder_prefix_lm")]
  assert (ed_plm.per_row, ed_plm.batch_size) == (2, cell.batch_size // 2)
  assert f"{ed_plm.steps} steps x {ed_plm.batch_size} rows x 2 pieces x 626 = " in (
      ablate.describe(plan))
  # `tiny/` bindings apply at --size=tiny, and the grid's steps override the cell file's 300.
  assert any(b.startswith("TrainConfig.steps=") for b in plan.bindings)
  assert cell.steps != 300
  assert len(plan.runs()) == 12 and plan.workdir("x", 1) == str(tmp_path / "out" / "x" / "seed_1")
  train, evaluate = ablate.commands(plan, cell, 1)
  assert train[:2] == ["objectax", "train"] and "--gin.TrainConfig.seed=1" in train
  assert f"--workdir={plan.workdir(cell.name, 1)}" in train and evaluate[1] == "eval"
  lines = ablate.shell_commands(plan)
  assert len(lines) == 12 and all(" && objectax eval --workdir=" in l for l in lines)


def test_t5_grid_covers_tables_4_to_7_with_paper_numbers(tmp_path):
  plan = ablate.make_plan("gin/experiments/t5_objectives/grid.gin", "tiny", 1, str(tmp_path))
  names = [c.name for c in plan.cells]
  assert len(names) == 13 and set(names) == set(ablate_report.PAPERS.get("t5").rows)
  assert {c.arch for c in plan.cells} == {"encoder_decoder"}
  for table in (4, 5, 6, 7):
    sub = ablate.make_plan(f"gin/experiments/t5_objectives/table{table}.gin", "tiny", 1,
                           str(tmp_path))
    assert {c.name for c in sub.cells} <= set(names)
  # Table 6's 10% cell: the baseline's experiment file plus its own binding, after the grid's.
  r10 = next(c for c in plan.cells if c.name == "encoder_decoder_iid_replace_spans_r10")
  assert r10.gin_file.endswith("encoder_decoder_iid_replace_spans_tiny_pydocs.gin")
  train, _ = ablate.commands(plan, r10, 0)
  assert train.index("--gin.IidReplaceSpansConfig.noise_density=0.1") > train.index(
      "--gin.TrainConfig.steps=150")
  assert ablate.commands(plan, plan.cells[0], 0)[0][-1].endswith(
      "encoder_decoder_iid_replace_spans/seed_0")


@pytest.mark.parametrize("size,body,message", [
    ("tiny", "Grid.cells = ['causal_decoder_full_lm', 'no_such_cell']",
     "unknown cell 'no_such_cell' in experiments/wang2022; valid cells: causal_decoder_full_lm,"),
    ("huge", "Grid.cells = ['causal_decoder_full_lm']",
     "unknown size 'huge' for this grid"),
    ("tiny", "Grid.cells = ['causal_decoder_full_lm']\nGrid.colour = 'red'",
     "unknown grid binding Grid.colour; valid: cells,"),
    ("tiny", "Grid.cells = ['causal_decoder_full_lm']\nbig/TrainConfig.steps = 3",
     "scope 'big' is not a size"),
    ("tiny", "Grid.cells = ['causal_decoder_full_lm']\nTrainConfig.stepz = 3",
     "unknown gin binding TrainConfig.stepz"),
    ("tiny", "Grid.cells = ['causal_decoder_full_lm']\nGrid.paper = 'bert2018'",
     "unknown paper 'bert2018'"),
    ("tiny", "Grid.cells = ['v']\nGrid.variants = {'v': ['causal_decoder_full_lm', "
             "'FullLMConfig.nope=1']}", "cell v: unknown gin binding FullLMConfig.nope"),
    ("tiny", "Grid.cells = ['v']\nGrid.variants = {'v': ['no_cell', 'TrainConfig.steps=3']}",
     "Grid.variants['v'] must be [base cell,"),
    ("tiny", "Grid.cells = ['causal_decoder_full_lm']\nGrid.reference = 'x'",
     "Grid.reference 'x' is not one of Grid.cells"),
    ("tiny", "include 'arch/causal_decoder.gin'\nGrid.cells = ['causal_decoder_full_lm']",
     "grid files hold bindings only"),
    ("tiny", "Grid.cells = ['causal_decoder_full_lm', 'encoder_decoder_span_corruption']\n"
             "tiny/TrainConfig.steps = 7\n"
             "tiny/TrainConfig.warmup_steps = 6\n"
             "tiny/Experiment.sequence_length = 128",
     None),  # same tokens: fine (the next case differs)
])
def test_bad_grids_fail_in_one_line_before_anything_runs(tmp_path, size, body, message):
  path = _grid(tmp_path, "Grid.experiment_dir = 'experiments/wang2022'\n" + body)
  if message is None:
    plan = ablate.make_plan(path, size, 1, str(tmp_path / "out"))
    assert {c.steps for c in plan.cells} == {7}
    return
  with pytest.raises(ConfigError) as e:
    ablate.make_plan(path, size, 1, str(tmp_path / "out"))
  assert message in str(e.value) and "\n" not in str(e.value).strip()
  assert not (tmp_path / "out").exists()
  if message.startswith("unknown size"):
    assert "valid sizes: tiny, wang_xxl" in str(e.value)


def test_cells_that_see_different_tokens_are_refused(tmp_path):
  path = _grid(tmp_path, """\
      Grid.cells = ['causal_decoder_full_lm']
      Grid.experiment_dir = 'experiments/wang2022'
      """)
  ablate.make_plan(path, "tiny", 1, str(tmp_path))  # one cell: trivially matched
  folder = tmp_path / "cells"
  folder.mkdir()
  for name, steps in (("a_lm", 10), ("b_lm", 20)):
    (folder / f"{name}_tiny_pydocs.gin").write_text(
        f"include 'run/quickstart.gin'\nTrainConfig.steps = {steps}\n"
        f"TrainConfig.warmup_steps = {steps - 1}\n")
  path = _grid(tmp_path, f"Grid.cells = ['a_lm', 'b_lm']\nGrid.experiment_dir = '{folder}'\n")
  with pytest.raises(ConfigError, match="different numbers of tokens.*a_lm 20,480, b_lm 40,960"):
    ablate.make_plan(path, "tiny", 1, str(tmp_path))
  with open(path, "a") as f:
    f.write("Grid.match_tokens = False\n")
  assert len(ablate.make_plan(path, "tiny", 1, str(tmp_path)).cells) == 2


def test_cli_prints_one_line_error_and_commands(tmp_path, capsys):
  assert main.run(["ablate", WANG, "--size=huge", f"--out={tmp_path}"]) == 2
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert len(err) == 1 and err[0].startswith("objectax: error: unknown size 'huge'")
  assert main.run(["ablate", WANG, "--size=tiny", "--seeds=2", "--print_commands",
                   f"--out={tmp_path}"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 12 and out[0].startswith("objectax train --gin_file=")
  assert not any(tmp_path.iterdir())  # printing commands runs nothing


# --------------------------------------------------------------------------- the run loop

# Stands in for `objectax train` / `objectax eval`: writes what they write, logs its call.
FAKE = textwrap.dedent("""\
    import json, os, sys
    cmd, args = sys.argv[1], dict(a[2:].split("=", 1) for a in sys.argv[2:] if "=" in a)
    wd = args["workdir"]
    with open(os.path.join(os.path.dirname(wd), "..", "calls.txt"), "a") as f:
      f.write(cmd + " " + wd + "\\n")
    if cmd == "train":
      steps = int(args["gin.TrainConfig.steps"])
      with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
        for s in range(0, steps + 1, 5):
          print(f"[####....] step {s}/{steps}  loss 1.0", file=sys.stderr, flush=True)
          f.write(json.dumps({"step": s, "eval_loss": 5.0 - s / steps}) + "\\n")
          f.write(json.dumps({"step": s, "loss": 1.0, "target_tokens": 100.0}) + "\\n")
      json.dump({"final_step": steps, "final_eval_loss": 4.0, "wall_seconds": 1.0},
                open(os.path.join(wd, "summary.json"), "w"))
    else:
      os.makedirs(os.path.join(wd, "eval"), exist_ok=True)
      ev = {"bits_per_byte": 2.0, "example_nats": [1.0, 2.0], "example_bytes": [3, 4]}
      json.dump({"evaluations": {"left_to_right": ev}},
                open(os.path.join(wd, "eval", "yardstick.json"), "w"))
    """)


@pytest.mark.e2e
def test_run_grid_trains_evaluates_then_skips_finished_runs(tmp_path):
  path = _grid(tmp_path, """\
      Grid.cells = ['causal_decoder_full_lm', 'encoder_decoder_span_corruption']
      Grid.experiment_dir = 'experiments/wang2022'
      TrainConfig.steps = 10
      TrainConfig.warmup_steps = 9
      """)
  fake = tmp_path / "fake.py"
  fake.write_text(FAKE)
  plan = ablate.make_plan(path, "tiny", 2, str(tmp_path / "out"))
  said = []
  result = ablate.run_grid(plan, say=said.append, program=[sys.executable, str(fake)])
  assert result == {"ran": 4, "skipped": 0, "failed": []}
  calls = (tmp_path / "out" / "calls.txt").read_text().split()
  assert calls[::2] == ["train", "eval"] * 4
  # Progress: which run of how many, its step (bar stripped), and a grid ETA once one finished.
  assert any(s.startswith("[run 1/4 causal_decoder_full_lm seed 0] step 5/10") for s in said)
  assert any("[run 4/4" in s and "grid ETA 0:" in s for s in said)
  assert all(ablate.run_state(plan, c, s) == "done" for c, s in plan.runs())

  # A run that trained but was not evaluated is only evaluated; one with fewer steps retrains.
  os.remove(os.path.join(plan.workdir("causal_decoder_full_lm", 1), "eval", "yardstick.json"))
  summary = os.path.join(plan.workdir("encoder_decoder_span_corruption", 0), "summary.json")
  json.dump({"final_step": 5}, open(summary, "w"))
  states = [ablate.run_state(plan, c, s) for c, s in plan.runs()]
  assert states == ["done", "trained", "todo", "done"]
  (tmp_path / "out" / "calls.txt").unlink()
  result = ablate.run_grid(plan, say=said.append, program=[sys.executable, str(fake)])
  assert result == {"ran": 2, "skipped": 2, "failed": []}
  calls = (tmp_path / "out" / "calls.txt").read_text().split()
  assert calls[::2] == ["eval", "train", "eval"]
  (tmp_path / "out" / "calls.txt").unlink()
  assert ablate.run_grid(plan, say=said.append, program=[sys.executable, str(fake)])["ran"] == 0
  assert not (tmp_path / "out" / "calls.txt").exists()
  # A second grid into the same folder while one runs is refused.
  held = ablate._lock(plan.out)  # pylint: disable=protected-access
  with pytest.raises(ConfigError, match="another `objectax ablate` is running"):
    ablate.run_grid(plan, say=said.append, program=[sys.executable, str(fake)])
  held.close()


@pytest.mark.e2e
def test_a_failing_run_is_reported_and_the_grid_goes_on(tmp_path):
  path = _grid(tmp_path, """\
      Grid.cells = ['causal_decoder_full_lm', 'encoder_decoder_span_corruption']
      Grid.experiment_dir = 'experiments/wang2022'
      """)
  fail = tmp_path / "fail.py"
  fail.write_text("import sys; print('objectax: error: boom', file=sys.stderr); sys.exit(2)\n")
  plan = ablate.make_plan(path, "tiny", 1, str(tmp_path / "out"))
  said = []
  result = ablate.run_grid(plan, say=said.append, program=[sys.executable, str(fail)])
  assert result["ran"] == 0 and len(result["failed"]) == 2
  assert any("FAILED (exit 2)" in s for s in said) and any("boom" in s for s in said)
  assert "boom" in open(os.path.join(result["failed"][0], "train.log")).read()


# --------------------------------------------------------------------------- statistics


def test_paired_bootstrap_on_known_data():
  rng = np.random.default_rng(1)
  b_SE = rng.normal(5.0, 3.0, size=(3, 200))
  ones = np.ones_like(b_SE)
  # A constant shift: every replicate sees exactly it.
  d, lo, hi = ablate_report.paired_bootstrap(b_SE + 0.25, ones, b_SE, ones)
  assert d == pytest.approx(0.25) and lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
  # Pairing: a small effect under large shared noise is resolved; unpaired it would not be.
  a_SE = b_SE + 0.1 + rng.normal(0, 0.1, size=b_SE.shape)
  d, lo, hi = ablate_report.paired_bootstrap(a_SE, ones, b_SE, ones)
  assert 0 < lo < d < hi and hi - lo < 0.1
  # One seed, independent examples: the percentile interval ~ mean +- 1.96 sd / sqrt(n).
  x_SE = rng.normal(0.3, 1.0, size=(1, 2000))
  d, lo, hi = ablate_report.paired_bootstrap(x_SE, np.ones_like(x_SE), np.zeros_like(x_SE),
                                             np.ones_like(x_SE))
  half = 1.96 * x_SE.std() / math.sqrt(x_SE.size)
  assert d == pytest.approx(x_SE.mean())
  assert lo == pytest.approx(d - half, abs=0.2 * half)
  assert hi == pytest.approx(d + half, abs=0.2 * half)
  # Ratio statistic (bits per byte): sum(num) / sum(den), not a mean of ratios.
  num, den = np.array([[1.0, 9.0]]), np.array([[1.0, 3.0]])
  d, _, _ = ablate_report.paired_bootstrap(num, den, np.zeros_like(num), den)
  assert d == pytest.approx(10.0 / 4.0)


def test_yardstick_scores_keep_per_document_figures():
  layout = arch_registry.get("causal_decoder").score_layout(
      [yardstick.Pair(np.array([5]), np.array([6, 7]), np.array([True, True]), 4),
       yardstick.Pair(np.array([8, 9]), np.array([3]), np.array([True]), 2),
       yardstick.Pair(np.array([4]), np.array([2, 2, 2]), np.array([True, False, True]), 3)], 8)
  scorer = lambda params, f: f["decoder_target_tokens"].astype(np.float32)  # "nats" = token id
  nats_N, target_N = yardstick.score_rows(scorer, None, layout, 2)
  assert nats_N.tolist() == [13.0, 3.0, 4.0] and target_N.tolist() == [13.0, 3.0, 6.0]
  assert yardstick.score_pairs(scorer, None, layout, 2) == (20.0, 22.0)
  a = yardstick.Score("a", "", 4.0, 3, 7, example_nats=(1.0, 3.0), example_bytes=(3, 4))
  b = yardstick.Score("b", "", 6.0, 3, 9, example_nats=(2.0, 4.0), example_bytes=(4, 5))
  pooled = yardstick.pooled("ab", "", [a, b])
  assert pooled.example_nats == (3.0, 7.0) and pooled.example_bytes == (7, 9)
  d = pooled.as_dict()
  assert d["example_nats"] == [3.0, 7.0] and sum(d["example_bytes"]) == d["bytes"]


# --------------------------------------------------------------------------- the report


def _fake_run(wd, *, bpb_shift: float, seed: int, eval_loss: float, correct: list[int],
              padding: tuple[float, float] = ()):
  """`padding`: the padding_fraction of logged steps 5 and 10 (useful_mfu 0.5 x (1 - it));
  none logged when empty, as by a run from before they were."""
  os.makedirs(os.path.join(wd, "eval"), exist_ok=True)
  rng = np.random.default_rng(seed)
  nats = rng.uniform(50, 150, size=30)
  doc_bytes = rng.integers(100, 300, size=30)
  nats = nats + bpb_shift * math.log(2) * doc_bytes  # shifts bits/byte by exactly bpb_shift
  with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
    for step in (0, 5, 10):
      f.write(json.dumps({"step": step, "eval_loss": eval_loss + 2 - step / 5}) + "\n")
      if step:
        row = {"step": step, "loss": 3.0, "target_tokens": 114.0 * 8}
        if padding:
          p = padding[step // 5 - 1]
          row.update(mfu=0.5, padding_fraction=p, useful_mfu=0.5 * (1 - p))
        f.write(json.dumps(row) + "\n")
  json.dump({"final_step": 10, "final_eval_loss": eval_loss, "wall_seconds": 12.0},
            open(os.path.join(wd, "summary.json"), "w"))
  evals = {}
  for name in ("continuation", "left_to_right"):
    evals[name] = {"bits_per_byte": nats.sum() / math.log(2) / doc_bytes.sum(),
                   "example_nats": nats.tolist(), "example_bytes": doc_bytes.tolist()}
  evals["skipped_row"] = {"bits_per_byte": None, "skipped": "why", "example_nats": [],
                          "example_bytes": []}
  json.dump({"evaluations": evals}, open(os.path.join(wd, "eval", "yardstick.json"), "w"))
  json.dump({"tasks": {"cloze": {"accuracy": float(np.mean(correct)), "accuracy_norm": 0.5,
                                 "chance": 0.25, "examples": len(correct), "correct": correct,
                                 "correct_norm": [1, 0] * (len(correct) // 2)}}},
            open(os.path.join(wd, "eval", "zeroshot.json"), "w"))


def test_report_from_fabricated_workdirs(tmp_path):
  path = _grid(tmp_path, """\
      Grid.cells = ['causal_decoder_full_lm', 'encoder_decoder_span_corruption',
                    'prefix_decoder_prefix_lm']
      Grid.experiment_dir = 'experiments/wang2022'
      Grid.paper = 'wang2022'
      TrainConfig.steps = 10
      TrainConfig.warmup_steps = 9
      """)
  plan = ablate.make_plan(path, "tiny", 2, str(tmp_path / "out"))
  for seed in range(2):
    _fake_run(plan.workdir("causal_decoder_full_lm", seed), bpb_shift=0.0, seed=seed,
              eval_loss=4.0 + seed, correct=[1, 1, 0, 1] * 10)
    _fake_run(plan.workdir("encoder_decoder_span_corruption", seed), bpb_shift=0.5, seed=seed,
              eval_loss=3.0, correct=[1, 1, 0, 1] * 10,
              padding=(0.1 + seed / 10, 0.3 + seed / 10))
  # The third cell has not run: reported as missing, not an error.
  written = ablate_report.write_report(plan)
  names = {os.path.basename(p) for p in written}
  assert {"results.md", "results.csv", "loss_vs_tokens.png", "bpb_continuation.png",
          "bpb_left_to_right.png", "zeroshot_cloze_accuracy.png"} <= names
  for p in written:
    assert os.path.getsize(p) > 0
  with open(os.path.join(plan.out, "loss_vs_tokens.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"

  rows = list(csv.DictReader(open(os.path.join(plan.out, "results.csv"))))
  get = lambda cell, metric: next(r for r in rows if r["cell"] == cell and r["metric"] == metric)
  cd, ed = "causal_decoder_full_lm", "encoder_decoder_span_corruption"
  assert float(get(cd, "final_eval_loss")["mean"]) == pytest.approx(4.5)
  assert float(get(cd, "final_eval_loss")["std"]) == pytest.approx(math.sqrt(0.5))
  assert float(get(cd, "tokens_seen")["mean"]) == 10 * 8 * 626
  assert float(get(ed, "loss_tokens")["mean"]) == 114 * 8 * 10  # mean target_tokens x steps
  # Padding and useful MFU: per seed the mean over its logged steps, then mean ± std over
  # seeds (0.2 and 0.3); a run that logged neither has no value.
  assert float(get(ed, "padding_fraction")["mean"]) == pytest.approx(0.25)
  assert float(get(ed, "padding_fraction")["std"]) == pytest.approx(math.sqrt(0.005))
  assert float(get(ed, "useful_mfu")["mean"]) == pytest.approx(0.5 * 0.75)
  assert get(ed, "useful_mfu")["values"] == f"{0.5 * 0.8!r};{0.5 * 0.7!r}"
  assert get(cd, "padding_fraction")["values"] == ";"
  # The same documents, shifted by 0.5 bits/byte: the paired difference is exactly that.
  row = get(ed, "bpb/continuation")
  assert float(row["delta_vs_reference"]) == pytest.approx(0.5)
  assert float(row["ci95_low"]) == pytest.approx(0.5)
  assert float(row["ci95_high"]) == pytest.approx(0.5)
  assert float(get(ed, "zeroshot/cloze/accuracy")["mean"]) == pytest.approx(0.75)
  assert float(get(ed, "zeroshot/cloze/accuracy")["delta_vs_reference"]) == 0.0
  assert get(cd, "bpb/continuation")["delta_vs_reference"] == ""  # the reference itself
  assert not any(r["cell"] == "prefix_decoder_prefix_lm" and r["metric"].startswith("bpb")
                 for r in rows)

  md = open(os.path.join(plan.out, "results.md")).read()
  assert "not comparable" in md and "| prefix_decoder_prefix_lm | 0/2 |" in md
  assert "| encoder_decoder_span_corruption | +0.5000 [+0.5000, +0.5000]*" in md
  training = md.split("## Training")[1].split("\n## ")[0]
  assert "| padding | useful MFU |" in training
  ed_row = next(l for l in training.splitlines() if l.startswith(f"| {ed} |"))
  assert "| 25.0% ± 7.1% | 37.5% ± 3.5% |" in ed_row, ed_row
  cd_row = next(l for l in training.splitlines() if l.startswith(f"| {cd} |"))
  assert "| 4.5000 ± 0.7071 | – | – | 12 ± 0 |" in cd_row, cd_row
  # The paper's numbers beside ours, with their source: Wang et al. Table 6, ED:MLM 34.6.
  assert "Wang et al. 2022" in md and "| encoder_decoder_span_corruption | 34.6 |" in md


# --------------------------------------------------------------------------- end to end


@pytest.mark.e2e
@pytest.mark.slow
def test_mini_grid_end_to_end_then_rerun_skips(tmp_path, tfds_data_dir, capsys):
  path = _grid(tmp_path, """\
      Grid.cells = ['causal_decoder_full_lm', 'encoder_decoder_span_corruption']
      Grid.experiment_dir = 'experiments/wang2022'
      Grid.paper = 'wang2022'
      Grid.eval_documents = 8
      TrainConfig.steps = 10
      TrainConfig.batch_size = 4
      TrainConfig.eval_every = 5
      TrainConfig.eval_batches = 1
      TrainConfig.checkpoint_every = 10
      TrainConfig.log_every = 5
      TrainConfig.warmup_steps = 2
      Experiment.sequence_length = 64
      """)
  out = str(tmp_path / "out")
  assert main.run(["ablate", path, "--size=tiny", "--seeds=1", f"--out={out}"]) == 0
  text = capsys.readouterr().out
  assert "[run 2/2 encoder_decoder_span_corruption seed 0]" in text and "2 run(s)" in text
  rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
  bpb = [r for r in rows if r["metric"] == "bpb/left_to_right"]
  assert len(bpb) == 2 and all(0 < float(r["mean"]) < 20 for r in bpb)
  assert os.path.isfile(os.path.join(out, "loss_vs_tokens.png"))
  assert main.run(["ablate", path, "--size=tiny", "--seeds=1", f"--out={out}"]) == 0
  assert "0 run(s) trained/evaluated, 2 skipped" in capsys.readouterr().out


# Stands in for train/finetune/eval, stages included: a fine-tuned iid_replace_spans run
# answers every example right, any other cell's every example wrong.
FAKE_STAGES = textwrap.dedent("""\
    import json, os, sys
    cmd = sys.argv[1]
    args = dict(a[2:].split("=", 1) for a in sys.argv[2:] if "=" in a and a.startswith("--"))
    wd = args["workdir"]
    with open(os.environ["FAKE_CALLS"], "a") as f:
      f.write(cmd + " " + wd + (" tasks" if "--task" in sys.argv[2:] else "") + "\\n")
    os.makedirs(os.path.join(wd, "eval"), exist_ok=True)
    if cmd in ("train", "finetune"):
      if cmd == "finetune":
        assert args["init_from"] == os.path.dirname(wd), (args, wd)
      with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 4, "eval_loss": 3.0, "loss": 1.0, "target_tokens": 9.0}) + "\\n")
      json.dump({"final_step": 4, "final_eval_loss": 3.0, "wall_seconds": 1.0},
                open(os.path.join(wd, "summary.json"), "w"))
    elif "--task" in sys.argv[2:]:
      right = float("iid_replace_spans" in wd)
      per = [right] * 6
      json.dump({"step": 4, "tasks": {"echo_words_test": {
          "metrics": {"exact_match": 100 * right}, "examples": 6,
          "per_example": {"exact_match": [100 * x for x in per]}}}},
          open(os.path.join(wd, "eval", "tasks_4.json"), "w"))
    else:
      ev = {"bits_per_byte": 2.0, "example_nats": [1.0, 2.0], "example_bytes": [3, 4]}
      json.dump({"evaluations": {"left_to_right": ev}},
                open(os.path.join(wd, "eval", "yardstick.json"), "w"))
    """)


@pytest.mark.e2e
def test_stages_run_after_pretraining_and_the_report_judges_orderings(tmp_path, monkeypatch):
  """Grid.stages: each pretrained run is fine-tuned from its own workdir (inside it) and
  scored on the task; finished stages are skipped on a rerun; results.md has the
  downstream table with intervals and says which of the paper's orderings hold."""
  import seqio  # pylint: disable=g-import-not-at-top
  from objectax.data import text_metrics  # pylint: disable=g-import-not-at-top
  name = "echo_words_test"
  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(lambda split, shuffle_files=False, seed=None: None,
                                              splits=("train", "validation")),
        preprocessors=[], output_features={}, metric_fns=[text_metrics.exact_match])
  path = _grid(tmp_path, """\
      Grid.cells = ['encoder_decoder_iid_replace_spans', 'encoder_decoder_t5_prefix_lm']
      Grid.experiment_dir = 'experiments/t5_objectives'
      Grid.paper = 't5'
      Grid.stages = [{'name': 'finetune', 'task': 'echo_words_test',
                      'bindings': ['TrainConfig.steps=4']}]
      Grid.orderings = {'finetune/echo_words_test/exact_match': 'GLUE'}
      TrainConfig.steps = 4
      TrainConfig.warmup_steps = 1
      """)
  fake = tmp_path / "fake.py"
  fake.write_text(FAKE_STAGES)
  calls = tmp_path / "calls.txt"
  monkeypatch.setenv("FAKE_CALLS", str(calls))
  plan = ablate.make_plan(path, "tiny", 2, str(tmp_path / "out"))
  assert [s.name for s in plan.stages] == ["finetune"] and plan.stages[0].eval_tasks == (name,)
  stage_wd = plan.workdir("encoder_decoder_t5_prefix_lm", 1, plan.stages[0])
  assert stage_wd == str(tmp_path / "out" / "encoder_decoder_t5_prefix_lm" / "seed_1" / "finetune")
  line = ablate.shell_commands(plan)[0]
  assert " finetune " in line and f"--task={name}" in line and "--task echo_words_test" in line
  result = ablate.run_grid(plan, say=lambda m: None, program=[sys.executable, str(fake)])
  assert result == {"ran": 4, "skipped": 0, "failed": []}
  kinds = [line.split()[0] + (" tasks" if line.endswith("tasks") else "")
           for line in calls.read_text().splitlines()]
  assert kinds == ["train", "eval", "finetune", "eval tasks"] * 4
  assert all(ablate.stage_state(plan, c, s, plan.stages[0]) == "done" for c, s in plan.runs())
  calls.unlink()
  assert ablate.run_grid(plan, say=lambda m: None,
                         program=[sys.executable, str(fake)])["ran"] == 0
  assert not calls.exists()
  from objectax.launch.grid import report  # pylint: disable=g-import-not-at-top
  report.write_report(plan)
  md = (tmp_path / "out" / "results.md").read_text()
  assert "## After finetune: downstream scores" in md
  assert "| encoder_decoder_iid_replace_spans | 100.00 ± 0.00 |" in md
  assert ("| finetune/echo_words_test/exact_match | GLUE | encoder_decoder_iid_replace_spans > "
          "encoder_decoder_t5_prefix_lm | 83.28 vs 80.69 | +100.00 [+100.00, +100.00] | holds |"
          ) in md
  assert "In all: 1 hold, 0 are reversed, 0 are not resolved" in md
