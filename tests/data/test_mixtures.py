"""UL2's mixture of denoisers as a registered seqio Mixture on the embedded corpus.

The mixture's stream is checked to be exactly an interleaving of its seven component
tasks' own streams (each rebuilt here with the same seed): every mixture example is
attributed to the component whose next unconsumed example it equals. That gives each
denoiser's realized share and proves that nothing was changed on the way through seqio.
"""
from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest
import seqio

from objectax.data import tasks
from objectax.data import vocab as vocab_lib
from objectax.models.registry import ConfigError
from objectax.objectives import registry as objective_registry
from objectax.objectives.ul2 import DEFAULT_DENOISERS, Ul2Config

BUDGET = 128
SEED = 5
MODE_OF = {name: mode for name, mode, _, _ in DEFAULT_DENOISERS}


@pytest.fixture(scope="module")
def vocabulary(tfds_data_dir) -> seqio.Vocabulary:
  return vocab_lib.get_vocabulary(vocab_lib.VocabConfig(), data_dir=tfds_data_dir)


@pytest.fixture(autouse=True)
def small_shuffle_buffers(monkeypatch):
  """Shuffle buffers of 64 instead of seqio's 1,000 for the UL2 tasks these tests build.

  Starting a mixture fills one buffer per denoiser (7,000 preprocessed examples), which
  dominated these tests' time; shares, mode tokens and determinism do not depend on the
  buffer size. The tasks get their own buffer back after each test."""
  original = seqio.Task.get_dataset

  def get_dataset(self, *args, **kwargs):
    if self.name.startswith("pydocs_ul2_"):
      kwargs.setdefault("shuffle_buffer_size", 64)
    return original(self, *args, **kwargs)

  monkeypatch.setattr(seqio.Task, "get_dataset", get_dataset)


def _stream(provider, lengths, seed=SEED):
  """The provider's endless training stream as (inputs, targets) tuples, read lazily."""
  ds = provider.get_dataset(lengths.feature_lengths(), split="train", shuffle=True, seed=seed,
                            num_epochs=None)
  return ((tuple(ex["inputs"].tolist()), tuple(ex["targets"].tolist()))
          for ex in ds.as_numpy_iterator())


def _examples(provider, lengths, num, seed=SEED):
  return list(itertools.islice(_stream(provider, lengths, seed), num))


def _attribute(mixture, lengths, num):
  """Component name of each of the first `num` mixture examples (interleaving check)."""
  mixed = _examples(mixture, lengths, num)
  counts = collections.Counter()
  streams = {}
  for task in mixture.tasks:
    name = task.name.rsplit("_", 1)[1]
    # Read lazily: each component's stream only as far as the mixture draws from it.
    streams[name] = _stream(task, lengths)
  heads = {name: next(it) for name, it in streams.items()}
  names = []
  for ex in mixed:
    owners = [name for name, head in heads.items() if head == ex]
    assert owners, "a mixture example that is no component's next example"
    owner = owners[0]
    names.append(owner)
    counts[owner] += 1
    heads[owner] = next(streams[owner])
  return names, mixed


def test_ul2_lengths_fill_one_budget():
  obj = objective_registry.get("ul2")
  cfg = Ul2Config()
  for budget in (64, 128, 626):
    lengths = obj.lengths(cfg, budget)
    assert lengths.concat == budget and not lengths.exact
    for name, mode, mu, r in cfg.denoisers:
      if mu:
        sc = objective_registry.get("span_corruption")
        sub = sc.lengths(sc.config_cls(noise_density=r, mean_noise_span_length=mu,
                                       min_noise_spans=1), budget - 1)
        # The component fills the budget up to span corruption's own rounding.
        assert budget - 3 <= sub.budget + 1 <= budget, (name, sub)
        assert sub.inputs + 1 <= lengths.inputs and sub.targets <= lengths.targets
  assert obj.lengths(cfg, 626).inputs == 625  # the S-denoiser's longest prefix + [S2S]


@pytest.mark.e2e
@pytest.mark.parametrize("num", [
    3_000, pytest.param(10_000, marks=pytest.mark.slow, id="10000")])
def test_ul2_mixture_shares_and_mode_tokens(vocabulary, num):
  """Each denoiser's share is 1/7 (within 2 points over 10,000 examples with --slow;
  within 4 standard errors over 3,000 by default); every example starts with its mode."""
  obj = objective_registry.get("ul2")
  cfg = Ul2Config()
  lengths = obj.lengths(cfg, BUDGET)
  mixture = tasks.get_task("pydocs", "ul2", cfg, vocabulary, BUDGET)
  assert isinstance(mixture, seqio.Mixture) and len(mixture.tasks) == 7
  names, mixed = _attribute(mixture, lengths, num)
  shares = {n: c / len(names) for n, c in collections.Counter(names).items()}
  assert set(shares) == set(MODE_OF)
  # seqio samples i.i.d. with the rates: the standard error of a 1/7 share is 0.35 points
  # over 10k examples (2 points is about 6 of them) and 0.64 points over 3k.
  tolerance = 0.02 if num >= 10_000 else 4 * np.sqrt((1 / 7) * (6 / 7) / num)
  for name, share in shares.items():
    assert abs(share - 1 / 7) < tolerance, shares
  mode_ids = {m: vocab_lib.mode_token_ids(vocabulary, m) for m in vocab_lib.MODE_TOKENS}
  assert all(len(ids) == 1 for ids in mode_ids.values())  # single pieces in our vocabulary
  all_modes = {ids[0] for ids in mode_ids.values()}
  for name, (inputs, targets) in zip(names, mixed):
    assert inputs[0] == mode_ids[MODE_OF[name]][0]
    assert not all_modes & set(inputs[1:]) and not all_modes & set(targets)
    assert len(inputs) <= lengths.inputs and len(targets) <= lengths.targets
    assert len(inputs) + len(targets) <= BUDGET
    if name == "s":  # Wang et al.'s prefix LM fills the budget exactly
      assert len(inputs) + len(targets) == BUDGET
  # Span-corruption denoisers: noise density visible in the targets length.
  lengths_by = collections.defaultdict(set)
  for name, (inputs, targets) in zip(names, mixed):
    lengths_by[name].add((len(inputs), len(targets)))
  for name in ("r1", "r2", "x1", "x2", "x3", "x4"):
    assert len(lengths_by[name]) == 1, (name, lengths_by[name])  # exact lengths
  (i_r1, t_r1), = lengths_by["r1"]
  (i_x1, t_x1), = lengths_by["x1"]
  assert t_r1 < i_r1 / 3 and abs(t_x1 - i_x1) <= 2  # r=0.15 vs r=0.5


@pytest.mark.e2e
@pytest.mark.slow  # for time: the shares themselves are checked by the default UL2 tests
def test_ul2_rates_are_configurable(vocabulary):
  cfg = Ul2Config(rates=(4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0))
  lengths = objective_registry.get("ul2").lengths(cfg, BUDGET)
  mixture = tasks.get_task("pydocs", "ul2", cfg, vocabulary, BUDGET)
  names, _ = _attribute(mixture, lengths, 1000)
  share = names.count("r1") / len(names)
  # Expected 0.4 (against 1/7 at equal rates); the binomial standard error over 1,000 is
  # 1.55 points: allow 4 of them.
  assert abs(share - 0.4) < 0.062


@pytest.mark.e2e
def test_ul2_denoisers_read_disjoint_documents(vocabulary):
  """With shard_documents (the default) each denoiser reads its own documents."""
  obj = objective_registry.get("ul2")
  comps = obj.mixture(Ul2Config(), BUDGET, vocabulary)
  assert [c.shard for c in comps] == [(i, 7) for i in range(7)]
  assert [c.shard for c in obj.mixture(Ul2Config(shard_documents=False), BUDGET,
                                       vocabulary)] == [None] * 7


@pytest.mark.parametrize("kwargs, message", [
    (dict(rates=(1.0,) * 6), "one positive rate per denoiser"),
    (dict(denoisers=(("r", "[XYZ]", 3, 0.15),), rates=(1.0,)), "valid choices: [NLU]"),
    (dict(s_objective="full_lm"), "valid choices: prefix_lm, t5_prefix_lm"),
    (dict(denoisers=(("a", "[NLU]", 3, 0.15), ("a", "[NLG]", 3, 0.5)), rates=(1, 1)),
     "unique"),
])
def test_ul2_config_errors(kwargs, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
    Ul2Config(**kwargs)


def test_ul2_mode_token_longer_than_reserved():
  byte_vocab = seqio.ByteVocabulary(extra_ids=100)
  with pytest.raises(ConfigError, match="mode_token_length=5"):
    objective_registry.get("ul2").mixture(Ul2Config(), BUDGET, byte_vocab)
  comps = objective_registry.get("ul2").mixture(Ul2Config(mode_token_length=5), BUDGET,
                                                  byte_vocab)
  assert all(len(c.inputs_prefix) == 5 for c in comps)
  assert np.all([c.lengths.budget + 5 <= BUDGET for c in comps])


@pytest.mark.e2e
def test_ul2_mixture_is_deterministic_for_a_seed_and_differs_across_seeds(vocabulary):
  cfg = Ul2Config()
  lengths = objective_registry.get("ul2").lengths(cfg, BUDGET)
  mixture = tasks.get_task("pydocs", "ul2", cfg, vocabulary, BUDGET)
  first = _examples(mixture, lengths, 100, seed=11)
  assert _examples(mixture, lengths, 100, seed=11) == first
  other = _examples(mixture, lengths, 100, seed=12)
  assert sum(a != b for a, b in zip(first, other)) > 90
