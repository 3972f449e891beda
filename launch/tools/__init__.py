"""Tools around a configured run that do not train it: info, plan, inspect, benchmarks."""
