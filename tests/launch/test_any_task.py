"""Training on any registered seqio Task or Mixture (`Experiment.task`): a user's own task,
the built-in tasks registered at import, mixtures of both, and what each bad choice says.

The end-to-end tests run the README's worked example (examples/my_tasks.py and its data)
copied to a folder outside the repository, every command as a subprocess, as a user runs it.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.data import any_task, tasks
from objectax.data import vocab as vocab_lib
from objectax.launch import configure, input_pipeline
from objectax.models import registry as arch_registry
from objectax.models.registry import ConfigError

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def _objectax(args, cwd, env=None, timeout=600):
  return subprocess.run([sys.executable, "-m", "objectax.launch.main", *args], cwd=cwd,
                        env={**os.environ, **(env or {})}, capture_output=True, text=True,
                        timeout=timeout)


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


@pytest.fixture
def user_dir(tmp_path):
  """The worked example, copied outside the package: my_tasks.py and data/*.jsonl."""
  home = tmp_path / "user"
  home.mkdir()
  shutil.copy(os.path.join(EXAMPLES, "my_tasks.py"), home / "my_tasks.py")
  shutil.copytree(os.path.join(EXAMPLES, "data"), home / "data")
  return home


# ------------------------------------------------------------------ registration, errors

def test_builtin_tasks_are_registered_at_import_under_stable_names():
  # Other tests' runs re-register some of them with their own settings: back to the defaults
  # that importing the module registers.
  tasks.register_builtin_tasks()
  for name in ("pydocs_span_corruption", "pydocs_full_lm", "c4_prefix_lm", "pydocs_ul2_r1"):
    assert name in seqio.TaskRegistry.names(), name
  assert "pydocs_ul2" in seqio.MixtureRegistry.names()
  mix = seqio.get_mixture_or_task("pydocs_ul2")
  assert sorted(t.name for t in mix.tasks) == sorted(f"pydocs_ul2_{c}" for c in
                                                     ("r1", "r2", "x1", "x2", "x3", "x4", "s"))
  assert tasks.BUILTIN["pydocs_ul2_x3"] == tasks.Builtin("pydocs", "ul2", "x3")
  # A built-in task reads at the lengths seqio asks for: span corruption's exact pair.
  ds = seqio.get_dataset("pydocs_span_corruption", {"inputs": 114, "targets": 26},
                         feature_converter=seqio.EncDecFeatureConverter(pack=False),
                         shuffle=False, dataset_split="validation")
  ex = next(ds.as_numpy_iterator())
  assert ex["encoder_input_tokens"].shape == (114,)
  assert ex["encoder_input_tokens"][-1] == 1 and (ex["decoder_target_tokens"] > 0).all()


def _register(name, features, vocabulary, texts=("a b c", "d e f g")):
  def make(split, shuffle_files=False, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices({k: list(texts) for k in features})
  for registry in (seqio.TaskRegistry, seqio.MixtureRegistry):
    if name in registry.names():
      registry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(make, splits=("train", "validation")),
      preprocessors=[seqio.preprocessors.tokenize],
      output_features={k: seqio.Feature(vocabulary, add_eos=True) for k in features},
      metric_fns=[])


def test_an_unregistered_task_is_one_line_with_close_matches():
  with pytest.raises(ConfigError) as e:
    any_task.lookup("pydocs_span_corruptoin")
  assert "not a registered seqio task or mixture" in str(e.value)
  assert "close matches: pydocs_span_corruption" in str(e.value)
  assert "--module" in str(e.value) and "\n" not in str(e.value)


def test_features_no_layout_takes_are_refused_in_one_line():
  _register("test_three_features", ("inputs", "targets", "extra"), seqio.ByteVocabulary())
  with pytest.raises(ConfigError, match=r"has output features \('extra', 'inputs', 'targets'\), "
                                        r"which no layout takes"):
    any_task.objective_for("test_three_features")


def test_a_mixture_whose_tasks_disagree_on_vocabulary_is_refused(tfds_data_dir):
  _register("test_bytes", ("inputs", "targets"), seqio.ByteVocabulary())
  if "test_bytes_and_spans" in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove("test_bytes_and_spans")
  seqio.MixtureRegistry.add("test_bytes_and_spans",
                            [("test_bytes", 1), ("pydocs_span_corruption", 1)])
  configure.parse(["run/quickstart.gin"], ["Experiment.task='test_bytes_and_spans'",
                                           f"TfdsConfig.data_dir={tfds_data_dir!r}"])
  from objectax.launch import builder  # pylint: disable=g-import-not-at-top
  cfg = builder.resolve()
  with pytest.raises(ConfigError) as e:
    any_task.components("test_bytes_and_spans", cfg)
  message = str(e.value)
  assert "mixture 'test_bytes_and_spans': its tasks disagree on the vocabulary" in message
  assert "test_bytes use ByteVocabulary+0" in message and "pydocs_span_corruption use " \
      "sentencepiece:" in message


def test_the_layout_follows_the_features():
  _register("test_lm_only", ("targets",), seqio.ByteVocabulary())
  _register("test_pairs", ("inputs", "targets"), seqio.ByteVocabulary())
  assert any_task.objective_for("test_lm_only").example_kind == "lm"
  pairs = any_task.objective_for("test_pairs")
  assert pairs.example_kind == "seq2seq"
  assert set(pairs.architectures) == {"causal_decoder", "prefix_decoder", "encoder_decoder"}
  with pytest.raises(ConfigError, match="does not support architecture 'encoder_only'"):
    arch_registry.check_supports(arch_registry.get("encoder_only"), pairs)


# ------------------------------------------------------------- component tagging is exact

@pytest.mark.parametrize("arch", ["causal_decoder", "prefix_decoder", "encoder_decoder"])
def test_tagging_components_changes_no_feature_the_model_reads(arch):
  """The ids tagged with their component before the feature converter come out of it,
  untagged, exactly as untagged ids do; the component of each target is the one tagged."""
  vocabulary = seqio.ByteVocabulary()
  first = _register("test_tag_a", ("inputs", "targets"), vocabulary, ("abc def", "g hi"))
  second = _register("test_tag_b", ("inputs", "targets"), vocabulary, ("jk", "lmnop qr s"))
  architecture = arch_registry.get(arch)
  lengths = {"inputs": 12, "targets": 12}
  ti = input_pipeline.TaskInput(
      task=first, task_feature_lengths=lengths,
      feature_converter=architecture.feature_converter(True, 0), vocabulary=vocabulary,
      lengths=None, components=(any_task.Component("a", first, 1.0),
                                any_task.Component("b", second, 1.0)),
      targets_key=architecture.targets_key)

  def batches(tag):
    ds = input_pipeline.task_dataset(ti, "train", shuffle=False, seed=3, shard_info=None,
                                     num_epochs=1, tag=tag)
    ds = ti.feature_converter(ds, task_feature_lengths=lengths).batch(2)
    if tag:
      ds = ds.map(input_pipeline._untag(architecture.targets_key))  # pylint: disable=protected-access
    return list(ds.as_numpy_iterator())

  plain, tagged = batches(False), batches(True)
  assert len(plain) == len(tagged) > 0
  for p, t in zip(plain, tagged):
    for k, v in p.items():
      np.testing.assert_array_equal(t[k], v, err_msg=k)
    ids = t[input_pipeline.COMPONENT_KEY]
    assert ((ids > 0) == (p[architecture.targets_key] > 0)).all()
  # Each example's first target is marked once.
  def examples(t):
    seg = t["decoder_segment_ids"]
    return sum(len(set(row[row > 0].tolist())) for row in seg)
  assert sum(int(t[input_pipeline.COMPONENT_START_KEY].sum()) for t in tagged) == \
      sum(examples(t) for t in tagged) >= 2
  # Byte ids: "jk" / "lmnop qr s" (component 2) vs "abc def" / "g hi" (component 1).
  for p, t in zip(plain, tagged):
    tokens, ids = p[architecture.targets_key], t[input_pipeline.COMPONENT_KEY]
    for row in range(tokens.shape[0]):
      seg = t.get("decoder_segment_ids", np.ones_like(tokens))[row]
      for s in set(seg[seg > 0].tolist()):
        text = vocabulary.decode([int(x) for x in tokens[row][seg == s] if x > 1])
        comp = set(ids[row][(seg == s) & (tokens[row] > 0)].tolist())
        letters = set(text) - {" "}
        assert comp == ({1} if letters <= set("abcdefghi") else {2}), (text, comp)


# ------------------------------------------------------------------ end to end, as a user

def _train(user_dir, wd, tfds_data_dir, *bindings, steps=40):
  out = _objectax(["train", "--module", "my_tasks", f"--workdir={wd}", "--quiet",
                   f"--gin.TrainConfig.steps={steps}", "--gin.TrainConfig.warmup_steps=5",
                   f"--gin.TrainConfig.eval_every={steps}", "--gin.TrainConfig.log_every=10",
                   "--gin.TrainConfig.eval_batches=2", *bindings],
                  cwd=user_dir, env={"TFDS_DATA_DIR": tfds_data_dir})
  assert out.returncode == 0, out.stderr[-3000:]
  evals = [r["eval_loss"] for r in _rows(wd) if "eval_loss" in r]
  return out, evals


@pytest.mark.e2e
@pytest.mark.slow
def test_a_users_seqio_task_trains_evaluates_and_inspects_from_outside(user_dir, tmp_path,
                                                                      tfds_data_dir):
  """The worked example's task (a FunctionDataSource over JSONL and a text preprocessor)
  on the encoder-decoder: the held-out loss falls; eval and inspect need no flags."""
  wd = tmp_path / "wr"
  out, evals = _train(user_dir, wd, tfds_data_dir, "--gin.Experiment.task=word_reversal",
                      "--gin.Experiment.arch=encoder_decoder")
  assert evals[-1] < 0.5 * evals[0], evals
  assert "Experiment.task = 'word_reversal'" in (wd / "config.gin").read_text()
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  evaluated = _objectax(["eval", f"--workdir={wd}", "--no_zeroshot", "--documents=2"],
                        cwd=elsewhere, env={"TFDS_DATA_DIR": tfds_data_dir})
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  scored = json.loads((wd / "eval" / "yardstick.json").read_text())
  assert scored["experiment"] == "encoder_decoder_word_reversal_tiny"
  # The task's own held-out loss, as training logged it at its last step.
  assert scored["task_loss"]["task"] == "word_reversal"
  assert scored["task_loss"]["loss"] == pytest.approx(evals[-1], rel=1e-5)
  shown = _objectax(["inspect", "--module", "my_tasks", "--task", "word_reversal"],
                    cwd=user_dir, env={"TFDS_DATA_DIR": tfds_data_dir})
  assert shown.returncode == 0, shown.stderr[-3000:]
  assert "task word_reversal on causal_decoder" in shown.stdout
  lines = {l.split(":", 1)[0].strip(): l.split(":", 1)[1].strip()
           for l in shown.stdout.splitlines() if ":" in l}
  words = lines["inputs"].split()
  assert words[0] == "reverse:" and lines["targets"].split() == words[1:][::-1]


@pytest.mark.e2e
@pytest.mark.slow  # the same path as the encoder-decoder's; the layouts' tagging is tested above
@pytest.mark.parametrize("arch", ["causal_decoder", "prefix_decoder"])
def test_a_users_seqio_task_trains_on_the_decoder_only_models(user_dir, tmp_path, tfds_data_dir,
                                                             arch):
  _, evals = _train(user_dir, tmp_path / arch, tfds_data_dir,
                    "--gin.Experiment.task=word_reversal", f"--gin.Experiment.arch={arch}")
  assert evals[-1] < 0.5 * evals[0], evals


@pytest.mark.e2e
@pytest.mark.slow  # about a minute: 2,000 examples
def test_a_mixture_with_a_builtin_task_logs_each_components_share_and_loss(user_dir, tmp_path,
                                                                          tfds_data_dir):
  """1:3 of the user's task and pydocs_span_corruption over 2,000 examples: each share is
  within 2 points of 25/75, and the components' losses add up to the total."""
  wd = tmp_path / "mix"
  _train(user_dir, wd, tfds_data_dir, "--gin.Experiment.task=word_reversal_and_spans",
         "--gin.Experiment.arch=encoder_decoder", "--gin.TrainConfig.batch_size=40",
         "--gin.Experiment.sequence_length=128", steps=50)
  rows = _rows(wd)
  last = [r for r in rows if r["step"] == 50 and "examples_seen/word_reversal" in r][0]
  seen = {n: last[f"examples_seen/{n}"] for n in ("word_reversal", "pydocs_span_corruption")}
  assert sum(seen.values()) >= 2000, seen  # packing puts more than one example in a row
  assert abs(last["share/word_reversal"] - 0.25) <= 0.02, last
  assert abs(last["share/pydocs_span_corruption"] - 0.75) <= 0.02, last
  for r in rows:
    if "loss/word_reversal" in r:
      tokens = {n: r[f"tokens/{n}"] for n in seen}
      assert sum(tokens.values()) == r["target_tokens"]
      mean = sum(r[f"loss/{n}"] * tokens[n] for n in seen) / r["target_tokens"]
      assert mean == pytest.approx(r["loss"], rel=1e-4)
  final_eval = [r for r in rows if "eval_loss/word_reversal" in r][-1]
  assert final_eval["eval_loss/word_reversal"] < final_eval["eval_loss/pydocs_span_corruption"]
  tags = set()
  for events in (wd / "tensorboard").rglob("events*"):
    for event in tf.compat.v1.train.summary_iterator(str(events)):
      tags.update(v.tag for v in event.summary.value)
  assert {"loss/word_reversal", "share/pydocs_span_corruption",
          "eval_loss/word_reversal"} <= tags, sorted(tags)


@pytest.mark.e2e
@pytest.mark.slow
def test_ablate_runs_a_grid_with_a_users_task_cell_from_outside(user_dir, tmp_path,
                                                                tfds_data_dir):
  """Two cells, the user's task and a built-in objective, matched on tokens: trained,
  evaluated and reported by `objectax ablate` run in the user's folder, no extra flags."""
  experiments = user_dir / "experiments"
  experiments.mkdir()
  (experiments / "encoder_decoder_word_reversal_tiny_pydocs.gin").write_text(
      "import my_tasks\n"
      "Experiment.arch = 'encoder_decoder'\n"
      "Experiment.task = 'word_reversal'\n")
  (experiments / "encoder_decoder_span_corruption_tiny_pydocs.gin").write_text(
      "Experiment.arch = 'encoder_decoder'\n"
      "Experiment.objective = 'span_corruption'\n")
  (user_dir / "grid.gin").write_text(
      "Grid.cells = ['encoder_decoder_word_reversal', 'encoder_decoder_span_corruption']\n"
      "Grid.experiment_dir = 'experiments'\n"
      "Grid.eval_documents = 4\n"
      "TrainConfig.steps = 12\n"
      "TrainConfig.warmup_steps = 3\n"
      "TrainConfig.eval_batches = 1\n")
  out = _objectax(["ablate", "grid.gin", "--size=tiny", "--out=out"], cwd=user_dir,
                  env={"TFDS_DATA_DIR": tfds_data_dir}, timeout=1200)
  assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
  for cell in ("encoder_decoder_word_reversal", "encoder_decoder_span_corruption"):
    run = user_dir / "out" / cell / "seed_0"
    assert json.loads((run / "summary.json").read_text())["final_step"] == 12
    assert (run / "eval" / "yardstick.json").exists()
  report = (user_dir / "out" / "results.md").read_text()
  assert "encoder_decoder_word_reversal" in report and "word_reversal" in report
