"""The teaching lab's computations (teaching) and the runs behind its presets (presets)."""
