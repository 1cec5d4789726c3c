"""TrainConfig / TrialResult: round trips, ids, validation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from batchscale.empirical.trials import TrainConfig, TrialResult
from batchscale.errors import InputError


def test_config_round_trips_through_json():
    config = TrainConfig(workload_options={"n_samples": 5000}, batch_size=8, target=None, eval_subset=100)
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.trial_id() == config.trial_id()


def test_list_options_from_json_become_tuples():
    config = TrainConfig.from_dict({"workload_options": {"hidden": [64, [1, 2]]}})
    assert config.workload_options == (("hidden", (64, (1, 2))),)
    assert hash(config.group_key()) is not None
    assert config.trial_id() == TrainConfig(workload_options={"hidden": (64, (1, 2))}).trial_id()


def test_workload_options_are_sorted_and_hashable():
    a = TrainConfig(workload_options=(("b", 1), ("a", 2)))
    b = TrainConfig(workload_options={"a": 2, "b": 1})
    assert a == b and hash(a) == hash(b)
    assert a.workload_options == (("a", 2), ("b", 1))


def test_trial_id_is_16_hex_and_changes_with_any_field():
    base = TrainConfig()
    assert len(base.trial_id()) == 16 and int(base.trial_id(), 16) >= 0
    ids = {base.trial_id(), TrainConfig(seed=1).trial_id(), TrainConfig(learning_rate=0.2).trial_id()}
    assert len(ids) == 3


def test_trial_id_is_stable_across_interpreters():
    code = "from batchscale.empirical.trials import TrainConfig; print(TrainConfig(batch_size=3).trial_id())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == TrainConfig(batch_size=3).trial_id()


def test_trials_module_does_not_import_torch():
    code = "import sys, batchscale.empirical.trials; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"batch_size": 0}, "batch size"),
        ({"learning_rate": 0.0}, "learning rate"),
        ({"learning_rate": float("nan")}, "learning rate"),
        ({"optimizer": "rmsprop"}, "rmsprop"),
        ({"loss_form": "median"}, "median"),
        ({"schedule": "cosine"}, "cosine"),
        ({"target_metric": "f1"}, "f1"),
        ({"momentum": 1.0}, "momentum"),
        ({"optimizer": "nesterov", "momentum": 0.0}, "momentum"),
        ({"weight_decay": -1.0}, "weight decay"),
        ({"max_steps": 0}, "max steps"),
        ({"schedule": "warmup_linear_decay", "warmup_steps": 100, "max_steps": 100}, "warm-up"),
        ({"eval_subset": 0}, "eval subset"),
        ({"beta1": 0.9}, "'sgd' takes no beta1"),
        ({"optimizer": "momentum", "momentum": 0.9, "eps": 1e-6}, "takes no eps"),
        ({"optimizer": "adam", "momentum": 0.8, "beta1": 0.9}, "not both"),
        ({"optimizer": "adamw", "beta2": 1.0}, "beta2"),
        ({"optimizer": "adam", "beta1": -0.1}, "beta1"),
        ({"optimizer": "adamw", "eps": 0.0}, "eps"),
    ],
    ids=lambda v: str(v),
)
def test_validate_names_the_bad_value(changes, words):
    with pytest.raises(InputError, match=words):
        TrainConfig(**changes).validate()


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(InputError, match="colour"):
        TrainConfig.from_dict({"colour": "red"})


def test_result_round_trips_through_json():
    result = TrialResult(
        config=TrainConfig(batch_size=4),
        status="complete",
        steps=17,
        final_metric=0.19,
        final_loss=0.5,
        best_metric=0.19,
        history=((0, 0.9, 2.3), (17, 0.19, 0.5)),
        wall_time=1.5,
        device="cpu",
        stop_step=17,
    )
    again = TrialResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result


def test_optimizer_names_are_the_registry_and_the_vocabulary():
    from batchscale.empirical.optimizers import REGISTRY
    from batchscale.empirical.trials import OPTIMIZERS
    from batchscale.vocabulary import TRAIN_OPTIMIZERS

    assert tuple(REGISTRY) == OPTIMIZERS == TRAIN_OPTIMIZERS
    assert {name: rule.name for name, rule in REGISTRY.items()} == {n: n for n in REGISTRY}


def test_old_adam_config_reads_momentum_as_beta1():
    """A stored config from before ``beta1`` existed: ``momentum`` is Adam's beta1 (0 meaning 0.9)."""
    from batchscale.empirical.optimizers import optimizer_rule

    old = {"optimizer": "adam", "momentum": 0.8, "learning_rate": 0.001}
    config = TrainConfig.from_dict(old)
    config.validate()
    adam = optimizer_rule("adam")
    assert adam.hyper(config) == {"beta1": 0.8}
    assert adam.hyper(TrainConfig(optimizer="adam")) == {"beta1": 0.9}
    assert adam.shared(config) == {"beta2": 0.999, "eps": 1e-8}
    assert adam.hyper(TrainConfig(optimizer="adam", beta1=0.5)) == {"beta1": 0.5}


@pytest.mark.parametrize(
    "constant", ["PROTOCOL_VERSION", "DIVERGENCE_FACTOR", "EVAL_GROWTH", "REFINE_FRACTION", "PRUNE_MIN_STEP",
                 "PRUNE_MARGIN", "PRUNE_NEAR", "PRUNE_NEAR_LOSS"])
def test_changing_a_protocol_constant_changes_the_trial_id(monkeypatch, constant):
    from batchscale.empirical import protocol

    config = TrainConfig(batch_size=8)
    before = config.trial_id()
    monkeypatch.setattr(protocol, constant, getattr(protocol, constant) * 2)
    assert config.trial_id() != before
    monkeypatch.undo()
    assert config.trial_id() == before


def test_the_data_directory_of_a_file_workload_is_in_the_trial_id(monkeypatch, tmp_path):
    files, generated = TrainConfig(workload="mnist-cnn"), TrainConfig(workload="digits-mlp")
    monkeypatch.setenv("BATCHSCALE_DATA_DIR", str(tmp_path / "a"))
    ids = files.trial_id(), generated.trial_id()
    assert files.provenance()["data"] == str((tmp_path / "a").resolve())
    monkeypatch.setenv("BATCHSCALE_DATA_DIR", str(tmp_path / "b"))
    assert files.trial_id() != ids[0]
    assert generated.trial_id() == ids[1] and generated.provenance()["data"] is None
    explicit = TrainConfig(workload="pkg.mod:factory", workload_options={"data_dir": str(tmp_path / "a")})
    assert explicit.provenance()["data"] == str((tmp_path / "a").resolve())


def test_file_workloads_are_the_registry_entries_that_need_files():
    from batchscale.empirical.protocol import FILE_WORKLOADS
    from batchscale.empirical.workloads import list_workloads

    assert set(FILE_WORKLOADS) == {info.name for info in list_workloads() if info.needs_files}
