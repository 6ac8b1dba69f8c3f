"""Train the task of a config, from a checkout: `overfeat_jax.train` (its docstring says everything).

  python train.py --config configs/quickstart.py --workdir workdirs/quickstart [--config.key=value ...]

The same as `python -m overfeat_jax.train ...` and the installed `overfeat-train`.
"""

if __name__ == "__main__":
  from overfeat_jax import train  # light (absl); Ctrl-C handling starts first in `command`, then jax

  train.command()
