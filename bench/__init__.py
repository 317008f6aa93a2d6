"""Side-by-side benchmarks of the engine's speed and accuracy claims; `python bench/run.py` runs them all."""
