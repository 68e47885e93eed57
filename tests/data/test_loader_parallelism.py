"""Loader workers sized from the cores each local rank has (a starved GPU waits on data)."""

from __future__ import annotations

import logging

import pytest

from data_pipeline.data_config import DataConfig, loader_parallelism
from jicd import distributed as D
from trainer.config import load_config, resolve_config


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (4, 3), (16, 15), (64, 16)])
def test_one_core_is_left_to_the_training_process(cores: int, expected: int) -> None:
    assert loader_parallelism(cores) == expected


def test_cores_come_from_affinity_slurm_and_the_local_world_size(monkeypatch) -> None:
    monkeypatch.setattr(D.os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setattr(D, "_cgroup_cpu_quota", lambda: None)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert D.cpus_available() == 32 and D.cpus_per_local_rank() == 8
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")  # the task's share of a node
    assert D.cpus_available() == 16 and D.cpus_per_local_rank() == 4
    monkeypatch.setattr(D, "_cgroup_cpu_quota", lambda: 6)  # a container's CPU quota
    assert D.cpus_available() == 6
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert D.cpus_per_local_rank() == 1  # never 0


def test_an_unset_count_is_resolved_logged_and_dumped(monkeypatch, caplog) -> None:
    monkeypatch.setattr(D, "cpus_per_local_rank", lambda: 9)
    with caplog.at_level(logging.INFO):
        cfg = resolve_config(load_config(None), world_size=1)
    assert (cfg.data.num_workers, cfg.data.num_threads) == (8, 8)
    assert "9 core(s) for this rank -> data.num_workers=8" in caplog.text
    given = resolve_config(load_config(None, ["data.num_workers=3"]), world_size=1)
    assert (given.data.num_workers, given.data.num_threads) == (3, 8)


def test_loaders_built_without_resolution_size_themselves(monkeypatch) -> None:
    monkeypatch.setattr(D, "cpus_per_local_rank", lambda: 5)
    assert DataConfig().workers() == DataConfig().threads() == 4
    assert DataConfig(num_workers=0).workers() == 0
