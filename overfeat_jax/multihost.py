"""Several processes as one run (README "Multi-host"): when and how train.py / evaluate.py start jax's
distributed system, from `config.distributed`.

- "never" (the default): no call; one process (`jax.process_count() == 1`), as on a laptop or in CI.
- "auto": `jax.distributed.initialize()` with no arguments; jax takes the coordinator, the process
  count and this process's id from the cluster (Cloud TPU, SLURM, Open MPI, Kubernetes), and the
  coordinator from $JAX_COORDINATOR_ADDRESS (or the port from $JAX_COORDINATOR_PORT) where set.
- "explicit": `jax.distributed.initialize(coordinator_address, num_processes, process_id)` from the
  three config keys (a plain multi-node GPU cluster; or several processes on one machine).

Our code reads no environment variable for this: jax itself reads the ones above (and
$JAX_LOCAL_DEVICE_IDS, $JAX_COORDINATOR_BIND_ADDRESS); on CPU it connects the processes with gloo.

jax's preemption service is switched off before the call: it would take SIGTERM from the process
(`overfeat_jax.stop_signals`, installed first) and keep it to itself. SIGTERM and Ctrl-C thus act as
in one process, and the training loop makes the processes agree to stop (`training.loop`).
"""

from __future__ import annotations

import ml_collections

from overfeat_jax.config import validate_config
from overfeat_jax.errors import DistributedError, reason


def initialize(config: ml_collections.ConfigDict) -> bool:
  """Starts jax's distributed system as config.distributed.initialize says; True if it did.

  Call it before any other jax call (jax refuses once a backend is running). Validates `config`
  first, so that a bad config fails at once rather than after waiting for the other processes.
  Raises:
    ConfigError: see `validate_config` (e.g. "explicit" without the coordinator).
    DistributedError: jax could not start it (no cluster found by "auto", a coordinator that cannot
      be reached or bound, peers that never came), or a jax backend already runs in this process.
  """
  import jax  # Not at import time: the CLIs set XLA_FLAGS before jax is first imported.

  validate_config(config)
  d = config.distributed
  if d.initialize == "never":
    return False
  kwargs = {}
  if d.initialize == "explicit":
    kwargs = {"coordinator_address": d.coordinator_address, "num_processes": int(d.num_processes),
              "process_id": int(d.process_id)}
  jax.config.update("jax_enable_preemption_service", False)
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError, TypeError) as e:  # jax's errors, XlaRuntimeError among them
    hint = ("; 'auto' needs a cluster jax recognises (Cloud TPU, SLURM, Open MPI, Kubernetes): elsewhere "
            "set distributed.initialize='explicit' with distributed.coordinator_address, "
            "distributed.num_processes and distributed.process_id" if d.initialize == "auto" else "")
    raise DistributedError(f"cannot start the distributed run (distributed.initialize="
                           f"{d.initialize!r}{_described(kwargs)}): {reason(e)}{hint}") from e
  return True


def _described(kwargs: dict[str, object]) -> str:
  return "".join(f", {key}={value!r}" for key, value in kwargs.items())


def gather_bytes(data: bytes) -> list[bytes]:
  """Every process's `data`, in process order (one collective: all processes must call it).

  For small host-side results that differ in size between processes (e.g. the detections of each
  process's share of an evaluation): the lengths are gathered first, then the bytes padded to the
  longest. With one process, [data] without any collective.
  """
  import jax  # Not at import time (see `initialize`).
  import numpy as np
  from jax.experimental import multihost_utils

  if jax.process_count() == 1:
    return [data]
  lengths = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int64)))  # [P, 1]
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(data)] = np.frombuffer(data, np.uint8)
  gathered = np.asarray(multihost_utils.process_allgather(padded))  # [P, longest]
  return [gathered[p, :int(n)].tobytes() for p, n in enumerate(lengths[:, 0])]
