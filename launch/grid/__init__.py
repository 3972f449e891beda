"""Grids of runs: `objectax ablate` (train, evaluate, report) and the papers' published numbers."""
