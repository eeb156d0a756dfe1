"""Defaults and choices that the CLI parser offers and the modules behind it use.

They live here, in a module that imports nothing, so building the parser (`ppokit --help`, a
mistyped flag) does not import NumPy or matplotlib through plot.py and bench.py.
"""

# ppokit plot: the metrics.csv column drawn by default, and the bands over seeds.
DEFAULT_METRIC = "charts/episode_return"
BANDS = ("minmax", "std", "none")

# ppokit bench learning: the MuJoCo v5 presets benchmarked by default.
MUJOCO_TASKS = ("halfcheetah", "hopper", "walker2d", "ant", "humanoid", "invertedpendulum")
