"""overfeat_jax: OverFeat and Faster R-CNN as pure JAX/Flax functions."""

__version__ = "0.1.0"
