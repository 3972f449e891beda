"""Downstream evaluation through seqio's Evaluator: metrics follow the predictions (an
oracle scores 100, wrong answers 0), training's figure equals `objectax eval --task`'s,
`objectax finetune` carries the source run's model, and bad input is one line."""
import json
import os

import pytest
import seqio
import tensorflow as tf

from objectax.data import text_metrics
from objectax.data import vocab as vocab_lib
from objectax.launch import main
from objectax.launch.eval import downstream
from objectax.launch.tools import infer

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima"]
TASK = "echo_words_test"


def _pairs(split, shuffle_files=False, seed=None):
  del shuffle_files, seed
  words = WORDS if split == "validation" else WORDS * 4
  return tf.data.Dataset.from_tensor_slices(
      {"inputs": [f"repeat: {w}" for w in words], "targets": words})


def _register(name=TASK, vocabulary=None, metric_fns=(text_metrics.exact_match,)):
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  vocabulary = vocabulary or vocab_lib.default_vocabulary()
  seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(_pairs, splits=("train", "validation")),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={k: seqio.Feature(vocabulary, add_eos=True) for k in ("inputs", "targets")},
      postprocess_fn=lambda s, example=None, is_target=False: s.strip(),
      metric_fns=list(metric_fns))


@pytest.fixture
def echo_task(tfds_data_dir):
  _register()
  yield TASK
  seqio.TaskRegistry.remove(TASK)


@pytest.mark.e2e
def test_the_metrics_follow_the_predictions(trained_quickstart, echo_task, monkeypatch, capsys):
  """seqio's Evaluator scores what predict_fn returns: the targets themselves score 100,
  every example given another's answer scores 0; the model's own decode is in between or
  at an end, and is written to DIR/eval/tasks_<step>.json."""
  wd = str(trained_quickstart)
  real = infer.predict

  def answers(shift):
    def predict(decoder, raw, **kwargs):
      examples, outputs, counts = real(decoder, raw, **kwargs)
      targets = [list(ex["targets"]) for ex in raw]
      return examples, [targets[(i + shift) % len(targets)] for i in range(len(raw))], counts
    return predict

  scores = {}
  for name, shift in (("oracle", 0), ("wrong", 1)):
    monkeypatch.setattr(infer, "predict", answers(shift))
    scores[name] = downstream.run(wd, None, [echo_task])[echo_task]["metrics"]["exact_match"]
  monkeypatch.setattr(infer, "predict", real)
  assert scores == {"oracle": 100.0, "wrong": 0.0}
  assert main.run(["eval", f"--workdir={wd}", "--task", echo_task]) == 0
  out = capsys.readouterr().out
  assert echo_task in out and "exact_match" in out
  saved = json.load(open(os.path.join(wd, "eval", "tasks_12.json")))
  model_em = saved["tasks"][echo_task]["metrics"]["exact_match"]
  assert 0 <= model_em <= 100 and saved["tasks"][echo_task]["examples"] == len(WORDS)


@pytest.mark.e2e
def test_finetune_scores_during_training_as_eval_does(trained_quickstart, echo_task, tmp_path,
                                                      capsys):
  """`objectax finetune` on the quickstart: the source's model settings are carried, the task
  is scored every eval_every steps into metrics.jsonl, and `objectax eval --task` on the
  final checkpoint reproduces training's figure."""
  wd = str(tmp_path / "ft")
  assert main.run(["finetune", f"--init_from={trained_quickstart}", f"--task={echo_task}",
                   "--gin.TrainConfig.steps=6", "--gin.TrainConfig.eval_every=6",
                   "--gin.TrainConfig.checkpoint_every=6", "--gin.TrainConfig.batch_size=8",
                   "--gin.TrainConfig.eval_batches=1", "--gin.TrainConfig.learning_rate=3e-3",
                   f"--workdir={wd}", "--quiet"]) == 0
  config = open(os.path.join(wd, "config.gin")).read()
  assert "Experiment.sequence_length = 64" in config  # the source run's, not the default
  assert "ModelConfig.dropout_rate = 0.1" in config and "TrainConfig.init_from" in config
  rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
  key = f"task/{echo_task}/exact_match"
  in_training = [r[key] for r in rows if key in r]
  assert len(in_training) == 1
  capsys.readouterr()
  assert main.run(["eval", f"--workdir={wd}", "--task", echo_task]) == 0
  saved = json.load(open(os.path.join(wd, "eval", "tasks_6.json")))
  assert saved["tasks"][echo_task]["metrics"]["exact_match"] == in_training[0]


def _one_line_error(args, capsys, says):
  assert main.run(args) == 2
  err = [line for line in capsys.readouterr().err.strip().splitlines()
         if not line.startswith("objectax: task ")]  # the note of lengths measured
  assert len(err) == 1 and says in err[0], err
  return err[0]


@pytest.mark.e2e
def test_bad_downstream_input_is_one_line(trained_quickstart, echo_task, monkeypatch, capsys):
  wd = str(trained_quickstart)
  _one_line_error(["eval", f"--workdir={wd}", "--task", "echo_words_tset"], capsys,
                  TASK)  # the close match is named
  _one_line_error(["eval", f"--workdir={wd}", "--task", "pydocs_full_lm"], capsys,
                  "no metric_fns")
  _one_line_error(["finetune", f"--init_from={wd}"], capsys, "--task")
  _one_line_error(["finetune", f"--init_from={wd}", "--task=nope_task"], capsys, "nope_task")
  _one_line_error(["finetune", f"--task={echo_task}"], capsys, "--init_from")
  # A metric whose package is missing: named, before anything is restored.
  monkeypatch.setitem(text_metrics.PACKAGES, "rouge", ("no_such_module_x", "rouge-score"))
  _register(metric_fns=(text_metrics.rouge_l,))
  _one_line_error(["eval", f"--workdir={wd}", "--task", echo_task], capsys, "rouge-score")
  # A fine-tune on a task of another vocabulary than the checkpoint's.
  _register("echo_bytes_test", vocabulary=seqio.ByteVocabulary(extra_ids=100))
  try:
    _one_line_error(["finetune", f"--init_from={wd}", "--task=echo_bytes_test",
                     f"--workdir={wd}_bytes"], capsys, "vocabulary")
  finally:
    seqio.TaskRegistry.remove("echo_bytes_test")
  assert not os.path.exists(os.path.join(f"{wd}_bytes", "checkpoints"))
