"""The rank/env module: half-set torchrun environments fail loudly; one process is a group."""

from __future__ import annotations

import pytest

from jicd import distributed as D


def clear_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset torchrun's variables; monkeypatch removes whatever the test sets afterwards."""
    for var in D.TORCHRUN_VARS:
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)


def test_half_set_torchrun_env_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_torchrun_env(monkeypatch)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing"):
        D.read_env()


def test_single_process_becomes_a_one_rank_group(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_torchrun_env(monkeypatch)
    info = D.init_distributed(timeout_s=30)
    try:
        assert (info.rank, info.world_size, info.backend) == (0, 1, "gloo")
        assert D.is_main() and D.get_world_size() == 1
        assert D.any_rank(True, False) == (True, False)
    finally:
        D.cleanup()
    assert D.get_world_size() == 1
