"""UL2's mixture of denoisers (Tay et al. 2022, "Unifying Language Learning Paradigms").

See docs/objectives.md#ul2.

Seven denoisers, each a seqio Task whose inputs start with its mode ("paradigm") token,
combined as one seqio Mixture:

  name  mode   denoiser                                   objective
  r1    [NLU]  R: span corruption, mu=3,  r=0.15          span_corruption
  r2    [NLU]  R: span corruption, mu=8,  r=0.15          span_corruption
  x1    [NLG]  X: span corruption, mu=3,  r=0.5           span_corruption
  x2    [NLG]  X: span corruption, mu=8,  r=0.5           span_corruption
  x3    [NLG]  X: span corruption, mu=64, r=0.15          span_corruption
  x4    [NLG]  X: span corruption, mu=64, r=0.5           span_corruption
  s     [S2S]  S: prefix LM                                prefix_lm (or t5_prefix_lm)

Sources and choices:
- The seven (mu, r) pairs and the mode tokens ([NLU] for R, [NLG] for X, [S2S] for S) come
  from secondary sources, not the paper's text: the UL2 paper's Table 1 / sec. 3.1.2 as
  transcribed, consistently, by the Finnish-NLP ul2 tasks.py, Levanter's
  `DenoisingTaskConfig.ul2_configs` and Birdie's `ul2_config.py`; the modes by Levanter's
  `ul2r.py` code and the HF UL2 model card.
- Default rates: equal, 1/7 each. The seven denoisers are said to be "mixed roughly
  uniformly"; the exact S share is unverified (arXiv 2205.05131 sec. 3.1.2); bind
  `Ul2Config.rates` to change it, e.g. the decoder-only UL2 of
  Garcia et al. 2023 (60% causal LM, 20% prefix LM, 20% span corruption) needs a full-LM
  component, which this mixture does not have.
- Span lengths: T5's random partition (`random_spans_noise_mask`), not the normal
  distribution around mu that the UL2 paper describes
  (docs/objectives.md#where-the-noise-spans-fall): the same code as the
  `span_corruption` objective, so the R-denoiser mu=3 r=0.15 *is* T5 span corruption.
- S-denoiser: Wang et al.'s concatenated prefix LM (`prefix_lm`: split uniform in [1, L),
  no padding) by default; `s_objective = "t5_prefix_lm"` uses T5's unconcatenated one,
  which is what the UL2 paper's appendix code calls.
- Every denoiser reads its own shard of the documents (document i goes to denoiser
  i mod 7), as the UL2 appendix's `ul2_objective` applies each denoiser to one shard of the
  dataset; so no document is seen by two denoisers in one pass. Set shard_documents=False
  to let every denoiser read all documents.
- Budget: every denoiser fills the same per-example budget B (626 in Wang et al.): its own
  lengths are those of its objective for B - m tokens, where m = mode_token_length is the
  mode token's length in ids (1 with the vocabulary trained here, which holds [NLU], [NLG]
  and [S2S] as single pieces), and the mode token makes up the rest. The mixture's lengths
  are the maxima over denoisers, with `concat` = B for the decoder row, so on the causal and
  prefix decoders nothing is padded beyond the one-token roundings of span corruption.

Worked example (budget 64, the embedded corpus and its SentencePiece vocabulary: [NLU] =
8003, [NLG] = 8004, [S2S] = 8005, <extra_id_0> = 8099): lengths per denoiser for 63 tokens
plus the mode token, (inputs, targets):

  r1 (52, 12)  r2 (53, 11)  x1 (32, 30)  x2 (32, 31)  x3 (53, 11)  x4 (32, 32)  s (<=63, <=62)
  mixture bounds: inputs 63, targets 62, row 64

and at Wang et al.'s 626: r1 (512, 114), r2 (524, 102), x1 (313, 313), x2 (313, 311),
x3 (531, 95, a single span: see below), x4 (314, 312), s (<=625, <=624).
"""
from __future__ import annotations

import dataclasses

import gin
import seqio

from objectax.models.registry import ConfigError
from objectax.objectives import registry

# UL2 paradigm tokens, prepended to the inputs to tell the model which denoiser made them.
MODE_TOKENS = ("[NLU]", "[NLG]", "[S2S]")


def mode_token_ids(vocabulary: seqio.Vocabulary, mode: str) -> tuple[int, ...]:
  """The ids of a UL2 mode token: one id in models trained here, its bytes under "byte".

  A user's T5 model has no such piece and gives several ids; that is still a consistent
  prefix, just a longer one.
  """
  if mode not in MODE_TOKENS:
    raise ConfigError(f"unknown mode token {mode!r}; valid choices: {', '.join(MODE_TOKENS)}")
  return tuple(vocabulary.encode(mode))


# (name, mode token, mean noise span length, noise density); (0, 0) marks the S-denoiser.
DEFAULT_DENOISERS = (
    ("r1", "[NLU]", 3.0, 0.15),
    ("r2", "[NLU]", 8.0, 0.15),
    ("x1", "[NLG]", 3.0, 0.5),
    ("x2", "[NLG]", 8.0, 0.5),
    ("x3", "[NLG]", 64.0, 0.15),
    ("x4", "[NLG]", 64.0, 0.5),
    ("s", "[S2S]", 0.0, 0.0),
)
S_OBJECTIVES = ("prefix_lm", "t5_prefix_lm")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Ul2Config:
  """UL2's mixture of denoisers; see the module docstring for the defaults' sources.

  Attributes:
    denoisers: (name, mode token, mean noise span length, noise density) per denoiser; a
      denoiser with span length 0 and density 0 is the S-denoiser (prefix LM).
    rates: mixing rate per denoiser (normalized by seqio); default equal.
    s_objective: the prefix LM of the S-denoiser: "prefix_lm" (Wang et al., concatenated)
      or "t5_prefix_lm" (T5, per document).
    mode_token_length: ids of budget reserved for the mode token (1 with our vocabulary).
    shard_documents: each denoiser reads its own shard of the documents (UL2's appendix).
  """
  denoisers: tuple = DEFAULT_DENOISERS
  rates: tuple = (1.0,) * 7
  s_objective: str = "prefix_lm"
  mode_token_length: int = 1
  shard_documents: bool = True

  def __post_init__(self):
    names = [d[0] for d in self.denoisers] if self.denoisers else []
    if not names:
      raise ConfigError("Ul2Config.denoisers is empty; give at least one "
                        "(name, mode, mean_span, density)")
    for d in self.denoisers:
      if len(d) != 4:
        raise ConfigError(f"Ul2Config.denoisers entry {d!r} must be (name, mode token, "
                          "mean noise span length, noise density)")
      name, mode, mu, r = d
      if mode not in MODE_TOKENS:
        raise ConfigError(f"Ul2Config denoiser {name!r}: unknown mode token {mode!r}; valid "
                          f"choices: {', '.join(MODE_TOKENS)}")
      if (mu, r) != (0, 0) and not (mu >= 1 and 0 < r < 1):
        raise ConfigError(f"Ul2Config denoiser {name!r}: need mean span >= 1 and 0 < density "
                          f"< 1 (or 0, 0 for the S-denoiser), got ({mu}, {r})")
    if len(set(names)) != len(names):
      raise ConfigError(f"Ul2Config.denoisers names must be unique, got {names}")
    if len(self.rates) != len(self.denoisers) or any(not x > 0 for x in self.rates):
      raise ConfigError(f"Ul2Config.rates must hold one positive rate per denoiser "
                        f"({len(self.denoisers)}), got {self.rates}")
    if self.s_objective not in S_OBJECTIVES:
      raise ConfigError(f"Ul2Config.s_objective {self.s_objective!r} is not a prefix LM; "
                        f"valid choices: {', '.join(S_OBJECTIVES)}")
    if self.mode_token_length < 1:
      raise ConfigError(f"Ul2Config.mode_token_length must be >= 1, got {self.mode_token_length}")


def _denoiser_objective(cfg: Ul2Config, mu: float, r: float):
  """(objective, its config) for one denoiser."""
  if (mu, r) == (0, 0):
    obj = registry.get(cfg.s_objective)
    return obj, obj.config_cls()
  obj = registry.get("span_corruption")
  # One span allowed, as T5's and UL2's code: mu=64 at r=0.15 makes one span per chunk of
  # fewer than about 640 tokens (UL2 trains at inputs 512).
  return obj, obj.config_cls(noise_density=float(r), mean_noise_span_length=float(mu),
                             min_noise_spans=1)


def _component_lengths(cfg: Ul2Config, sequence_length: int):
  """[(name, mode, objective, objective cfg, its lengths for budget - m)] per denoiser."""
  m = cfg.mode_token_length
  out = []
  for name, mode, mu, r in cfg.denoisers:
    obj, obj_cfg = _denoiser_objective(cfg, mu, r)
    try:
      lengths_k = obj.lengths(obj_cfg, sequence_length - m)
    except ConfigError as e:
      raise ConfigError(f"ul2 denoiser {name!r} ({mode}, mu={mu}, r={r}) with a {m}-id mode "
                        f"token: {e}") from None
    out.append((name, mode, obj, obj_cfg, lengths_k))
  return out


def lengths(cfg: Ul2Config, sequence_length: int) -> registry.TaskLengths:
  """Bounds over all denoisers; the decoder row is the budget (see the module docstring)."""
  m = cfg.mode_token_length
  parts = _component_lengths(cfg, sequence_length)
  return registry.TaskLengths(
      raw=max(p[4].raw for p in parts),
      inputs=max(p[4].inputs + m for p in parts),
      targets=max(p[4].targets for p in parts),
      concat=sequence_length, exact=False)


def mixture(cfg: Ul2Config, sequence_length: int,
            vocabulary: seqio.Vocabulary | None) -> list[registry.MixtureComponent]:
  """One MixtureComponent per denoiser, its mode token's ids prepended to the inputs.

  With `vocabulary` None the ids are looked up in the task's own vocabulary when its
  dataset is built (the built-in tasks are registered at import, before any is chosen).
  """
  parts = _component_lengths(cfg, sequence_length)
  components = []
  for index, ((name, mode, obj, obj_cfg, lengths_k), rate) in enumerate(zip(parts, cfg.rates)):
    ids = () if vocabulary is None else check_mode_token(vocabulary, mode, cfg.mode_token_length)
    components.append(registry.MixtureComponent(
        name=name, objective=obj, cfg=obj_cfg, lengths=lengths_k, rate=float(rate),
        inputs_prefix=ids, mode=mode, mode_token_length=cfg.mode_token_length,
        shard=(index, len(parts)) if cfg.shard_documents else None))
  return components


def check_mode_token(vocabulary: seqio.Vocabulary, mode: str, reserved: int) -> tuple[int, ...]:
  """The mode token's ids, checked to fit the `reserved` ids of the budget."""
  ids = mode_token_ids(vocabulary, mode)
  if len(ids) > reserved:
    raise ConfigError(
        f"mode token {mode} is {len(ids)} ids in vocabulary {vocabulary}, but "
        f"Ul2Config.mode_token_length reserves {reserved}; bind "
        f"Ul2Config.mode_token_length={len(ids)}")
  return tuple(int(i) for i in ids)


OBJECTIVE = registry.register(registry.Objective(
    name="ul2",
    fills_spans=True,
    config_cls=Ul2Config,
    preprocess=None,
    mixture=mixture,
    features=("inputs", "targets"),
    lengths=lengths,
    description="UL2 mixture of denoisers: 2 R + 4 X span corruptions and S prefix LM, "
                "each with its mode token, as a seqio Mixture",
))
