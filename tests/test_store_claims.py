"""Shared stores: claims split the work between sweeps; a row is reused only if its config hash matches.

The store's claim logic is tested directly (two owners on one file), and the sweep runner with an
executor that returns synthetic results and records what it was asked to train, while another "sweep"
(a thread with its own connection) holds claims and writes rows.
"""

from __future__ import annotations

import concurrent.futures as cf
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from batchscale.empirical.executors import Executor
from batchscale.empirical.store import (
    config_hash,
    connect,
    open_store,
    owner_id,
    owner_is_dead,
    record_from_result,
)
from batchscale.empirical.sweep import run_chains, runner
from batchscale.empirical.sweep.rounds import Round
from batchscale.empirical.trials import TrainConfig, TrialResult

CONFIGS = [
    TrainConfig(workload="synthetic", batch_size=b, learning_rate=lr) for b in (4, 8) for lr in (0.1, 0.2)
]
IDS = [c.trial_id() for c in CONFIGS]


def result_of(config: TrainConfig) -> dict:
    return TrialResult(config, "complete", 1000 // config.batch_size, 0.1, 0.2, 0.1).to_dict()


def wanted(configs=CONFIGS) -> dict[str, str]:
    return {c.trial_id(): config_hash(c.to_dict()) for c in configs}


def put(store, config, session="other", status="complete"):
    store.put(record_from_result(config.trial_id(), {**result_of(config), "status": status}, session=session))


# --- the store's claim logic ------------------------------------------------------------------------


def test_two_owners_split_and_a_stored_row_releases_its_claim(tmp_path):
    path = tmp_path / "runs.sqlite"
    with open_store(path) as a, open_store(path) as b:
        first = a.claim(wanted(CONFIGS[:2]), "A", lease=60)
        assert first.ours == tuple(IDS[:2]) and not first.others and not first.reused
        second = b.claim(wanted(), "B", lease=60)
        assert second.others == {IDS[0]: "A", IDS[1]: "A"} and second.ours == tuple(IDS[2:])
        again = a.claim(wanted(CONFIGS[:2]), "A", lease=60)  # claiming one's own trials again is fine
        assert again.ours == tuple(IDS[:2])
        put(a, CONFIGS[0], session="A")
        assert IDS[0] not in b.claims()
        third = b.claim(wanted(CONFIGS[:2]), "B", lease=60)
        assert set(third.reused) == {IDS[0]} and third.others == {IDS[1]: "A"} and not third.ours
        a.release("A")
        fourth = b.claim(wanted(CONFIGS[:2]), "B", lease=60)
        assert fourth.ours == (IDS[1],)
        assert {owner for owner, _ in b.claims().values()} == {"B"}


def test_expired_leases_are_reclaimed_and_renewal_keeps_them(tmp_path):
    with open_store(tmp_path / "runs.sqlite") as store:
        store.claim(wanted(CONFIGS[:1]), "dead", lease=-1.0)
        store.claim(wanted(CONFIGS[1:2]), "alive", lease=0.5)
        store.renew("alive", 60)
        outcome = store.claim(wanted(CONFIGS[:2]), "me", lease=60)
        assert outcome.ours == (IDS[0],) and outcome.others == {IDS[1]: "alive"}
        assert store.claims()[IDS[1]][1] > time.time() + 30


def test_rows_that_do_not_match_their_config_hash_are_not_reused(tmp_path):
    path = tmp_path / "runs.sqlite"
    with open_store(path) as store:
        for config in CONFIGS[:3]:
            put(store, config)
        store.put(record_from_result(IDS[3], result_of(CONFIGS[3])))
    connection = sqlite3.connect(path)
    with connection:  # tampered: the config changed behind the store's back
        connection.execute("UPDATE trials SET config = replace(config, '0.2', '0.3') WHERE trial_id = ?",
                           (IDS[1],))
        connection.execute("UPDATE trials SET config_hash = 'stale' WHERE trial_id = ?", (IDS[2],))
    connection.close()
    with open_store(path) as store:
        pruned_ok = store.claim(wanted(), "me", lease=60)
        assert set(pruned_ok.reused) == {IDS[0], IDS[3]}
        assert set(pruned_ok.mismatched) == {IDS[1], IDS[2]} and set(pruned_ok.ours) == {IDS[1], IDS[2]}


def test_accept_decides_which_stored_rows_count(tmp_path):
    with open_store(tmp_path / "runs.sqlite") as store:
        put(store, CONFIGS[0], status="pruned")
        outcome = store.claim(wanted(CONFIGS[:1]), "me", lease=60, accept=lambda r: r.status != "pruned")
        assert outcome.ours == (IDS[0],) and not outcome.reused


# --- the runner on a shared store -------------------------------------------------------------------


class RecordingExecutor(Executor):
    """Runs no training: answers each chunk with synthetic results and records the trials it got."""

    def __init__(self):
        self.capacity = 1
        self.trained: list[str] = []

    def submit(self, fn, payload):
        configs = [TrainConfig.from_dict(d) for d in payload["configs"]]
        self.trained += [c.trial_id() for c in configs]
        future = cf.Future()
        future.set_result({"results": [result_of(c) for c in configs], "started_at": 1.0, "finished_at": 2.0,
                           "versions": {}})
        return future

    def wait(self, handles, timeout=1.0):
        return [h for h in handles if h.done()]

    def result(self, handle):
        return handle.result()


def one_round_chain(configs=CONFIGS):
    results = yield Round(tuple(configs))
    return [{"trial_id": k, "steps": r.steps, "status": r.status} for k, r in sorted(results.items())]


@pytest.fixture
def fast_polling(monkeypatch):
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.05)


def run(path, executor, progress=None):
    with open_store(path) as store:
        rows, stats = run_chains({"c": one_round_chain()}, store=store, executor=executor, progress=progress)
        claims = store.claims()
    return rows["c"], stats, claims


def test_runner_waits_for_trials_another_sweep_holds_and_trains_only_the_rest(tmp_path, fast_polling):
    path = tmp_path / "runs.sqlite"
    with open_store(path) as store:
        store.claim(wanted(CONFIGS[:2]), "other-sweep", lease=60)

    def other_sweep_finishes():
        time.sleep(0.3)
        store = connect(path)
        try:
            for config in CONFIGS[:2]:
                put(store, config)
        finally:
            store.close()

    thread = threading.Thread(target=other_sweep_finishes)
    thread.start()
    messages: list[str] = []
    executor = RecordingExecutor()
    rows, stats, claims = run(path, executor, messages.append)
    thread.join()
    assert sorted(executor.trained) == sorted(IDS[2:]), "trials claimed by the other sweep were trained"
    assert stats.trained == 2 and stats.reused == 2 and claims == {}
    assert [r["trial_id"] for r in rows] == sorted(IDS) and all(r["status"] == "complete" for r in rows)
    assert any("being trained by another sweep (other-sweep)" in m for m in messages), messages
    with open_store(path) as store:
        assert {r.trial_id: r.session for r in store.records()}[IDS[0]] == "other"


def test_runner_trains_trials_whose_claim_expired(tmp_path, fast_polling):
    path = tmp_path / "runs.sqlite"
    with open_store(path) as store:
        store.claim(wanted(CONFIGS[:2]), "killed-sweep", lease=0.2)
    executor = RecordingExecutor()
    rows, stats, claims = run(path, executor)
    assert sorted(executor.trained) == sorted(IDS) and stats.trained == 4 and claims == {}


def test_runner_retrains_a_tampered_row_and_says_so(tmp_path):
    path = tmp_path / "runs.sqlite"
    with open_store(path) as store:
        for config in CONFIGS:
            put(store, config)
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE trials SET config = replace(config, '\"batch_size\": 8', "
                           "'\"batch_size\": 9') WHERE trial_id = ?", (IDS[2],))
    connection.close()
    messages: list[str] = []
    executor = RecordingExecutor()
    rows, stats, _ = run(path, executor, messages.append)
    assert executor.trained == [IDS[2]] and stats.reused == 3
    assert any("1 stored row(s) do not match" in m and "training them again" in m for m in messages), messages
    with open_store(path) as store:
        assert store.get(IDS[2]).config["batch_size"] == 8


def test_claims_are_released_when_the_sweep_fails(tmp_path):
    class Failing(RecordingExecutor):
        def submit(self, fn, payload):
            raise KeyboardInterrupt

    path = tmp_path / "runs.sqlite"
    with pytest.raises(KeyboardInterrupt):
        run(path, Failing())
    with open_store(path) as store:
        assert store.claims() == {}


def test_claims_of_a_killed_process_on_this_host_are_taken_at_once(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = f"{socket.gethostname()}:{finished.stdout.strip()}:s"
    elsewhere = f"another-host-{socket.gethostname()}:1:s"
    assert owner_is_dead(dead) and not owner_is_dead(owner_id("s")) and not owner_is_dead(elsewhere)
    with open_store(tmp_path / "runs.sqlite") as store:
        store.claim(wanted(CONFIGS[:1]), dead, lease=600)
        store.claim(wanted(CONFIGS[1:2]), elsewhere, lease=600)
        outcome = store.claim(wanted(CONFIGS[:2]), owner_id("s"), lease=60)
    assert outcome.ours == (IDS[0],) and outcome.others == {IDS[1]: elsewhere}
