"""Zero-shot rank classification: tasks correct by construction, the argmax and tie rules,
a uniform model on every architecture, the chain rule for CD, TFDS tasks without data, and
`objectax eval` on a trained run."""
import json
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf

from objectax.data import zeroshot_tasks as zt
from objectax.models.registry import ConfigError
from objectax.launch import configure, main, train
from objectax.launch.eval import evaluate
from objectax.launch.eval import yardstick
from objectax.launch.eval import zeroshot
from objectax.models import registry as arch_registry
from objectax.models.config import ModelConfig

VOCAB = seqio.ByteVocabulary(extra_ids=100)  # 359 ids; the model pads them to 384 rows
ARCHS = ["causal_decoder", "prefix_decoder", "encoder_decoder", "encoder_only"]
SYNTHETIC = ["recall", "copy", "facts_forward", "facts_backward"]
_WORDS = ("alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "Paris", "table",
          "green", "seven")
TEXTS = [" ".join(_WORDS[(i * i) % 11] + ("." if i % 9 == 8 else "") for i in range(1200)),
         "The quick brown fox jumps over the lazy dog while the cat sleeps. " * 30,
         "too short to hold a passage"]


def _request(n=40, seed=0, texts=TEXTS):
  return zt.Request(num_examples=n, seed=seed, texts=lambda: texts)


# ------------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("name", SYNTHETIC + ["last_word"])
def test_builtin_tasks_are_deterministic_with_spread_answers(name):
  examples = zt.make_examples(name, _request())
  assert examples == zt.make_examples(name, _request())
  assert examples != zt.make_examples(name, _request(seed=1))
  assert all(len(ex.options) == zt.NUM_OPTIONS for ex in examples)
  assert {ex.answer for ex in examples} == set(range(zt.NUM_OPTIONS))
  assert len(examples) == (40 if name != "last_word" else len(examples)) and len(examples) >= 10


def test_recall_and_copy_answers_are_correct_by_construction():
  for ex in zt.make_examples("recall", _request(100)):
    listing, query = re.fullmatch(r"(.*)\. (\w) ->", ex.prompt).groups()
    table = dict(item.split(" ") for item in listing.split(", "))
    assert len(table) == 6 and ex.options[ex.answer] == table[query]
    assert set(ex.options) <= set(table.values())
  for ex in zt.make_examples("copy", _request(100)):
    source = ex.prompt[:-len(" ->")]
    assert ex.options[ex.answer] == source
    for i, option in enumerate(ex.options):
      assert len(option.split()) == len(source.split())
      assert (option == source) == (i == ex.answer)


def test_facts_answers_are_correct_by_construction():
  for ex in zt.make_examples("facts_forward", _request(100)):
    name, kind = re.search(r"\. (\w+)'s (\w+) is$", ex.prompt).groups()
    assert f"{name}'s {kind} is {ex.options[ex.answer]}." in ex.prompt
    assert all(f"'s {kind} is {o}." in ex.prompt for o in ex.options)  # all in the facts
  for ex in zt.make_examples("facts_backward", _request(100)):
    kind, value = re.search(r"The one whose (\w+) is (\w+) is$", ex.prompt).groups()
    assert f"{ex.options[ex.answer]}'s {kind} is {value}." in ex.prompt
    assert all(f"{o}'s {kind} is " in ex.prompt for o in ex.options)


def test_last_word_is_the_word_after_the_passage():
  texts = [" ".join(t.split()) for t in TEXTS]
  examples = zt.make_examples("last_word", _request(1000))
  assert 10 <= len(examples) < 1000  # every candidate, none from the too-short text
  for ex in examples:
    assert len(ex.prompt.split()) == zt.CLOZE_CONTEXT_WORDS
    target = ex.options[ex.answer]
    matches = [t for t in texts if re.search(re.escape(ex.prompt) + r" " + target + r"\b", t)]
    assert matches, ex
    others = {w.rstrip(".,") for w in matches[0].split()}
    assert all(o in others and o.lower() != target.lower() for i, o in enumerate(ex.options)
               if i != ex.answer)
  with pytest.raises(zt.NoExamples):
    zt.make_examples("last_word", _request(texts=["only a few words here"]))
  _, skipped = zeroshot.load(["last_word", "recall"], _request(texts=["few words"]))
  assert list(skipped) == ["last_word"]


@pytest.mark.e2e
def test_words_are_plain_pieces_of_the_embedded_vocabulary(tfds_data_dir):
  from objectax.data import vocab  # pylint: disable=g-import-not-at-top
  v = vocab.get_vocabulary(data_dir=tfds_data_dir)
  words = [*zt.NAMES, *zt.COPY_WORDS, *(w for ws in zt.ATTRIBUTES.values() for w in ws),
           *zt.ATTRIBUTES]
  for w in words:
    ids = v.encode(w)
    assert len(ids) <= 2 and v.tokenizer.unk_id() not in ids, (w, ids)
  assert all(len(v.encode(k)) == 1 for k in [*zt.RECALL_KEYS, *map(str, range(10))])
  assert zeroshot._joins_with_space(v) and not zeroshot._joins_with_space(VOCAB)


# ---------------------------------------------------------------------------- ranking


def test_classify_takes_the_argmax_raw_and_per_byte_and_ties_go_first():
  rng = np.random.default_rng(0)
  examples, lls, nbs = [], [], []
  for _ in range(50):
    k = int(rng.integers(2, 6))
    examples.append(zt.Example("p", tuple(f"o{i}" for i in range(k)), int(rng.integers(k))))
    lls.append(rng.normal(-10, 3, k))
    nbs.append(rng.integers(1, 9, k))
  result = zeroshot.classify("t", "d", examples, lls, nbs)
  for ex, ll, nb, c, cn in zip(examples, lls, nbs, result.correct, result.correct_norm):
    assert c == (max(range(len(ll)), key=lambda i: ll[i]) == ex.answer)
    assert cn == (max(range(len(ll)), key=lambda i: ll[i] / nb[i]) == ex.answer)
  assert result.accuracy == np.mean(result.correct) and result.examples == 50
  assert result.chance == pytest.approx(np.mean([1 / len(ex.options) for ex in examples]))
  # Raw and normalized disagree when the likelier option is much shorter; ties: index 0.
  two = [zt.Example("p", ("a", "b"), 1)]
  r = zeroshot.classify("t", "d", two, [[-10.0, -12.0]], [[2, 6]])
  assert (r.correct, r.correct_norm) == ((0,), (1,))
  r = zeroshot.classify("t", "d", two, [[-3.0, -3.0]], [[4, 4]])
  assert (r.correct, r.correct_norm) == ((0,), (0,))
  r = zeroshot.classify("t", "d", [zt.Example("p", ("a", "b"), 0)], [[-3.0, -3.0]], [[4, 4]])
  assert (r.correct, r.correct_norm) == ((1,), (1,))


def _model(arch, tie=True, layers=1):
  cfg = ModelConfig(d_model=32, num_heads=2, head_dim=16, mlp_dim=64, num_layers=layers,
                    tie_embeddings=tie).with_vocab_size(VOCAB.vocab_size)
  model = arch_registry.get(arch).make_model(cfg)
  ex = zt.Example("a prompt", ("x", "yy"), 0)
  features, _, _ = arch_registry.get(arch).score_layout(zeroshot.option_pairs(VOCAB, ex, 32), 32)
  params = nn.meta.unbox(model.init(jax.random.key(1), features)["params"])
  return model, params, cfg.vocab_size


@pytest.mark.parametrize("arch", ARCHS)
def test_uniform_model_picks_the_first_shortest_option(arch):
  """Every token scores -ln V: raw = the first option with the fewest tokens; per byte
  (bytes = tokens here, with the leading space) all tie, so index 0."""
  model, params, v = _model(arch)
  params = jax.tree.map(lambda x: x, params)
  params["embed"]["embedding"] = jnp.zeros_like(params["embed"]["embedding"])
  tasks = {n: ("", zt.make_examples(n, _request(12))) for n in SYNTHETIC}
  tasks["mixed"] = ("", [zt.Example("pick one", ("aaa", "b", "cc", "d"), a) for a in range(4)])
  results = zeroshot.evaluate(model, params, arch, VOCAB, tasks, sequence_length=96,
                              batch_size=16)
  for r in results:
    examples = tasks[r.name][1]
    first_shortest = [int(np.argmin([len(o) for o in ex.options]) == ex.answer)
                      for ex in examples]  # byte vocabulary: tokens = characters
    assert r.correct == tuple(first_shortest), r.name
    assert r.correct_norm == tuple(int(ex.answer == 0) for ex in examples), r.name
  assert results[-1].correct == (0, 1, 0, 0)
  # The log-likelihoods themselves: -n ln V for an n-token option.
  ex = tasks["copy"][1][0]
  pairs = zeroshot.option_pairs(VOCAB, ex, 96)
  spec = arch_registry.get(arch)
  ll = zeroshot.pair_log_likelihoods(yardstick.make_scorer(model, spec.targets_key), params,
                                     spec.score_layout(pairs, 96), 4)
  np.testing.assert_allclose(ll, [-len(p.targets) * math.log(v) for p in pairs], rtol=1e-5)
  assert [p.num_bytes for p in pairs] == [len(o) + 1 for o in ex.options]


def test_causal_option_score_is_the_chain_rule_and_the_prefix_decoder_reads_ahead():
  """CD: log p(option | prompt) = log p(prompt + option) - log p(prompt), both scored left
  to right; ND with the same weights reads the prompt bidirectionally, so it differs (from
  the second layer on: in one layer the option's positions see the same inputs)."""
  model, params, _ = _model("causal_decoder", tie=False, layers=2)
  nd_model, _, _ = _model("prefix_decoder", tie=False, layers=2)  # the same module
  spec = arch_registry.get("causal_decoder")
  scorer = yardstick.make_scorer(model, spec.targets_key)
  ex = zt.make_examples("facts_forward", _request(1))[0]
  pairs = zeroshot.option_pairs(VOCAB, ex, 128)
  ll = zeroshot.pair_log_likelihoods(scorer, params, spec.score_layout(pairs, 128), 4)
  prompt = pairs[0].inputs
  whole = [yardstick.Pair(prompt[:0], np.r_[prompt, p.targets], np.ones(len(prompt) +
                          len(p.targets), bool), 0) for p in pairs]
  ll_whole = zeroshot.pair_log_likelihoods(scorer, params, spec.score_layout(whole, 128), 4)
  ll_prompt = zeroshot.pair_log_likelihoods(scorer, params, spec.score_layout(
      [yardstick.Pair(prompt[:0], prompt, np.ones(len(prompt), bool), 0)], 128), 4)
  np.testing.assert_allclose(ll, ll_whole - ll_prompt[0], rtol=1e-4)
  nd_spec = arch_registry.get("prefix_decoder")
  nd_scorer = yardstick.make_scorer(nd_model, nd_spec.targets_key)
  nd = zeroshot.pair_log_likelihoods(nd_scorer, params, nd_spec.score_layout(pairs, 128), 4)
  assert np.abs(nd - ll).max() > 1e-3
  # The encoder-only form masks every option token and ends in EOS.
  for p in pairs:
    inputs, targets = p.aligned
    k = len(prompt)
    assert (inputs[k:-1] == VOCAB.vocab_size - 1).all() and inputs[-1] == 1
    np.testing.assert_array_equal(targets[k:-1], p.targets)
    assert (targets[:k] == 0).all()


def test_long_prompts_lose_their_first_tokens():
  ex = zt.Example("one two three four five six seven eight nine ten", ("end", "stop"), 0)
  pairs = zeroshot.option_pairs(VOCAB, ex, 20)
  for p in pairs:
    assert len(p.inputs) + len(p.targets) + 1 == 20
    assert VOCAB.decode(p.inputs.tolist()).endswith("nine ten")
  with pytest.raises(ConfigError, match="no room"):
    zeroshot.option_pairs(VOCAB, zt.Example("p", ("x" * 30, "y"), 0), 20)


# ---------------------------------------------------------------------- TFDS-backed


@pytest.mark.parametrize("name", ["boolq", "cb", "copa", "rte"])
def test_tfds_task_without_data_fails_in_one_line(name, tmp_path):
  with pytest.raises(ConfigError) as e:
    zt.make_examples(name, zt.Request(data_dir=str(tmp_path)))
  msg = str(e.value)
  assert "\n" not in msg
  assert f"super_glue/{name}:1.0.2" in msg and str(tmp_path) in msg
  with pytest.raises(ConfigError):
    zt.check_available(["recall", name], data_dir=str(tmp_path))


FAKE = {
    "boolq": ({"passage": "Water boils at 100 C.", "question": "does water boil",
               "label": 1, "idx": 0},
              "Water boils at 100 C.\nQuestion: does water boil?\nAnswer:", ("no", "yes"), 1),
    "cb": ({"premise": "It rained.", "hypothesis": "The ground is wet", "label": 2, "idx": 0},
           "It rained.\nQuestion: The ground is wet. True, False or Neither?\nAnswer:",
           ("True", "False", "Neither"), 2),
    "copa": ({"premise": "The man fell. ", "choice1": "He slipped on ice.",
              "choice2": "He ate lunch.", "question": "cause", "label": 0, "idx": 0},
             "The man fell because", ("he slipped on ice.", "he ate lunch."), 0),
    "rte": ({"premise": "Paris is in France.", "hypothesis": "Paris is in Europe.",
             "label": 0, "idx": 0},
            "Paris is in France.\nQuestion: Paris is in Europe. True or False?\nAnswer:",
            ("True", "False"), 0),
}


@pytest.mark.parametrize("name", sorted(FAKE))
def test_tfds_templates_as_seqio_tasks(name):
  raw, prompt, options, answer = FAKE[name]
  source = seqio.FunctionDataSource(
      lambda split, shuffle_files: tf.data.Dataset.from_tensors(raw), splits=["validation"])
  task = zt.register_seqio_task(name, source, zt.TEMPLATES[name])
  assert seqio.get_mixture_or_task(zt.seqio_task_name(name)) is task
  assert zt.examples_of(task) == [zt.Example(prompt, options, answer)]


# ------------------------------------------------------------------------ the command


@pytest.mark.e2e
def test_eval_command_runs_the_zeroshot_tasks(trained_quickstart, tfds_data_dir, capsys):
  wd = trained_quickstart
  assert main.run(["eval", f"--workdir={wd}", "--documents=2", "--zeroshot=recall",
                   "--zeroshot=last_word"]) == 0
  out = capsys.readouterr().out
  assert re.search(r"^recall +0\.\d{4} +0\.\d{4} +0\.2500 +128$", out, re.M), out
  report = json.loads((wd / "eval" / "zeroshot.json").read_text())
  assert (report["step"], report["arch"], report["sequence_length"]) == (12, "causal_decoder", 64)
  assert list(report["tasks"]) == ["recall", "last_word"] and report["skipped"] == {}
  for row in report["tasks"].values():
    assert row["examples"] == len(row["correct"]) == len(row["correct_norm"]) > 0
    assert row["accuracy"] == pytest.approx(np.mean(row["correct"]))
    assert row["accuracy_norm"] == pytest.approx(np.mean(row["correct_norm"]))
    assert row["chance"] == 0.25 and set(row["correct"]) <= {0, 1}
  # Both tables, both files; --no_zeroshot runs none; bad names and absent data: one line.
  result = evaluate.evaluate_workdir(str(wd), documents=2, say=lambda m: None,
                                     zeroshot_names=())
  assert "zeroshot" not in result
  assert main.run(["eval", f"--workdir={wd}", "--zeroshot=nope"]) == 2
  assert main.run(["eval", f"--workdir={wd}", "--zeroshot=copa"]) == 2
  assert main.run(["eval", f"--workdir={wd}", "--zeroshot=copy", "--no_zeroshot"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-3].startswith("objectax: error: unknown zero-shot task 'nope'; valid choices: "
                            "last_word, recall, copy, facts_forward, facts_backward, boolq")
  assert err[-2].startswith("objectax: error: zero-shot task 'copa' needs the TFDS dataset "
                            f"super_glue/copa:1.0.2 prepared under {tfds_data_dir}")
  assert "either --zeroshot TASK or --no_zeroshot" in err[-1]
