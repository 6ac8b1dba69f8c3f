"""The XLA:CPU convolution flag is added only where it is known, and never over the user's choice."""

from __future__ import annotations

import importlib.metadata
import os

from overfeat_jax import cpu_flags


def test_flag_added_for_jaxlib_0_10_only(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.10.2")
  assert cpu_flags.use_fast_cpu_convolutions()
  assert os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                     + cpu_flags.CPU_CONV_FLAG)
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.11.0")
  assert not cpu_flags.use_fast_cpu_convolutions()
  assert os.environ["XLA_FLAGS"] == ""


def test_users_own_setting_is_kept(monkeypatch):
  mine = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"
  monkeypatch.setenv("XLA_FLAGS", mine)
  assert not cpu_flags.use_fast_cpu_convolutions()
  assert os.environ["XLA_FLAGS"] == mine
