"""SpacTor (Ye et al. 2024, arXiv 2401.13160; docs/objectives.md#spactor):
the data side.

The examples are exactly span corruption's (objectives/span_corruption.py: r=0.15,
mu=3; 512/114 at a 626 budget). The rest is model side (models/rtd.py,
`model_objective="spactor"`): for the first `tau` steps, `mask_rate` of the ordinary input
tokens are masked, a generator sharing the embeddings fills them in, the encoder's RTD
head labels each input token original or replaced, and the loss is
SC + mlm_weight * MLM + rtd_weight * RTD; from step tau on, plain span corruption.

Only the paper's abstract was readable when this was written, so
tau, the weights and the generator size are gin settings whose defaults are ours: ELECTRA's
weights (1, 50) and generator size (1/4), ELECTRA's 15% masking, tau = 120,000 steps.
"""
from __future__ import annotations

import dataclasses

import gin

from objectax.objectives import registry
from objectax.objectives import span_corruption


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SpactorConfig(span_corruption.SpanCorruptionConfig):
  """Span corruption's settings plus SpacTor's hybrid stage.

  Attributes:
    tau: steps trained with the hybrid loss; from step tau on, span corruption alone
      (0: never hybrid, exactly span_corruption).
    mask_rate: fraction of the ordinary encoder input tokens the generator refills.
    generator_fraction: generator width, heads and MLP as a fraction of the model's.
    mlm_weight: weight of the generator's MLM loss.
    rtd_weight: weight of the replaced-token-detection loss.
  """
  tau: int = 120_000
  mask_rate: float = 0.15
  generator_fraction: float = 0.25
  mlm_weight: float = 1.0
  rtd_weight: float = 50.0

  def __post_init__(self):
    super().__post_init__()
    registry.check_fields(self, "count", "tau")
    registry.check_fields(self, "fraction", "mask_rate", "generator_fraction")
    registry.check_fields(self, "weight", "mlm_weight", "rtd_weight")


OBJECTIVE = registry.register(registry.Objective(
    name="spactor",
    fills_spans=True,
    config_cls=SpactorConfig,
    preprocess=span_corruption.preprocess,
    features=("inputs", "targets"),
    lengths=span_corruption.lengths,
    description="SpacTor: span corruption + generator MLM + replaced-token detection for "
                "tau steps, then span corruption",
    model_objective="spactor",
))
