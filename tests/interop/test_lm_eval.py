"""lm-evaluation-harness with `--model objectax`: the harness ranks a local multiple-choice
task's options exactly as `objectax eval` does, for every architecture in its own layout;
rolling log-likelihoods score every token once; generation is `objectax generate`'s; the
command line reaches the adapter; and the harness's own `hf` model on the exported causal
decoder gives the same scores."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

lm_eval = pytest.importorskip("lm_eval", reason="needs the hf extra: pip install -e '.[hf]'")

# pylint: disable=g-import-not-at-top,wrong-import-position
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from objectax.data import zeroshot_tasks as zt
from objectax.launch import main
from objectax.launch.eval import yardstick, zeroshot
from objectax.launch.interop import lm_eval_adapter
from objectax.launch.tools import generate
from objectax.models import decoding
from objectax.models import registry as arch_registry
from objectax.models.registry import ConfigError

TASKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lm_eval_tasks")
TASK = "objectax_last_word"       # the harness's name (tests/interop/lm_eval_tasks/)
ZEROSHOT_TASK = "lm_eval_last_word"  # the same examples as an `objectax eval` task
OBJECTIVES = {"causal_decoder": "full_lm", "prefix_decoder": "prefix_lm",
              "encoder_decoder": "prefix_lm", "encoder_only": "bert_mlm"}
LEFT_TO_RIGHT = ["causal_decoder", "prefix_decoder", "encoder_decoder"]
# Longer than every prompt + option of the task, so that the harness's `hf` model (which
# truncates its own way) sees the same text; truncation is tested on its own below.
LENGTH = 128


def _examples() -> list[zt.Example]:
  with open(os.path.join(TASKS_DIR, "last_word.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  return [zt.Example(r["prompt"], tuple(r["options"]), r["answer"]) for r in rows]


@pytest.fixture(scope="module", autouse=True)
def offline():
  """No test here may reach the network (the task's data is a local file)."""
  saved = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
  os.environ.update({k: "1" for k in saved})
  yield
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


@pytest.fixture(scope="module")
def runs(tfds_data_dir, tmp_path_factory):
  """arch -> the workdir of a 4-step run of it, trained on first use, shared by the tests."""
  from objectax.launch import configure, train
  trained = {}

  def get(arch: str) -> str:
    if arch not in trained:
      wd = str(tmp_path_factory.mktemp(arch) / "wd")
      configure.parse(["run/quickstart.gin"], [
          f"Experiment.arch={arch!r}", f"Experiment.objective={OBJECTIVES[arch]!r}",
          "TrainConfig.steps=4", "TrainConfig.checkpoint_every=4", "TrainConfig.eval_every=4",
          "TrainConfig.batch_size=8", "TrainConfig.eval_batches=1",
          "TrainConfig.warmup_steps=2", "TrainConfig.learning_rate=1e-2",
          f"Experiment.sequence_length={LENGTH}"])
      train.train(wd, quiet=True)
      trained[arch] = wd
    return trained[arch]
  return get


@pytest.fixture(scope="module")
def models(runs):
  """arch -> the adapter on that run, restored once."""
  made = {}

  def get(arch: str) -> lm_eval_adapter.ObjectaxLM:
    if arch not in made:
      made[arch] = lm_eval_adapter.ObjectaxLM(workdir=runs(arch), batch_size=16)
    return made[arch]
  return get


@pytest.fixture(scope="module")
def objectax_eval(runs):
  """arch -> `objectax eval`'s zero-shot result on the task's examples: (accuracy, per
  example correct, per example option log-likelihoods), the latter caught on their way
  into zeroshot.classify."""
  examples = _examples()
  zt.TASKS.add(ZEROSHOT_TASK, zt.ZeroShotTask(ZEROSHOT_TASK, "the harness task's examples",
                                              lambda request: examples))
  done = {}

  def get(arch: str):
    if arch not in done:
      caught = []
      real = zeroshot.classify

      def spy(name, description, exs, log_likelihoods, option_bytes):
        caught.append([list(map(float, ll)) for ll in log_likelihoods])
        return real(name, description, exs, log_likelihoods, option_bytes)

      zeroshot.classify = spy
      try:
        wd = runs(arch)
        assert main.run(["eval", f"--workdir={wd}", "--documents=1",
                         f"--zeroshot={ZEROSHOT_TASK}"]) == 0
      finally:
        zeroshot.classify = real
      with open(os.path.join(wd, "eval", "zeroshot.json"), encoding="utf-8") as f:
        row = json.load(f)["tasks"][ZEROSHOT_TASK]
      done[arch] = (row["accuracy"], row["correct"], caught[0])
    return done[arch]
  yield get
  zt.TASKS.remove(ZEROSHOT_TASK)


def _harness(model, model_args=None, **kwargs):
  """(acc, per doc acc, per doc option log-likelihoods) of the harness on the task (its
  built-in tasks not indexed: 8 s saved)."""
  tasks = TaskManager(include_path=TASKS_DIR, include_defaults=False)
  result = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[TASK],
                                   task_manager=tasks, log_samples=True, **kwargs)
  samples = sorted(result["samples"][TASK], key=lambda s: s["doc_id"])
  return (result["results"][TASK]["acc,none"], [int(s["acc"]) for s in samples],
          [[float(r[0]) for r in s["filtered_resps"]] for s in samples])


# ----------------------------------------------------------------------------- task


def test_the_task_file_holds_objectax_last_word_examples(tfds_data_dir):
  """The JSON lines are data/zeroshot_tasks.py's last_word task (32 examples, seed 0) on
  the embedded corpus, real text of Python's documentation; the corpus is the running
  Python's, so the check needs the Python that wrote the file."""
  if sys.version_info[:2] != (3, 11):
    pytest.skip("the file was written from the py311 corpus")
  texts = zeroshot.validation_texts("pydocs")
  made = zt.make_examples("last_word", zt.Request(num_examples=32, seed=0,
                                                  texts=lambda: texts))
  assert _examples() == made
  assert all(ex.prompt in " ".join(" ".join(t.split()) for t in texts) for ex in made[:5])


def test_the_rolling_windows_score_every_token_once():
  for n in (1, 5, 8, 9, 16, 17, 40):
    ids = list(range(100, 100 + n))
    for shared in (True, False):
      windows = lm_eval_adapter.rolling_windows(ids, 8, shared)
      assert [t for _, tg in windows for t in tg] == ids  # once each, in order
      for k, (inputs, targets) in enumerate(windows):
        start = ids.index(targets[0])
        assert list(inputs) == ids[start - len(inputs):start]  # right before the targets
        if shared:
          assert len(inputs) + len(targets) <= 8
          assert len(inputs) == (0 if k == 0 else 8 - len(targets))  # rows filled
        else:
          assert len(targets) <= 8 and len(inputs) == min(8, start)
  assert [list(map(list, w)) for w in lm_eval_adapter.rolling_windows(
      range(5, 12), 4, True)] == [[[], [5, 6, 7, 8]], [[8], [9, 10, 11]]]
  assert [list(map(list, w)) for w in lm_eval_adapter.rolling_windows(
      range(5, 12), 4, False)] == [[[], [5, 6, 7, 8]], [[5, 6, 7, 8], [9, 10, 11]]]


# ------------------------------------------------------------------ loglikelihood


@pytest.mark.e2e
@pytest.mark.parametrize("arch", [
    "causal_decoder", pytest.param("encoder_decoder", marks=pytest.mark.slow),
    # The same code path in two more layouts; the default suite's time goes to the others.
    pytest.param("prefix_decoder", marks=pytest.mark.slow),
    pytest.param("encoder_only", marks=pytest.mark.slow)])
def test_harness_accuracy_is_objectax_evals(arch, runs, objectax_eval):
  """`--model objectax` through the harness's Python API: every option's log-likelihood is
  the one `objectax eval` ranks (the same layouts, tokenization and scorer), so the
  accuracy and each example's correctness are the same."""
  acc, correct, lls = _harness("objectax", {"workdir": runs(arch), "batch_size": 16})
  ours_acc, ours_correct, ours_lls = objectax_eval(arch)
  diff = np.abs(np.array(lls) - np.array(ours_lls)).max()
  print(f"{arch}: harness acc {acc:.4f}, objectax eval {ours_acc:.4f}, "
        f"max |log-likelihood difference| {diff:.2e}")
  assert diff < 1e-4
  assert correct == ours_correct and acc == pytest.approx(ours_acc)
  assert len(correct) == 32


@pytest.mark.e2e
def test_continuations_are_tokenized_as_objectax_eval_reads_options(models):
  """A continuation with the harness's leading space is an option read as a new word; a
  context too long keeps its last tokens, as zeroshot.option_pairs cuts it. Without the
  space, the continuation's ids are split off the tokenized whole text."""
  lm = models("causal_decoder")
  long = " ".join(["the value of the argument is returned"] * 40)
  ex = zt.Example(long, ("unchanged", "None"), 0)
  for option, p in zip(ex.options, zeroshot.option_pairs(lm.vocabulary, ex, LENGTH)):
    q = lm.pair(long, " " + option)
    for field in ("inputs", "targets", "scored"):
      np.testing.assert_array_equal(getattr(q, field), getattr(p, field))
    np.testing.assert_array_equal(q.aligned[0], p.aligned[0])
    assert len(q.inputs) + len(q.targets) + 1 == LENGTH  # cut to fit
  assert list(lm.pair("a call (", "see below)").targets) == (
      lm.vocabulary.encode("a call (see below)")[len(lm.vocabulary.encode("a call (")):])
  # The context's trailing space moves to the continuation, as in the harness's models.
  np.testing.assert_array_equal(lm.pair("the value ", "is").targets,
                                lm.pair("the value", " is").targets)
  (ll, greedy), = lm.loglikelihood([Instance("loglikelihood", {}, ("", "Return the"), 0)])
  assert ll < 0 and isinstance(greedy, bool)


# ---------------------------------------------------------------------- rolling


@pytest.mark.e2e
@pytest.mark.parametrize("arch", LEFT_TO_RIGHT)
def test_rolling_loglikelihood_is_the_yardsticks_left_to_right(arch, models):
  """A text of at most L tokens: the yardstick's left_to_right row (ED: encoder = EOS);
  a longer one: that row for its first L tokens plus the later windows. EO refuses."""
  lm = models(arch)
  vocab = lm.vocabulary
  longest = max(zeroshot.validation_texts("pydocs")[:8], key=len)
  text = vocab.decode(vocab.encode(longest)[:5 * LENGTH])  # real text, 5 windows' worth
  ids = vocab.encode(text)
  assert len(ids) > 2 * LENGTH
  short = vocab.decode(ids[:LENGTH // 2])
  short_ids = vocab.encode(short)
  spec = arch_registry.get(arch)
  scorer = yardstick.make_scorer(lm.opened.model, spec.targets_key)

  def left_to_right(token_ids):
    doc = yardstick.make_document(vocab, "", token_ids, LENGTH)
    nats, _ = yardstick.score_rows(scorer, lm.decoder.params, spec.score_layout(
        yardstick.left_to_right_pairs([doc]), LENGTH), 1)
    return -float(nats[0])

  rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i)
                                      for i, t in enumerate([short, text])])
  assert rolling[0] == pytest.approx(left_to_right(short_ids), abs=1e-4)
  (whole, _), = lm.loglikelihood([Instance("loglikelihood", {}, ("", short), 0)])
  assert whole == pytest.approx(rolling[0], abs=1e-4)
  windows = lm_eval_adapter.rolling_windows(ids, LENGTH, lm.opened.stream == "decoder")
  later = [yardstick.Pair(i, t, np.ones(len(t), bool), 0) for i, t in windows[1:]]
  expected = left_to_right(ids[:LENGTH]) + lm.score(later)[0].sum()
  assert rolling[1] == pytest.approx(expected, abs=1e-3)
  assert rolling[1] < rolling[0] < 0


@pytest.mark.e2e
def test_the_encoder_only_model_refuses_rolling_and_generation_in_one_line(models):
  lm = models("encoder_only")
  for call, request in ((lm.loglikelihood_rolling, ("some text",)),
                        (lm.generate_until, ("some text", {"until": ["\n"]}))):
    with pytest.raises(ConfigError) as e:
      call([Instance("x", {}, request, 0)])
    assert "\n" not in str(e.value) and "encoder_only" in str(e.value)


# --------------------------------------------------------------------- generation


@pytest.mark.e2e
@pytest.mark.parametrize("arch", LEFT_TO_RIGHT)
def test_generate_until_is_objectax_generate(arch, runs, models):
  """Greedy, batched with prompts of other lengths: each output is what `objectax
  generate` prints for its prompt; `until` cuts it at the first stop string."""
  lm = models(arch)
  prompts = ("The module", "Return a list of the names of the", "If")
  want = generate.generate(runs(arch), None, generate.Request(prompts, max_new_tokens=12),
                           say=lambda msg: None)
  got = lm.generate_until([Instance("generate_until", {}, (p, {"until": [], "max_gen_toks": 12}),
                                    i) for i, p in enumerate(prompts)])
  assert got == [text for _, text in want]
  full = got[1]
  stop = full[2:4] or "x"
  cut = lm.generate_until([Instance("generate_until", {}, (prompts[1], {
      "until": stop, "max_gen_toks": 12, "do_sample": False}), 0)])
  assert cut == [full.split(stop)[0]]
  # is_greedy: the tokens greedy decoding chose are each the argmax; another one is not.
  row, _ = lm.prompt_ids(prompts[1], 4)  # ED: the prompt and EOS, as its encoder reads it
  chosen = lm.decoder.decode([row], 4, decoding.Strategy())[0]  # EOS included
  pairs = [yardstick.Pair(np.asarray(row, np.int32), np.asarray(t, np.int32),
                          np.ones(len(t), bool), 0)
           for t in (chosen, chosen[:-1] + [(chosen[-1] + 1) % lm.vocabulary.vocab_size])]
  assert list(lm.score(pairs)[1]) == [True, False]


# ------------------------------------------------------------------- command line


@pytest.mark.e2e
@pytest.mark.slow
def test_the_command_line_reaches_the_adapter(runs, objectax_eval, tmp_path):
  """`objectax harness` is lm-eval's own command line with `--model objectax` registered
  (lm-eval 0.4 discovers no external models): the table it prints has objectax eval's
  accuracy; model_args' batch_size wins over the harness's --batch_size default."""
  wd = runs("causal_decoder")
  out = tmp_path / "results"
  env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
  proc = subprocess.run(
      [sys.executable, "-m", "objectax.launch.main", "harness", "--model", "objectax",
       "--model_args", f"workdir={wd},batch_size=8", "--tasks", TASK, "--include_path",
       TASKS_DIR, "--output_path", str(out)], env=env, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert re.search(r"objectax harness: causal_decoder_full_lm_tiny_pydocs step 4: lm-eval "
                   r"model, 8 rows per batch", proc.stderr), proc.stderr[-3000:]
  accuracy = objectax_eval("causal_decoder")[0]
  row = re.search(rf"^\|{TASK}\|.*\|acc +\|[^|]*\|([0-9.]+)\|", proc.stdout, re.M)
  assert row and float(row.group(1)) == pytest.approx(accuracy, abs=5e-4), proc.stdout
  written, = out.rglob("results_*.json")
  results = json.loads(written.read_text())
  assert results["results"][TASK]["acc,none"] == pytest.approx(accuracy)
  assert results["config"]["objectax_arch"] == "causal_decoder"


@pytest.fixture
def lm_eval_logging():
  """The harness's command line, run in this process, gives its logger a handler on the
  test's captured stderr; it is taken back afterwards (later tests would write to a
  closed stream)."""
  import logging
  from lm_eval import utils
  logger = logging.getLogger("lm_eval")
  saved = (list(logger.handlers), logger.propagate, logger.level, utils._LOGGING_CONFIGURED)  # pylint: disable=protected-access
  yield
  logger.handlers[:] = saved[0]
  logger.propagate, utils._LOGGING_CONFIGURED = saved[1], saved[3]  # pylint: disable=protected-access
  logger.setLevel(saved[2])


def test_bad_model_args_fail_in_one_line(capsys, tmp_path, lm_eval_logging):
  del lm_eval_logging
  code = main.run(["harness", "--model", "objectax", "--model_args", "batch_size=2",
                   "--tasks", TASK, "--include_path", TASKS_DIR])
  assert code == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err == ("objectax: error: --model objectax needs --model_args workdir=DIR (the "
                 "workdir of an `objectax train` run)")
  with pytest.raises(ConfigError, match="not an objectax model argument"):
    lm_eval_adapter.ObjectaxLM(workdir=str(tmp_path), pretrained="gpt2")
  with pytest.raises(ConfigError, match="not a training workdir"):
    lm_eval_adapter.ObjectaxLM.create_from_arg_string(f"workdir={tmp_path}", {"batch_size": 1})


@pytest.mark.e2e
def test_model_args_batch_size_wins_over_the_harness_default(runs):
  wd = runs("causal_decoder")
  make = lm_eval_adapter.ObjectaxLM.create_from_arg_string
  assert make(f"workdir={wd},batch_size=4", {"batch_size": 1, "device": None}).batch_size == 4
  assert make(f"workdir={wd}", {"batch_size": 8}).batch_size == 8
  assert make(f"workdir={wd}", {"batch_size": "auto"}).batch_size == 16
  assert make(f"workdir={wd},step=4", {}).get_model_info()["objectax_step"] == 4
  with pytest.raises(ConfigError, match="batch_size='x'"):
    make(f"workdir={wd},batch_size=x", {})


# ----------------------------------------------------------------- Hugging Face twin


@pytest.mark.e2e
def test_the_harness_hf_model_on_the_export_gives_the_same_scores(runs, objectax_eval,
                                                                  tmp_path):
  """The causal decoder exported as a Llama folder and read by the harness's own `hf`
  model (the exported tokenizer puts id 0, Objectax's BOS, before the text): the same
  log-likelihoods, so the same accuracy, as the adapter and `objectax eval`."""
  try:
    from objectax.launch.interop import hf
  except ImportError:
    hf = None
  if not hasattr(hf, "export"):
    pytest.skip("objectax.launch.interop.hf.export is not there yet")
  pytest.importorskip("accelerate", reason="the harness's hf model needs accelerate")
  wd, out = runs("causal_decoder"), str(tmp_path / "hf")
  hf.export(wd, None, out, say=lambda msg: None)
  acc, correct, lls = _harness("hf", {"pretrained": out, "dtype": "float32",
                                      "device": "cpu"}, batch_size=16)
  ours_acc, ours_correct, ours_lls = objectax_eval("causal_decoder")
  diff = np.abs(np.array(lls) - np.array(ours_lls)).max()
  print(f"hf export: harness acc {acc:.4f}, objectax eval {ours_acc:.4f}, "
        f"max |log-likelihood difference| {diff:.2e}")
  assert diff < 1e-4
  assert correct == ours_correct and acc == pytest.approx(ours_acc)
