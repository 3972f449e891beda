"""MFU accounting: the peak table, the CPU probe, and the figure every log line carries."""
import math

import jax

from objectax.launch import mfu


def test_peak_table_matches_device_kinds():
  assert mfu.chip_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert mfu.chip_peak_flops("NVIDIA H200") == 989e12
  assert mfu.chip_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
  assert mfu.chip_peak_flops("TPU v4") == 275e12
  assert mfu.chip_peak_flops("TPU v5 lite") == 197e12
  assert mfu.chip_peak_flops("TPU v5p") == 459e12
  assert mfu.chip_peak_flops("TPU v6 lite") == 918e12
  assert mfu.chip_peak_flops("Some Future Chip") is None


def test_cpu_peak_is_measured_and_mfu_is_the_ratio():
  peak, source = mfu.run_peak_flops(jax.devices())
  assert "measured" in source and math.isfinite(peak)
  # A 2-core laptop to a large server: between 1 GFLOP/s and 100 TFLOP/s of float32 matmul.
  assert 1e9 < peak < 1e14
  assert mfu.mfu(1000.0, 6e6, 1e10) == 0.6
