"""ProcMem: an offline memory-retention benchmark with exact ground truth.

Procedural worlds (world.py) are seen through a camera crop that follows exact,
patch-aligned trajectories (trajectories.py), so every revisited view has an exact
ground truth; metrics.py scores frames against it, procmem.py runs the benchmark,
and model.py / train.py hold the tiny memory-conditioned world model that is
scored. See docs/memory.md. torch is imported only where a model runs.
"""
