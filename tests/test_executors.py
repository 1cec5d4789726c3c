"""Executors run real tasks: the local spawn pool, inline, and submitit's local engine (when installed)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from batchscale.empirical.executors import (
    ExecutorConfig,
    make_executor,
    map_unordered,
    probe,
    require_extra,
)
from batchscale.errors import InputError


def test_inline_runs_in_this_process():
    with make_executor(ExecutorConfig(name="inline")) as executor:
        out = dict(map_unordered(executor, probe, ["a", "b"]))
    assert [out[i]["payload"] for i in (0, 1)] == ["a", "b"]
    assert {r["pid"] for r in out.values()} == {os.getpid()}


def test_local_pool_uses_other_processes_with_one_thread():
    with make_executor(ExecutorConfig(name="local", workers=2, threads=1)) as executor:
        out = dict(map_unordered(executor, probe, list(range(5)), timeout=0.5))
    assert sorted(out) == list(range(5))
    assert all(out[i]["payload"] == i for i in out)
    assert os.getpid() not in {r["pid"] for r in out.values()}
    assert {r["threads"] for r in out.values()} == {1}


def test_task_errors_reach_the_parent():
    with make_executor(ExecutorConfig(name="inline")) as executor:
        with pytest.raises(TypeError):
            list(map_unordered(executor, len, [3]))


@pytest.mark.parametrize(
    "config, words",
    [
        (ExecutorConfig(name="dask"), "unknown executor"),
        (ExecutorConfig(workers=0), "--workers"),
        (ExecutorConfig(threads=0), "threads"),
    ],
)
def test_bad_executor_configs(config, words):
    with pytest.raises(InputError, match=words):
        config.validate()


@pytest.mark.parametrize("name, extra", [("ray", "ray"), ("submitit", "slurm")])
def test_missing_extra_names_the_pip_extra(monkeypatch, name, extra):
    real_find_spec = importlib.util.find_spec
    fake = lambda m, *a: None if m == name else real_find_spec(m, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(InputError, match=rf"batchscale\[{extra}\]"):
        require_extra(name)


def test_submitit_local_engine_for_real(tmp_path):
    pytest.importorskip("submitit")
    config = ExecutorConfig(name="submitit", folder=str(tmp_path), options=(("cluster", "local"),))
    with make_executor(config) as executor:
        out = dict(map_unordered(executor, probe, ["x", "y", "z"], timeout=0.5))
    assert sorted(r["payload"] for r in out.values()) == ["x", "y", "z"]
    assert os.getpid() not in {r["pid"] for r in out.values()}
    assert any((tmp_path / "submitit").iterdir())


@pytest.mark.slow  # starting a local Ray instance takes ~10 s on this machine
def test_ray_local_instance_for_real():
    pytest.importorskip("ray")
    with make_executor(ExecutorConfig(name="ray", workers=2)) as executor:
        out = dict(map_unordered(executor, probe, [1, 2], timeout=2.0))
    assert sorted(r["payload"] for r in out.values()) == [1, 2]
