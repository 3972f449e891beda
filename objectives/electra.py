"""ELECTRA replaced-token detection (Clark et al. 2020; docs/objectives.md#electra): the data side.

The examples are BERT MLM's (objectives/bert_mlm.py: documents + EOS concatenated into
chunks of the token budget, position-aligned inputs and targets) with ELECTRA's masking,
`pretrain_helpers.mask` of google-research/electra: 15% of the tokens are selected
(mask_prob 0.15; 0.25 for ELECTRA-large), 85% of them become [MASK] and 15% stay as they
were; there is no random-token case. The generator, its samples, the discriminator and
the two weighted losses are the model side: models/rtd.py (`model_objective="electra"`).

Defaults: the generator is 1/4 of the discriminator's width (ELECTRA-small; 1/3 for base),
loss = 1.0 * MLM + 50.0 * RTD (configure_pretraining.py: gen_weight, disc_weight).
"""
from __future__ import annotations

import dataclasses

import gin

from objectax.objectives import bert_mlm
from objectax.objectives import registry


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ElectraConfig(bert_mlm.BertMLMConfig):
  """ELECTRA's masking (the BERT MLM fields, other defaults) and its model-side settings.

  Attributes:
    generator_fraction: generator width, heads and MLP as a fraction of the
      discriminator's, in (0, 1] (ELECTRA's generator_hidden_size).
    generator_weight: weight of the generator's MLM loss (ELECTRA's gen_weight).
    discriminator_weight: weight of the replaced-token-detection loss (disc_weight).
  """
  masked_lm_prob: float = 0.15
  mask_fraction: float = 0.85
  random_fraction: float = 0.0
  generator_fraction: float = 0.25
  generator_weight: float = 1.0
  discriminator_weight: float = 50.0

  def __post_init__(self):
    super().__post_init__()
    registry.check_fields(self, "fraction", "generator_fraction")
    registry.check_fields(self, "weight", "generator_weight", "discriminator_weight")


OBJECTIVE = registry.register(registry.Objective(
    name="electra",
    config_cls=ElectraConfig,
    preprocess=bert_mlm.preprocess,
    features=("inputs", "targets"),
    # ELECTRA's discriminator is a bidirectional encoder labelling every token.
    aligned=True,
    lengths=bert_mlm.lengths,
    description="ELECTRA: generator MLM (15%, 85% mask/15% kept) + replaced-token "
                "detection at every token, 1:50",
    model_objective="electra",
))
