"""End-to-end training on the embedded corpus: outputs, resumption, kill -9, span corruption."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from objectax.launch import builder, configure, input_pipeline, train

FAST = ["TrainConfig.batch_size=4", "TrainConfig.eval_batches=2", "TrainConfig.log_every=1",
        "Experiment.sequence_length=64"]


def _train(workdir, *bindings):
  configure.parse(["run/quickstart.gin"], [*FAST, *bindings])
  return train.train(str(workdir), quiet=True)


@pytest.mark.e2e
def test_run_writes_outputs_and_resumes(tfds_data_dir, tmp_path):
  wd = tmp_path / "wd"
  s = _train(wd, "TrainConfig.steps=6", "TrainConfig.warmup_steps=5",
             "TrainConfig.checkpoint_every=3", "TrainConfig.eval_every=3")
  assert (s["start_step"], s["final_step"]) == (0, 6)
  rows = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
  assert [r["step"] for r in rows if "eval_loss" in r] == [0, 3, 6]
  assert all(np.isfinite(r["loss"]) and r["tokens_per_second"] > 0 for r in rows if "loss" in r)
  # MFU on every log line: tokens/s x FLOPs per token / peak, so mfu / tokens_per_second is
  # one constant for the run.
  ratios = [r["mfu"] / r["tokens_per_second"] for r in rows if "loss" in r]
  assert all(0 < r["mfu"] < 1 for r in rows if "loss" in r)
  np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
  # Useful MFU counts the logged step's non-padding tokens only.
  logged = [r for r in rows if "loss" in r]
  assert all(0 <= r["padding_fraction"] < 1 for r in logged)
  np.testing.assert_allclose([r["useful_mfu"] for r in logged],
                             [r["mfu"] * (1 - r["padding_fraction"]) for r in logged], rtol=1e-9)
  assert "Experiment.objective = 'full_lm'" in (wd / "config.gin").read_text()
  assert "TrainConfig.steps = 6" in (wd / "config.gin").read_text()
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(wd / "tensorboard"))
  assert sorted(os.listdir(wd / "checkpoints")) == ["3", "6"]
  assert sorted(os.listdir(wd / "data_iterators")) == ["3", "6"]
  assert json.loads((wd / "summary.json").read_text())["final_step"] == 6

  # The same command again: resumes at the saved step, trains nothing more.
  again = _train(wd, "TrainConfig.steps=6", "TrainConfig.warmup_steps=5",
                 "TrainConfig.checkpoint_every=3", "TrainConfig.eval_every=3")
  assert (again["start_step"], again["final_step"]) == (6, 6)
  assert again["final_eval_loss"] == pytest.approx(s["final_eval_loss"], rel=1e-6)
  assert again["step0_eval_loss"] == s["step0_eval_loss"]


@pytest.mark.e2e
@pytest.mark.parametrize("data_resume", [
    "iterator_state", pytest.param("skip_batches", marks=pytest.mark.slow)])
def test_resumed_run_equals_uninterrupted_run(tfds_data_dir, tmp_path, data_resume):
  """Drop the last checkpoint (a crash after step 4): the resumed run must land exactly where
  the uninterrupted one did, which needs restored params, optimizer state and data position,
  whether the data position comes from the saved iterator or from skipping batches."""
  common = ["TrainConfig.steps=8", "TrainConfig.warmup_steps=7", "TrainConfig.checkpoint_every=4",
            "TrainConfig.eval_every=8"]
  straight = _train(tmp_path / "a", *common, "TrainConfig.keep_checkpoints=1")
  # keep_checkpoints=1 pruned step 4, and this host's iterator state of step 4 with it.
  assert os.listdir(tmp_path / "a" / "checkpoints") == ["8"]
  assert os.listdir(tmp_path / "a" / "data_iterators" / "4") == []
  wd = tmp_path / "b"
  _train(wd, *common)
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(wd / "checkpoints" / "8")
  shutil.rmtree(wd / "data_iterators" / ("8" if data_resume == "iterator_state" else ""))
  resumed = _train(wd, *common)
  assert resumed["start_step"] == 4 and resumed["final_step"] == 8
  assert resumed["data_resume"] == data_resume
  logged = [json.loads(l)["step"] for l in (wd / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(l)]
  assert logged == list(range(1, 9)), logged  # steps 5-8 once, though trained twice
  np.testing.assert_allclose(resumed["final_eval_loss"], straight["final_eval_loss"], rtol=1e-6)


@pytest.mark.e2e
@pytest.mark.slow
def test_kill_9_mid_run_resumes_from_last_checkpoint(tfds_data_dir, tmp_path):
  wd = tmp_path / "wd"
  cmd = [sys.executable, "-m", "objectax.launch.main", "train", f"--workdir={wd}",
         *[f"--gin.{b}" for b in FAST], "--gin.TrainConfig.steps=60",
         "--gin.TrainConfig.checkpoint_every=5", "--gin.TrainConfig.eval_every=60"]
  env = {**os.environ, "TFDS_DATA_DIR": tfds_data_dir}
  proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  ckpt_dir = wd / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if ckpt_dir.exists() else []
    if steps and max(steps) >= 10:
      break
    time.sleep(0.2)
  assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  saved = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert 10 <= saved < 60

  out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stdout + out.stderr
  assert f"resuming from checkpoint step {saved}" in out.stdout, out.stdout
  assert json.loads((wd / "summary.json").read_text())["final_step"] == 60


from objectax.objectives import registry as objective_registry  # pylint: disable=g-import-not-at-top,g-bad-import-order

CAUSAL_DECODER_OBJECTIVES = [n for n in objective_registry.OBJECTIVES.names()
                             if "causal_decoder" in objective_registry.get(n).architectures
                             and objective_registry.get(n).corpus_kind == "text"]


# Trained here by default: targets only and a varying split; with --slow also fixed inputs,
# a non-exact length and a model-side loss. Every objective's batches are checked below
# either way, and the slow grid (tests/launch/test_grid.py) trains each for 20 steps.
TRAINED_BY_DEFAULT = {"full_lm", "prefix_lm"}
TRAINED_WITH_SLOW = {"span_corruption", "bart", "mtp"}


@pytest.mark.e2e
@pytest.mark.parametrize("objective", CAUSAL_DECODER_OBJECTIVES)
def test_objective_is_one_binding_and_loss_falls_on_targets_only(objective, tfds_data_dir,
                                                                 tmp_path, request):
  """Every objective the causal decoder supports is one binding; an objective with inputs
  runs as concat(inputs, targets) with loss weight exactly on the target part."""
  bindings = [f"Experiment.objective={objective}", "TrainConfig.steps=2",
              "TrainConfig.warmup_steps=1", "TrainConfig.eval_every=2",
              "TrainConfig.checkpoint_every=2"]
  if objective in TRAINED_BY_DEFAULT or (
      objective in TRAINED_WITH_SLOW and request.config.getoption("--slow")):
    s = _train(tmp_path / "wd", *bindings)
    assert s["experiment"] == f"causal_decoder_{objective}_tiny_pydocs"
    assert s["final_step"] == 2 and np.isfinite(s["final_eval_loss"])
  else:
    configure.parse(["run/quickstart.gin"], [*FAST, *bindings])

  # The batches the causal decoder trains on, straight from the training pipeline.
  cfg = builder.resolve()
  ti = input_pipeline.build_task_input(cfg)
  lengths = ti.task_feature_lengths
  batch = next(input_pipeline.TrainStream(ti, 4, seed=0))
  weights = batch["decoder_loss_weights"]
  if ti.lengths.exact and not ti.lengths.concat:
    # Fixed lengths: every row is one example laid out identically, nothing padded.
    n_inputs = lengths.get("inputs", 0)
    assert n_inputs + lengths["targets"] <= 64
    expected = np.zeros_like(weights)
    expected[:, n_inputs:n_inputs + lengths["targets"]] = 1
    np.testing.assert_array_equal(weights, expected)
    if n_inputs:
      causal = batch["decoder_causal_attention"]
      np.testing.assert_array_equal(causal[:, :n_inputs + 1], 1)  # inputs + 1 (seqio)
  else:
    # Varying split (prefix LMs, BART, PEGASUS, UL2): each packed example is inputs then
    # targets, loss exactly on its targets, bidirectional region = its inputs + 1.
    assert batch["decoder_target_tokens"].shape[1] == ti.lengths.budget <= 64
    segments = batch.get("decoder_segment_ids", (batch["decoder_target_tokens"] > 0).astype(int))
    for row in range(weights.shape[0]):
      for seg in set(segments[row].tolist()) - {0}:
        w = weights[row][segments[row] == seg]
        n_in = int(np.argmax(w > 0)) if w.any() else len(w)
        assert w.any() and np.all(w[:n_in] == 0) and np.all(w[n_in:] == 1), w
        if "decoder_causal_attention" in batch:
          c = batch["decoder_causal_attention"][row][segments[row] == seg]
          np.testing.assert_array_equal(c, np.arange(len(c)) < n_in + 1)
    if ti.lengths.exact:  # Wang et al.'s prefix LM: every row is one whole example
      assert np.all(batch["decoder_target_tokens"] > 0)

  # Gradients of the training loss reach the logits only at target positions.
  from objectax.models import losses  # pylint: disable=g-import-not-at-top
  model = cfg.arch.make_model(cfg.model.with_vocab_size(ti.vocabulary.vocab_size))
  params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
  logits = jax.jit(model.apply)({"params": params}, batch)

  def loss_of_logits(lg):
    l, z, w = losses.weighted_cross_entropy(lg, batch["decoder_target_tokens"], weights, 1e-4)
    return (l + z) / w
  g = np.abs(np.asarray(jax.grad(loss_of_logits)(logits))).sum(-1)
  assert np.all(g[weights == 0] == 0) and np.all(g[weights == 1] > 0)


@pytest.mark.e2e
@pytest.mark.slow
def test_divergence_stops_in_one_line_naming_its_first_step_and_keeps_checkpoints(
    tfds_data_dir, tmp_path, capsys):
  """Checked every step on the devices (no host sync), reported when the host next reads
  metrics: the same first bad step whether metrics are read every step or every 12th."""
  from objectax.launch import main  # pylint: disable=g-import-not-at-top
  diverging = [*[f"--gin.{b}" for b in FAST], "--gin.TrainConfig.steps=12",
               "--gin.TrainConfig.learning_rate=1e12", "--gin.TrainConfig.warmup_steps=0",
               "--gin.TrainConfig.clip_grad_norm=1e30"]
  first_bad = []
  for wd, every in ((tmp_path / "each", 1), (tmp_path / "rarely", 12)):
    code = main.run(["train", f"--workdir={wd}", "--quiet", *diverging,
                     f"--gin.TrainConfig.checkpoint_every={every}",
                     f"--gin.TrainConfig.log_every={every}"])
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 1
    assert len(lines) == 1 and "non-finite metrics from step" in lines[0], lines
    first_bad.append(int(lines[0].split("from step ")[1].split()[0]))
    saved = sorted(int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit())
    assert all(step < first_bad[-1] for step in saved), (saved, first_bad)
    assert all(d.isdigit() for d in os.listdir(wd / "checkpoints")), "a half-written checkpoint"
  assert first_bad[0] == first_bad[1] < 12, first_bad
  saved = sorted(int(d) for d in os.listdir(tmp_path / "each" / "checkpoints") if d.isdigit())
  assert saved and max(saved) == first_bad[0] - 1


@pytest.mark.e2e
def test_resume_refuses_a_different_data_stream(tfds_data_dir, tmp_path, capsys):
  from objectax.launch import main  # pylint: disable=g-import-not-at-top
  wd = tmp_path / "wd"
  _train(wd, "TrainConfig.steps=2", "TrainConfig.warmup_steps=1",
         "TrainConfig.checkpoint_every=2", "TrainConfig.eval_every=2")
  before = sorted(os.listdir(wd / "checkpoints"))
  # Another batch size, or another packer (other rows from the same examples): another
  # stream, refused in one line with every file left as it was.
  for binding, says in [("TrainConfig.batch_size=8", "batch_size=4 but this run has 8"),
                        ("Experiment.packer='in_order'",
                         "packing='first_fit' but this run has 'in_order'")]:
    code = main.run(["train", f"--workdir={wd}", "--quiet", *[f"--gin.{b}" for b in FAST],
                     "--gin.TrainConfig.steps=4", "--gin.TrainConfig.warmup_steps=3",
                     f"--gin.{binding}"])
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert f"was written with data {says}" in lines[0], lines[0]
    assert sorted(os.listdir(wd / "checkpoints")) == before


@pytest.mark.e2e
@pytest.mark.slow
def test_unpacked_batches_train(tfds_data_dir, tmp_path, capsys):
  """Unpacked T5 prefix-LM rows (each document chunk on its own row, padded: short
  documents leave much of a 626-token row empty) train, and their padding shows in the
  log: padding_fraction, useful_mfu and the progress line."""
  configure.parse(["run/quickstart.gin"], [*FAST, "Experiment.pack=False",
                                           "Experiment.objective=t5_prefix_lm",
                                           "Experiment.sequence_length=626",
                                           "TrainConfig.steps=2", "TrainConfig.warmup_steps=1",
                                           "TrainConfig.eval_every=2",
                                           "TrainConfig.checkpoint_every=2"])
  s = train.train(str(tmp_path / "wd"), quiet=False)
  assert s["final_step"] == 2 and np.isfinite(s["final_eval_loss"])
  logged = [r for r in map(json.loads, (tmp_path / "wd" / "metrics.jsonl").read_text()
                           .splitlines()) if "loss" in r]
  assert [r["step"] for r in logged] == [1, 2]
  assert all(0 < r["padding_fraction"] < 1 for r in logged), logged
  np.testing.assert_allclose([r["useful_mfu"] for r in logged],
                             [r["mfu"] * (1 - r["padding_fraction"]) for r in logged], rtol=1e-9)
  bar = [l for l in capsys.readouterr().err.splitlines() if "step 2/2" in l][-1]
  last = logged[-1]
  assert (f"MFU {last['mfu']:.1%} (useful {last['useful_mfu']:.1%}, "
          f"padding {last['padding_fraction']:.1%})") in bar, bar


def test_objectives_the_causal_decoder_cannot_run_are_rejected_naming_their_architectures(
    capsys):
  """BERT MLM needs the encoder-only model: one line, before anything is built."""
  from objectax.launch import main  # pylint: disable=g-import-not-at-top
  rejected = [n for n in objective_registry.OBJECTIVES.names()
              if "causal_decoder" not in objective_registry.get(n).architectures]
  assert "bert_mlm" in rejected
  for name in rejected:
    code = main.run(["train", "--gin.Experiment.objective=" + name, "--quiet"])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    archs = ", ".join(objective_registry.get(name).architectures)
    assert code == 2 and len(err) == 1, err
    assert (f"objective {name!r} does not support architecture 'causal_decoder'; "
            f"it supports: {archs}") in err[0]
