"""asyncflow's benchmarks: each scenario against its plain-Python baseline, in the same process."""
