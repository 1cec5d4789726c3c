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
        (ExecutorConfig(name="local", options=(("adress", "x"),)), "for --executor local; valid: none"),
        (ExecutorConfig(name="ray", options=(("adress", "x"),)), "--executor ray; valid: address"),
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


def test_make_executor_takes_a_name():
    with make_executor("inline") as executor:
        assert dict(map_unordered(executor, probe, ["x"]))[0]["pid"] == os.getpid()


def test_workers_ignore_ctrl_c_and_an_interrupt_stops_them_at_once():
    import signal
    import threading
    import time

    executor = make_executor(ExecutorConfig(name="local", workers=1))
    with executor:
        pid = executor.submit(probe, 1).result()["pid"]
        os.kill(pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
        assert executor.submit(probe, 2).result()["pid"] == pid  # the worker lived on, no traceback

    def interrupted() -> None:
        try:
            with make_executor(ExecutorConfig(name="local", workers=1)) as pool:
                pool.submit(time.sleep, 600)
                time.sleep(0.5)
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass

    thread = threading.Thread(target=interrupted, daemon=True)
    thread.start()
    thread.join(timeout=120)  # without terminate() the exit would wait for the 600 s chunk
    assert not thread.is_alive()


SCRIPT = """
import os
from batchscale.empirical.executors import make_executor, map_unordered, probe
{guard}print("top level ran in", os.getpid(), flush=True)
{indent}with make_executor("local") as executor:
{indent}    print("task ran in", dict(map_unordered(executor, probe, [0]))[0]["pid"], flush=True)
"""


@pytest.mark.parametrize("guarded", [False, True])
def test_a_script_without_main_guard_falls_back_to_inline(tmp_path, guarded):
    import subprocess
    import sys

    guard, indent = ('if __name__ == "__main__":\n    ', "    ") if guarded else ("", "")
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(guard=guard, indent=indent))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    parent = lines[0].split()[-1]
    task_pid = next(line for line in lines if line.startswith("task ran in")).split()[-1]
    assert sum(line.startswith("top level ran") for line in lines) == 1  # the script ran once
    assert (task_pid == parent) is not guarded
    assert ("no `if __name__" in out.stderr) is not guarded


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


def test_a_workload_registered_in_the_session_falls_back_to_inline():
    """A notebook or ``python -c`` session registers a workload whose factory lives in __main__: spawn
    workers could not build it, so the local executor runs inline and says so."""
    import subprocess
    import sys

    code = (
        "import os, warnings\n"
        "from batchscale.empirical.executors import make_executor, InlineExecutor, LocalExecutor\n"
        "print(type(make_executor('local')).__name__)\n"
        "from batchscale.empirical.workloads import register_workload\n"
        "def mine(): pass\n"
        "register_workload('from-session', mine, 'a notebook workload')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    print(type(make_executor('local')).__name__, '|', caught[0].message)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    before, after = out.stdout.splitlines()
    assert before == "LocalExecutor"
    assert after.startswith("InlineExecutor | batchscale: workload(s) from-session were registered")
