"""Input fast paths: device prefetch (exact at checkpoints), data-wait accounting,
synchronous vs asynchronous checkpoints, and `objectax bench input`."""
import json
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from objectax.models.registry import ConfigError
from objectax.launch import config, configure, input_pipeline, main, train
from objectax.launch.tools import bench_input

FAST = ["TrainConfig.batch_size=4", "TrainConfig.eval_batches=1", "TrainConfig.log_every=1",
        "Experiment.sequence_length=64"]


def _sharding():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


class _CountingStream:
  """Batch k (1-based) is filled with k; records how many were pulled and when saved."""

  def __init__(self, fail_at: int = 0):
    self.pulled, self.saved, self.fail_at = 0, [], fail_at

  def __next__(self):
    if self.pulled + 1 == self.fail_at:
      raise ValueError("broken record")
    self.pulled += 1
    return {"x": np.full((2, 3), self.pulled, np.int32)}

  def save(self, path):
    self.saved.append((path, self.pulled))


def _settle(stream, expected, timeout=10.0):
  """Waits until `expected` batches were pulled, then a little more: never more than that."""
  deadline = time.time() + timeout
  while stream.pulled < expected and time.time() < deadline:
    time.sleep(0.005)
  time.sleep(0.03)
  assert stream.pulled == expected


def test_prefetcher_reads_ahead_but_never_past_a_checkpoint_step():
  stream, depth, stop = _CountingStream(), 2, 11
  held = lambda step: step % 4 == 0
  p = input_pipeline.DevicePrefetcher(stream, _sharding(), depth=depth, start=0, stop=stop,
                                      hold_after=held)
  try:
    _settle(stream, depth)  # built ahead before the first step asks
    for step in range(1, stop + 1):
      batch = next(p)
      assert isinstance(batch["x"], jax.Array) and int(batch["x"][0, 0]) == step
      next_hold = next(b for b in range(step, stop + 1) if held(b) or b == stop)
      if held(step):
        _settle(stream, step)  # drained: the state saved now is after exactly `step` batches
        p.save(f"ckpt_{step}")
        assert stream.saved[-1] == (f"ckpt_{step}", step)
        next_hold = next(b for b in range(step + 1, stop + 1) if held(b) or b == stop)
      elif step == 1:
        _settle(stream, 1 + depth)
        with pytest.raises(RuntimeError, match="read 2 batches past step 1"):
          p.save("not_a_checkpoint_step")
      _settle(stream, min(step + depth, next_hold))
    with pytest.raises(StopIteration):
      next(p)
    assert stream.pulled == stop
  finally:
    p.close()


def test_prefetcher_without_depth_pulls_on_demand_and_errors_reach_the_caller():
  stream = _CountingStream()
  p = input_pipeline.DevicePrefetcher(stream, _sharding(), depth=0, start=5, stop=8)
  for step in (6, 7, 8):
    assert int(next(p)["x"][0, 0]) == step - 5 and stream.pulled == step - 5
  with pytest.raises(StopIteration):
    next(p)
  broken = _CountingStream(fail_at=3)
  p = input_pipeline.DevicePrefetcher(broken, _sharding(), depth=2, start=0, stop=10)
  try:
    assert [int(next(p)["x"][0, 0]) for _ in range(2)] == [1, 2]
    with pytest.raises(ValueError, match="broken record"):
      next(p)
  finally:
    p.close()


def test_wait_clock_excludes_the_first_step_and_non_step_time():
  clock = train.WaitClock()
  clock.step_begins(first=True)
  with clock.waiting():
    time.sleep(0.2)  # the first step (compilation) counts nowhere
  assert clock.interval_fraction() is None
  for _ in range(2):
    clock.step_begins(first=False)
    with clock.waiting():
      time.sleep(0.05)
    time.sleep(0.05)
    with clock.not_a_step():
      time.sleep(0.3)  # a checkpoint save or an evaluation: not step time
  clock.step_begins(first=False)
  assert clock.run_fraction() == pytest.approx(0.5, abs=0.1)
  assert clock.seconds_per_step() == pytest.approx(0.1, abs=0.05)
  assert clock.interval_fraction() == pytest.approx(0.5, abs=0.1)


def test_negative_prefetch_is_a_one_line_config_error(capsys):
  with pytest.raises(ConfigError, match=r"TrainConfig.prefetch_batches=-1 must be >= 0"):
    config.TrainConfig(prefetch_batches=-1)
  assert main.run(["train", "--quiet", "--gin.TrainConfig.prefetch_batches=-1"]) == 2
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert len(err) == 1 and "prefetch_batches=-1 must be >= 0" in err[0], err


def _train(workdir, *bindings, quiet=True):
  configure.parse(["run/quickstart.gin"], [*FAST, *bindings])
  return train.train(str(workdir), quiet=quiet)


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}, rows


def _restored(workdir, step):
  with ocp.CheckpointManager(workdir / "checkpoints", item_names=("state", "data")) as m:
    r = m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                data=ocp.args.JsonRestore()))
  return jax.tree.leaves(jax.device_get(r.state)), dict(r.data)


COMMON = ["TrainConfig.steps=10", "TrainConfig.warmup_steps=9", "TrainConfig.checkpoint_every=4",
          "TrainConfig.eval_every=10"]
RUNS = {"fast": ["TrainConfig.prefetch_batches=2", "TrainConfig.async_checkpoints=True"],
        "plain": ["TrainConfig.prefetch_batches=0", "TrainConfig.async_checkpoints=False"]}


def _crash_after_step_4_and_resume(wd, *bindings):
  """Drops the checkpoints of steps 8 and 10, resumes, returns the losses of steps 5-10."""
  for step in ("8", "10"):
    shutil.rmtree(wd / "checkpoints" / step)
    shutil.rmtree(wd / "data_iterators" / step)
  resumed = _train(wd, *COMMON, *bindings)
  assert (resumed["start_step"], resumed["data_resume"]) == (4, "iterator_state")
  again, _ = _losses(wd)
  return [again[s] for s in range(5, 11)]


@pytest.mark.e2e
@pytest.mark.slow
def test_prefetch_and_sync_checkpoints_change_nothing_and_resume_exactly(
    tfds_data_dir, tmp_path, capsys):
  """Prefetch 2 with async saves vs no prefetch with sync saves: the same losses, bitwise the
  same checkpoints. The prefetching run resumed from step 4 (its saved iterator state, which
  prefetch must keep exact) lands on the uninterrupted losses; the sync run's checkpoints
  being bitwise the same, its resume is the same computation (run with --slow below)."""
  common, runs = COMMON, RUNS
  summaries = {name: _train(tmp_path / name, *common, *b, quiet=name == "fast")
               for name, b in runs.items()}
  done = [l for l in capsys.readouterr().out.splitlines() if "done:" in l]
  assert len(done) == 1 and " of step time" in done[0] and "data wait " in done[0], done
  fast, fast_rows = _losses(tmp_path / "fast")
  plain, _ = _losses(tmp_path / "plain")
  assert sorted(fast) == list(range(1, 11))
  np.testing.assert_allclose([fast[s] for s in fast], [plain[s] for s in fast], rtol=1e-5)

  # Data-wait fraction on every log line and for the whole run, a fraction of step time.
  waits = [r["data_wait_fraction"] for r in fast_rows if "loss" in r]
  assert len(waits) == 10 and all(0 <= w <= 1 for w in waits)
  for s in summaries.values():
    assert 0 <= s["data_wait_fraction"] <= 1 and s["seconds_per_step"] > 0

  for step in (4, 8, 10):
    (a, a_data), (b, b_data) = (_restored(tmp_path / name, step) for name in ("fast", "plain"))
    assert a_data == b_data and a_data["batches_consumed"] == step
    assert len(a) == len(b) > 3
    for x, y in zip(a, b):
      assert x.dtype == y.dtype
      np.testing.assert_array_equal(x, y)

  np.testing.assert_allclose(_crash_after_step_4_and_resume(tmp_path / "fast", *runs["fast"]),
                             [fast[s] for s in range(5, 11)], rtol=1e-5)


@pytest.mark.e2e
@pytest.mark.slow
def test_sync_checkpoints_resume_to_the_async_runs_losses(tfds_data_dir, tmp_path):
  _train(tmp_path / "fast", *COMMON, *RUNS["fast"])
  _train(tmp_path / "plain", *COMMON, *RUNS["plain"])
  fast, _ = _losses(tmp_path / "fast")
  np.testing.assert_allclose(_crash_after_step_4_and_resume(tmp_path / "plain", *RUNS["plain"]),
                             [fast[s] for s in range(5, 11)], rtol=1e-5)


@pytest.mark.e2e
def test_bench_input_prints_pipeline_and_training_figures(tfds_data_dir):
  lines = []
  r = bench_input.run(["run/quickstart.gin"], FAST, steps=3, seconds=0.3, out=lines.append)
  assert r.experiment == "causal_decoder_full_lm_tiny_pydocs" and r.tokens_per_batch == 4 * 64
  assert r.pipeline_batches_per_second > 0
  assert r.pipeline_tokens_per_second == pytest.approx(r.pipeline_batches_per_second * 256)
  assert 0 <= r.data_wait_fraction <= 1 and r.seconds_per_step > 0 and r.steps == 3
  text = "\n".join(lines)
  for needle in ("pipeline batches/s", "pipeline tokens/s", "padding fraction",
                 "useful tokens/s", "step time", "training tokens/s", "data-wait fraction",
                 "pipeline headroom"):
    assert sum(l.strip().startswith(needle) for l in lines) == 1, (needle, text)
  wait_line = next(l for l in lines if "data-wait fraction" in l)
  assert f"{r.data_wait_fraction:.2%}" in wait_line
  # Full LM chops the concatenated documents to the row: packed rows have no padding.
  assert r.pipeline_padding_fraction == 0
  assert r.pipeline_useful_tokens_per_second == r.pipeline_tokens_per_second
  assert "padding fraction        0.0% of the tokens" in text, text
  with pytest.raises(ConfigError, match="--steps=1 must be >= 2"):
    bench_input.run(["run/quickstart.gin"], FAST, steps=1)


@pytest.mark.e2e
def test_bench_input_padding_table(tfds_data_dir, tmp_path, monkeypatch):
  """A few pairs at Wang et al.'s budget: full LM packs without padding, PEGASUS (one
  example per document, about two thirds of a decoder row when full) does not, the encoder-decoder's streams are
  counted apart, and a pair that cannot run is a refused row, not an error."""
  lines, path = [], tmp_path / "padding.json"
  pairs = [("causal_decoder", "full_lm"), ("prefix_decoder", "pegasus_gsg"),
           ("encoder_decoder", "span_corruption"), ("encoder_decoder", "full_lm")]
  rows = bench_input.padding_table(pairs=pairs, batches=3, json_path=str(path),
                                   out=lines.append)
  text = "\n".join(lines)
  by_pair = {(r.arch, r.objective): r for r in rows}
  full, prefix, ed, refused = (by_pair[p] for p in pairs)
  assert full.lengths == {"decoder": 626} and full.padding == 0 and full.batches == 3
  assert 0.05 < prefix.padding < 1, prefix
  assert ed.lengths == {"encoder": 512, "decoder": 114}
  assert set(ed.stream_padding) == {"encoder", "decoder"}
  assert "does not support architecture 'encoder_decoder'" in refused.refused
  assert sum("[" in l and "] " in l for l in lines) == 4  # a progress line per pair
  table = text.split("model streams")[1].splitlines()[1:5]
  assert table[0].startswith("prefix_decoder") and table[-1].startswith("encoder_decoder  full_lm")
  assert "encoder 512 + decoder 114" in text and "refused: objective 'full_lm'" in text
  saved = json.loads(path.read_text())
  assert [r["objective"] for r in saved["rows"]] == [p[1] for p in pairs]
  assert saved["rows"][3]["padding"] is None and saved["batches"] == 3
  # Every pair the listing shows runnable, and only those.
  every = bench_input.table_pairs()
  assert ("encoder_only", "bert_mlm") in every and ("encoder_only", "full_lm") not in every
  assert ("encoder_decoder", "spactor") in every and ("causal_decoder", "mtp") in every

  # The CLI flag: the table, with the gin flags and --json passed through.
  seen = {}
  monkeypatch.setattr(bench_input, "padding_table",
                      lambda files, bindings, json_path: seen.update(
                          files=files, bindings=bindings, json_path=json_path))
  assert main.run(["bench", "input", "--padding_table", "--json", "t.json",
                   "--gin.Experiment.pack=False"]) == 0
  assert seen == {"files": [], "bindings": ["Experiment.pack=False"], "json_path": "t.json"}
