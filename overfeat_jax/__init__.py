"""overfeat_jax: OverFeat and Faster R-CNN as pure JAX/Flax functions.

Importing it adds the XLA:CPU convolution flag of `overfeat_jax.cpu_flags` to $XLA_FLAGS when jax has
not started a backend yet (for notebooks as for the commands; never over the user's own setting of
that flag; OVERFEAT_JAX_CPU_FLAGS=0 turns it off).
"""

__version__ = "0.1.0"

from overfeat_jax import cpu_flags as _cpu_flags  # noqa: E402  (stdlib only; does not import jax)

_cpu_flags.apply_on_import()
