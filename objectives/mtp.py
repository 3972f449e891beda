"""Multi-token prediction (Gloeckle et al. 2024; docs/objectives.md#multi-token-prediction):
the data side.

The examples are full LM's (objectives/full_lm.py: documents + EOS concatenated and
chopped to the budget, every token a target). The n heads and their summed loss are the
model side: models/mtp.py (`model_objective="mtp"`), where head k predicts the token k
steps ahead within the same document.
"""
from __future__ import annotations

import dataclasses

import gin

from objectax.models.registry import ConfigError
from objectax.objectives import full_lm
from objectax.objectives import registry


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MtpConfig(full_lm.FullLMConfig):
  """Attributes:
    num_predicted_tokens: heads n; head k predicts x_{t+k} (Gloeckle et al.: n = 4).
    extra_head_weight: weight of each head k >= 2 (1.0: Gloeckle's plain sum; DeepSeek-V3's
      single extra module uses 0.3, then 0.1).
  """
  num_predicted_tokens: int = 4
  extra_head_weight: float = 1.0

  def __post_init__(self):
    registry.check_fields(self, "count", "num_predicted_tokens")
    registry.check_fields(self, "weight", "extra_head_weight")
    if self.num_predicted_tokens < 1:
      raise ConfigError(f"MtpConfig.num_predicted_tokens must be >= 1, got "
                        f"{self.num_predicted_tokens}")


OBJECTIVE = registry.register(registry.Objective(
    name="mtp",
    config_cls=MtpConfig,
    preprocess=full_lm.preprocess,
    features=("targets",),
    lengths=full_lm.lengths,
    description="multi-token prediction: full LM with n heads, head k predicts the token k "
                "ahead (n=4)",
    model_objective="mtp",
))
