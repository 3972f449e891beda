"""Exact span-corruption length arithmetic against T5's random_spans_helper."""
import pytest

from objectax.models.registry import ConfigError
from objectax.objectives import lengths

# T5's lengths table (docs/objectives.md#span-corruption): (inputs_length) x (noise_density,
# mean_noise_span_length) -> (raw, targets),
# the numbers of T5's `random_spans_helper`.
COLUMNS = [(0.15, 3), (0.15, 8), (0.15, 64), (0.5, 3), (0.5, 8), (0.5, 32), (0.5, 64),
           (0.15, 2), (0.15, 5), (0.15, 10), (0.25, 3), (0.10, 3)]
TABLE = {
    512: [(568, 114), (588, 100), (600, 92), (766, 512), (908, 512), (990, 512), (1006, 512),
          (552, 126), (581, 105), (591, 99), (614, 206), (548, 74)],
    256: [(284, 58), (293, 51), (299, 47), (382, 256), (454, 256), (494, 256), (502, 256),
          (276, 62), (290, 54), (295, 49), (306, 102), (273, 37)],
    128: [(141, 29), (146, 26), (149, 23), (190, 128), (226, 128), (246, 128), (250, 128),
          (138, 32), (145, 27), (147, 25), (152, 52), (136, 20)],
    64: [(70, 14), (73, 13), (74, 12), (94, 64), (112, 64), (122, 64), (124, 64),
         (68, 16), (72, 14), (73, 13), (76, 26), (68, 10)],
}
CELLS = [(inputs_length, density, mean, expected)
         for inputs_length, row in TABLE.items()
         for (density, mean), expected in zip(COLUMNS, row)]


def test_table_has_every_cell():
  assert len(CELLS) == 48


@pytest.mark.parametrize("inputs_length,density,mean,expected", CELLS)
def test_random_spans_lengths_matches_t5_table(inputs_length, density, mean, expected):
  assert lengths.random_spans_lengths(inputs_length, density, mean) == expected


def test_568_raw_tokens_make_85_noise_tokens_in_28_spans():
  counts = lengths.span_counts(568, 0.15, 3.0)
  assert (counts.num_noise, counts.num_spans, counts.inputs, counts.targets) == (85, 28, 512, 114)


def test_t5_density_half_hack_can_overstate_lengths():
  # T5 reports (990, 512) but 990 raw tokens give 511 + 511: its pipeline pads that cell.
  counts = lengths.span_counts(990, 0.5, 32.0)
  assert (counts.inputs, counts.targets) == (511, 511)
  with pytest.raises(ConfigError, match=r"must be one of \[513\]"):
    lengths.exact_raw_length(512, 512, 0.5, 32.0)
  # Where T5's numbers are exact, exact_raw_length agrees with them.
  assert lengths.exact_raw_length(512, 114, 0.15, 3.0) == 568
  assert lengths.exact_raw_length(512, 512, 0.5, 3.0) == 766


def test_wang_budget_626():
  assert lengths.span_corruption_lengths_for_budget(626, 0.15, 3.0) == (512, 114, 568)
  # Density 0.5 at budget 1024 lands on T5's round (512, 512) with its 766 raw tokens.
  assert lengths.span_corruption_lengths_for_budget(1024, 0.5, 3.0) == (512, 512, 766)


@pytest.mark.parametrize("density,mean", COLUMNS)
def test_budget_lengths_are_exact_maximal_and_valid(density, mean):
  minimum = lengths.span_corruption_min_budget(density, mean)
  for budget in range(minimum, minimum + 150, 7):
    inputs, targets, raw = lengths.span_corruption_lengths_for_budget(budget, density, mean)
    counts = lengths.span_counts(raw, density, mean)
    assert (counts.inputs, counts.targets) == (inputs, targets)
    assert inputs + targets <= budget
    assert counts.num_spans >= lengths.MIN_NOISE_SPANS
    # Maximal: no raw length gives inputs + 1 within the budget.
    bigger = [lengths.span_counts(r, density, mean)
              for r in lengths.raw_lengths_for_inputs(inputs + 1, density, mean)]
    assert all(c.inputs + c.targets > budget for c in bigger)


@pytest.mark.parametrize("density,mean", COLUMNS)
def test_min_budget_is_the_threshold(density, mean):
  minimum = lengths.span_corruption_min_budget(density, mean)
  lengths.span_corruption_lengths_for_budget(minimum, density, mean)
  lengths.span_corruption_lengths_for_budget(minimum + 1, density, mean)
  with pytest.raises(ConfigError, match=f"minimum token budget is {minimum}$"):
    lengths.span_corruption_lengths_for_budget(minimum - 1, density, mean)


def test_too_small_budget_is_a_one_line_config_error():
  with pytest.raises(ConfigError) as err:
    lengths.span_corruption_lengths_for_budget(30, 0.15, 3.0)
  assert "\n" not in str(err.value)
  assert "minimum token budget is 37" in str(err.value)
  with pytest.raises(ConfigError):
    lengths.span_corruption_lengths_for_budget(1, 0.15, 3.0)


def test_raw_lengths_for_inputs_is_contiguous_and_exact():
  for inputs_length in range(1, 400):
    raws = lengths.raw_lengths_for_inputs(inputs_length, 0.15, 3.0)
    assert len(raws) >= 1
    assert all(lengths.span_counts(r, 0.15, 3.0).inputs == inputs_length for r in raws)
    assert lengths.span_counts(raws[-1] + 1, 0.15, 3.0).inputs == inputs_length + 1
  assert lengths.raw_lengths_for_inputs(508, 0.15, 3.0) == range(563, 565)


@pytest.mark.parametrize("density,mean", [(0.0, 3.0), (1.0, 3.0), (-0.1, 3.0), (0.15, 0.5),
                                          (0.9, 1.0)])
def test_bad_span_params(density, mean):
  with pytest.raises(ConfigError):
    lengths.random_spans_lengths(512, density, mean)
