"""Evaluate a trained model, from a checkout: `overfeat_jax.evaluate` (its docstring says everything).

  python evaluate.py --config configs/quickstart.py --workdir workdirs/quickstart [--pictures N]

The same as `python -m overfeat_jax.evaluate ...` and the installed `overfeat-evaluate`.
"""

if __name__ == "__main__":
  from overfeat_jax import evaluate  # light (absl); Ctrl-C handling starts first in `command`, then jax

  evaluate.command()
