"""The device mesh (DESIGN "Conventions: Devices"): batches sharded over axis 'data', parameters replicated.

Shared by training and evaluation (neither imports the other). The axis is Auto (`jax.make_mesh`
defaults to Explicit in jax 0.10): the train step relies on jit inserting the gradient all-reduce.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from overfeat_jax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """One 1-D mesh over `devices` (default: all devices of all processes) with axis 'data'."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Arrays split along their leading (batch) axis over the 'data' axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Arrays held whole on every device (parameters, optimizer state, rng keys)."""
  return NamedSharding(mesh, P())


def check_batch_divisible(global_batch_size: int, mesh: Mesh, key: str = "input.batch_size") -> int:
  """Checks that a global batch splits evenly; returns the per-process (host-local) batch size.

  Args:
    global_batch_size: the batch over all devices and processes.
    key: the config key it comes from, for the message.
  Raises:
    ConfigError: `global_batch_size` is not a positive multiple of the device count (or of the
      process count); the message names the key and both numbers.
  """
  num_devices = mesh.devices.size
  if global_batch_size < 1 or global_batch_size % num_devices:
    raise ConfigError(f"config.{key}={global_batch_size} is not divisible by the number of devices "
                      f"({num_devices}); choose a multiple of {num_devices}")
  process_count = jax.process_count()
  if global_batch_size % process_count:
    raise ConfigError(f"config.{key}={global_batch_size} is not divisible by the number of processes "
                      f"({process_count})")
  return global_batch_size // process_count


def to_global(local_batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global jax arrays sharded on axis 0 over the mesh.

  Args:
    local_batch: this process's rows, e.g. {'image': [B_host, S, S, 3], 'label': [B_host]}.
  Returns:
    The same keys as global arrays of leading size `B_host * process_count`.
  """
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)
