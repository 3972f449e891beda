"""gin/experiments/: every file is a valid experiment named after its grid coordinates."""
import glob
import os

import pytest

from objectax.launch import configure, config
from objectax.models import registry as arch_registry
from objectax.objectives import registry as objective_registry

GIN_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "gin")
# Every experiment file; grid files (`objectax ablate`, tests/launch/test_ablate.py) bind
# Grid.* and are not experiments.
FILES = [f for f in sorted(glob.glob(os.path.join(GIN_DIR, "experiments", "**", "*.gin"),
                                     recursive=True))
         if "Grid." not in open(f, encoding="utf-8").read()]
WANG = [f for f in FILES if os.sep + "wang2022" + os.sep in f]


def test_wang_grid_has_six_cells_each_at_two_scales():
  names = [os.path.basename(f)[:-4] for f in WANG]
  cells = {n.replace("_tiny_pydocs", "").replace("_wang_xxl_c4", "") for n in names}
  assert cells == {"causal_decoder_full_lm", "causal_decoder_span_corruption",
                   "prefix_decoder_prefix_lm", "prefix_decoder_span_corruption",
                   "encoder_decoder_prefix_lm", "encoder_decoder_span_corruption"}
  assert len(WANG) == 12 and sum(n.endswith("_tiny_pydocs") for n in names) == 6


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, GIN_DIR))
def test_experiment_file_parses_to_its_own_name_and_the_papers_lengths(path):
  configure.parse([path], [])
  exp = config.Experiment()
  assert exp.name == os.path.basename(path)[:-4]
  arch_registry.get(exp.arch)
  obj = objective_registry.get(exp.objective)
  arch_registry.check_supports(exp.arch, obj)
  if path in WANG:
    lengths = obj.lengths(obj.config_cls(), exp.sequence_length)
    assert exp.sequence_length == 626 and lengths.budget == 626
    if exp.objective == "span_corruption":  # Wang et al.'s "MLM": inputs 512, targets 114
      assert (lengths.inputs, lengths.targets) == (512, 114)
