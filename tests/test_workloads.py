"""The workload registry, the built-in workloads and the user-workload contract.

Independent computations: autograd Hessians and sample covariances (Monte Carlo) for ``linreg``'s stated
spectrum, hand-counted parameter numbers, and user workloads written to files.
"""

from __future__ import annotations

import pickle
import sys
import textwrap

import numpy as np
import pytest
import torch

from batchscale.empirical import models
from batchscale.empirical.workloads import (
    Workload,
    WorkloadInfo,
    get_workload,
    list_workloads,
    register_workload,
    workload_summary,
)
from batchscale.errors import InputError

BUILT_IN = (
    "mnist1d-mlp",
    "mnist1d-cnn",
    "digits-mlp",
    "digits-cnn",
    "linreg",
    "teacher-student",
    "mnist-cnn",
    "fashion-mnist-cnn",
    "cifar10-resnet8",
)
# Small, fast options for the workloads that need no files.
SMALL = {
    "mnist1d-mlp": {"n_samples": 500},
    "mnist1d-cnn": {"n_samples": 500},
    "digits-mlp": {},
    "digits-cnn": {},
    "linreg": {"dim": 8, "n_train": 200, "n_test": 50},
    "teacher-student": {"dim": 6, "n_train": 200, "n_test": 50},
}
MC_RTOL = 0.05  # relative tolerance for sample-covariance checks with 40000 draws (std ~ 1/sqrt(2e4))


def test_every_built_in_name_is_registered():
    infos = list_workloads()
    assert [i.name for i in infos] == list(BUILT_IN)
    assert all(isinstance(i, WorkloadInfo) and i.description for i in infos)
    assert {i.name for i in infos if i.needs_files} == {"mnist-cnn", "fashion-mnist-cnn", "cifar10-resnet8"}
    assert {i.name: i.loss for i in infos}["linreg"] == "mse"


@pytest.mark.parametrize("name", list(SMALL))
def test_built_in_workload_follows_the_contract(name):
    w = get_workload(name, **SMALL[name])
    assert w.name == name
    assert w.x_train.dtype == torch.float32 and w.x_test.dtype == torch.float32
    if w.loss == "cross_entropy":
        assert w.y_train.dtype == torch.int64 and w.y_train.ndim == 1
        assert set(w.y_train.tolist()) == set(range(10))
    else:
        assert w.y_train.dtype == torch.float32 and w.y_train.ndim == 2
    out = w.model(0)(w.x_train[:5])
    assert out.shape == (5, 10 if w.loss == "cross_entropy" else w.y_train.shape[1])
    assert w.per_example_loss(out, w.y_train[:5]).shape == (5,)
    assert pickle.loads(pickle.dumps(w.make_model))(0) is not None  # picklable for worker processes


@pytest.mark.parametrize("name", list(SMALL))
def test_same_seed_same_tensors_and_weights(name):
    a, b = get_workload(name, seed=3, **SMALL[name]), get_workload(name, seed=3, **SMALL[name])
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    state = torch.get_rng_state()
    for ma, mb in zip(a.make_model(7).parameters(), b.make_model(7).parameters(), strict=True):
        assert torch.equal(ma, mb)
    assert torch.equal(torch.get_rng_state(), state)  # building a model leaves the global RNG alone


@pytest.mark.parametrize("name", ["linreg", "teacher-student"])
def test_data_seed_changes_synthetic_data(name):
    a, b = get_workload(name, seed=0, **SMALL[name]), get_workload(name, seed=1, **SMALL[name])
    assert not torch.equal(a.x_train, b.x_train)


@pytest.mark.parametrize("name", ["mnist1d-mlp", "digits-cnn", "teacher-student"])
def test_model_seed_changes_weights(name):
    w = get_workload(name, **SMALL[name])
    first = [p.detach().clone() for p in w.make_model(0).parameters()]
    second = list(w.make_model(1).parameters())
    assert any(not torch.equal(p, q) for p, q in zip(first, second, strict=True))


# Hand-counted parameters: (weights + biases) per linear layer.
N_PARAMS = [
    pytest.param(
        "mnist1d-mlp", {"n_samples": 500}, 40 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10, id="mnist1d-mlp"
    ),
    pytest.param("digits-mlp", {"hidden": 32}, 64 * 32 + 32 + 32 * 10 + 10, id="digits-mlp-32"),
    pytest.param("linreg", {"dim": 13, "n_train": 10, "n_test": 5}, 13, id="linreg-13"),
    pytest.param(
        "teacher-student",
        {"dim": 4, "student_hidden": (3, 2), "n_train": 10},
        4 * 3 + 3 + 3 * 2 + 2 + 3,
        id="ts",
    ),
]


@pytest.mark.parametrize("name, options, expected", N_PARAMS)
def test_summary_counts_parameters(name, options, expected):
    summary = workload_summary(get_workload(name, **options))
    assert summary["n_params"] == expected
    assert summary["name"] == name


@pytest.mark.parametrize("width", [4, 12, 20])
def test_resnet8_group_norm_accepts_widths_not_divisible_by_8(width):
    model = models.make_resnet8(0, width=width)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    # by hand: 8 groups when 8 divides the channels, else 4 (these widths are multiples of 4)
    assert [m.num_groups for m in norms] == [8 if m.num_channels % 8 == 0 else 4 for m in norms]
    assert 4 in {m.num_groups for m in norms}


def test_linreg_zero_init_and_random_init():
    zero = get_workload("linreg", **SMALL["linreg"])
    assert all(torch.count_nonzero(p) == 0 for p in zero.make_model(5).parameters())
    rand = get_workload("linreg", init="random", **SMALL["linreg"])
    assert not torch.equal(rand.make_model(0).weight, rand.make_model(1).weight)
    assert not any(m.bias is not None for m in rand.make_model(0).modules() if isinstance(m, torch.nn.Linear))


def test_linreg_info_matches_its_data_and_autograd_hessian():
    """The stated spectrum, w* and noise reproduce the data: Monte Carlo with 40000 draws."""
    w = get_workload("linreg", dim=4, alpha=1.5, n_train=40000, n_test=10, noise_std=0.3, seed=2)
    lam = np.asarray(w.info["spectrum"])
    np.testing.assert_allclose(lam, np.arange(1, 5) ** -1.5)
    x = w.x_train.double()
    residual = w.y_train.double()[:, 0] - x @ torch.tensor(w.info["w_star"], dtype=torch.float64)
    assert abs(float(residual.std()) / 0.3 - 1) < MC_RTOL
    model = w.make_model(0).double()

    def mean_loss(weight: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, {"weight": weight}, (x,))
        return w.per_example_loss(out, w.y_train.double()).mean()

    hessian = torch.autograd.functional.hessian(mean_loss, model.weight.detach())  # (1, 4, 1, 4)
    np.testing.assert_allclose(hessian.reshape(4, 4).numpy(), 2 * np.diag(lam), atol=MC_RTOL * 2 * lam[0])


def test_linreg_given_spectrum():
    w = get_workload("linreg", spectrum=(3.0, 1.0), n_train=10, n_test=5)
    assert w.info["spectrum"] == [3.0, 1.0] and w.x_train.shape == (10, 2)


BAD_OPTIONS = [
    pytest.param("linreg", {"bogus": 1}, "bogus", id="unknown-option"),
    pytest.param("linreg", {"n_train": 0}, "n_train=0", id="zero-examples"),
    pytest.param("linreg", {"noise_std": -1.0}, "noise_std=-1.0", id="negative-noise"),
    pytest.param("linreg", {"init": "ones"}, "init='ones'", id="bad-init"),
    pytest.param("linreg", {"spectrum": (1.0, -2.0)}, "spectrum=-2.0", id="negative-eigenvalue"),
    pytest.param("digits-mlp", {"hidden": "wide"}, "hidden='wide'", id="hidden-text"),
    pytest.param("digits-mlp", {"test_fraction": 1.5}, "test_fraction=1.5", id="fraction"),
    pytest.param("mnist1d-mlp", {"n_samples": 2.5}, "n_samples=2.5", id="float-count"),
    pytest.param("mnist1d-cnn", {"n_samples": 15}, "n_samples=15 must be a multiple of 10", id="per-class"),
    pytest.param("digits-cnn", {"channels": (8, 8, 8, 8)}, "at most 3 entries for 8x8", id="pooled-away"),
    pytest.param(
        "digits-mlp", {"test_fraction": 0.999}, "workload digits-mlp failed: ValueError", id="library-error"
    ),
    pytest.param(
        "cifar10-resnet8", {"norm": "layer", "data_dir": "/nonexistent"}, "norm='layer'", id="options-first"
    ),
]


@pytest.mark.parametrize("name, options, fragment", BAD_OPTIONS)
def test_bad_options_are_one_line_input_errors(name, options, fragment):
    with pytest.raises(InputError, match=None) as info:
        get_workload(name, **options)
    message = str(info.value)
    assert fragment in message and "\n" not in message


@pytest.mark.parametrize("device", ["cpu", "auto", torch.device("cpu")], ids=str)
def test_device_names(device):
    w = get_workload("linreg", device=device, **SMALL["linreg"])
    assert w.device.type == ("cuda" if device == "auto" and torch.cuda.is_available() else "cpu")


def test_unknown_device_is_an_input_error():
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        get_workload("linreg", device="tpu")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(InputError, match="unknown workload 'mnist'; known: mnist1d-mlp, .*cifar10-resnet8"):
        get_workload("mnist")


def test_register_workload_adds_a_name():
    def tiny(*, n: int = 3) -> Workload:
        x = torch.zeros(n, 2)
        return Workload(
            "tiny",
            lambda s: models.make_linear(s, in_dim=2),
            x,
            torch.zeros(n, 1),
            x,
            torch.zeros(n, 1),
            "mse",
        )

    register_workload("test-tiny", tiny, "a test workload", loss="mse")
    try:
        assert get_workload("test-tiny", n=4).n_train == 4
        assert next(i for i in list_workloads() if i.name == "test-tiny").options == {"n": 3}
    finally:
        from batchscale.empirical import workloads

        workloads._REGISTRY.pop("test-tiny")


USER_MODULE = """
import torch
from torch import nn
from batchscale.empirical.models import seeded
from batchscale.empirical.workloads import Workload


def make_model(seed):
    return seeded(lambda: nn.Linear(3, 2), seed)


def good(n_train=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + 4, 3, generator=g)
    y = torch.randint(0, 2, (n_train + 4,), generator=g)
    return Workload("mine", make_model, x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def not_a_workload():
    return {"x": 1}


def wrong_rows():
    x = torch.zeros(5, 3)
    y = torch.zeros(5, dtype=torch.int64)
    return Workload("bad", make_model, x, y[:4], x, y)


def wrong_shape():
    return Workload("bad", make_model, torch.zeros(5, 3), torch.zeros(5, dtype=torch.int64),
                    torch.zeros(5, 4), torch.zeros(5, dtype=torch.int64))


def float_labels():
    x = torch.zeros(5, 3)
    return Workload("bad", make_model, x, torch.zeros(5), x, torch.zeros(5))


def raises(seed=0):
    raise ValueError("no data here\\nsecond line of the message")


def torch_raises(hidden=4):
    return nn.Linear("three", hidden)  # raises inside torch's own Python code


def model_raises():
    x, y = torch.zeros(5, 3), torch.zeros(5, dtype=torch.int64)
    return Workload("bad", lambda seed: 1 / 0, x, y, x, y)


def model_not_a_module():
    x, y = torch.zeros(5, 3), torch.zeros(5, dtype=torch.int64)
    return Workload("bad", lambda seed: "linear", x, y, x, y)


def model_wrong_input():
    x, y = torch.zeros(5, 3), torch.zeros(5, dtype=torch.int64)
    return Workload("bad", lambda seed: nn.Linear(4, 2), x, y, x, y)


def too_few_logits():
    x, y = torch.zeros(5, 3), torch.arange(5)  # 5 classes, 2 logits
    return Workload("bad", make_model, x, y, x, y)


def mse_wrong_output():
    x, y = torch.zeros(5, 3), torch.zeros(5, 3)
    return Workload("bad", make_model, x, y, x, y, loss="mse")


def one_example_batch_norm():
    x, y = torch.randn(1, 3), torch.zeros(1, dtype=torch.int64)
    return Workload("bn", lambda seed: nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), x, y, x, y)


def negative_labels():
    x, y = torch.zeros(5, 3), torch.full((5,), -1, dtype=torch.int64)
    return Workload("bad", make_model, x, y, x, y)


NOT_CALLABLE = 3
"""


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_workloads.py").write_text(textwrap.dedent(USER_MODULE))
    (tmp_path / "broken_workloads.py").write_text("import this_package_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("my_workloads", "broken_workloads"):  # the docs example is also called my_workloads
        monkeypatch.delitem(sys.modules, name, raising=False)
    return "my_workloads"


def test_user_workload_is_built_with_options_and_seed(user_module):
    w = get_workload(f"{user_module}:good", n_train=6, seed=2)
    assert w.name == "my_workloads:good" and w.n_train == 6 and w.n_test == 4
    assert w.options == {"n_train": 6, "seed": 2}
    assert torch.equal(w.x_train, get_workload(f"{user_module}:good", n_train=6, seed=2).x_train)
    assert workload_summary(w)["n_params"] == 3 * 2 + 2


USER_ERRORS = [
    pytest.param("no_such_module_xyz:f", "no module named 'no_such_module_xyz' in the", id="no-module"),
    pytest.param("my_workloads:missing", "has no attribute 'missing'", id="no-attribute"),
    pytest.param("my_workloads:NOT_CALLABLE", "is not callable", id="not-callable"),
    pytest.param("my_workloads:not_a_workload", "returned dict, not a batchscale Workload", id="wrong-type"),
    pytest.param("my_workloads:wrong_rows", "x_train has shape (5, 3) but y_train (4,)", id="rows"),
    pytest.param("my_workloads:wrong_shape", "differ from x_test (4,)", id="shapes"),
    pytest.param("my_workloads:float_labels", "cross_entropy needs int64 class targets", id="float-labels"),
    pytest.param(":good", "neither a known name", id="empty-module"),
    pytest.param("my_workloads:model_not_a_module", "returned str, not a torch.nn.Module", id="not-module"),
    pytest.param("my_workloads:too_few_logits", "to (2, 2), expected (2, K) logits with K >= 5", id="logits"),
    pytest.param("my_workloads:mse_wrong_output", "expected the targets' shape (2, 3)", id="mse-output"),
    pytest.param("my_workloads:negative_labels", "y_train has negative class labels", id="negative"),
]


@pytest.mark.parametrize("spec, fragment", USER_ERRORS)
def test_user_workload_errors(user_module, spec, fragment):
    with pytest.raises(InputError) as info:
        get_workload(spec)
    assert fragment in str(info.value) and "\n" not in str(info.value)


USER_CODE_ERRORS = [
    pytest.param(
        "broken_workloads:f",
        "importing module 'broken_workloads' failed: ModuleNotFoundError: No module named "
        "'this_package_does_not_exist' (at broken_workloads.py:1",
        id="import-fails",
    ),
    pytest.param(
        "my_workloads:raises",
        "workload my_workloads:raises failed: ValueError: no data here (at my_workloads.py:",
        id="factory-raises",
    ),
    pytest.param(
        "my_workloads:model_raises", "make_model(0) failed: ZeroDivisionError: division by zero", id="model"
    ),
    pytest.param(
        "my_workloads:model_wrong_input", "the model on x_train[:2] (2, 3) failed: RuntimeError", id="input"
    ),
]


@pytest.mark.parametrize("spec, fragment", USER_CODE_ERRORS)
def test_exceptions_in_user_code_name_it_and_its_frame(user_module, spec, fragment, monkeypatch, tmp_path):
    from batchscale.errors import UserCodeError

    monkeypatch.chdir(tmp_path)  # frames below the current folder are shown relative to it
    with pytest.raises(UserCodeError) as info:
        get_workload(spec)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert not isinstance(info.value, InputError)  # not "bad input": exit 1 on the command line


def test_the_frame_is_the_users_not_torchs(user_module, monkeypatch, tmp_path):
    from batchscale.errors import UserCodeError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserCodeError) as info:
        get_workload("my_workloads:torch_raises")
    line = next(i for i, text in enumerate(USER_MODULE.splitlines(), 1) if 'nn.Linear("three"' in text)
    assert str(info.value).endswith(f"(at my_workloads.py:{line} in torch_raises)")


def test_model_check_accepts_one_example_and_batch_norm(user_module):
    w = get_workload("my_workloads:one_example_batch_norm")
    assert w.n_train == 1 and workload_summary(w)["n_params"] == 3 * 2 + 2 + 2 * 2


def test_factory_error_keeps_its_cause(user_module):
    from batchscale.errors import UserCodeError

    with pytest.raises(UserCodeError) as info:
        get_workload("my_workloads:raises")
    assert isinstance(info.value.__cause__, ValueError)  # chained for Python callers who want the traceback


def test_model_check_leaves_the_global_rng_alone(user_module):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    get_workload("my_workloads:good")
    assert torch.equal(torch.rand(3), expected)


def test_workload_is_exported_lazily_from_the_package():
    import subprocess

    code = (
        "import sys, batchscale.empirical as e; assert 'torch' not in sys.modules; "
        "from batchscale.empirical import Workload, get_workload; "
        "from batchscale.empirical.workloads import Workload as W; assert Workload is W; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import batchscale.empirical

        batchscale.empirical.Nope  # noqa: B018


def test_user_workload_unknown_option(user_module):
    with pytest.raises(InputError, match="its options: n_train"):
        get_workload("my_workloads:good", width=3)


TYPED_MODULE = """
from collections.abc import Sequence
from typing import Literal
import torch
from torch import nn
from batchscale.empirical.workloads import Workload


def typed(n: int = 6, lr: float = 0.5, hidden: Sequence[int] = (4,), act: Literal["relu", "tanh"] = "relu",
          flag: bool = False, tag: str | None = None, width=3, seed=0):
    \"\"\"Typed options, for the coercion tests.

    Second paragraph, not part of the description.
    \"\"\"
    x, y = torch.zeros(n, 3), torch.zeros(n, dtype=torch.int64)
    info = {"lr": lr, "hidden": hidden, "act": act, "flag": flag, "tag": tag, "width": width}
    return Workload("typed", lambda s: nn.Linear(3, 2), x, y, x, y, info=info)
"""


@pytest.fixture()
def typed_module(tmp_path, monkeypatch):
    (tmp_path / "typed_workloads.py").write_text(TYPED_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "typed_workloads", raising=False)
    return "typed_workloads:typed"


def test_user_options_are_coerced_to_the_signature(typed_module):
    w = get_workload(typed_module, lr=1, hidden=8, act="tanh", flag=True, tag=7, width=5)
    assert w.info == {"lr": 1.0, "hidden": (8,), "act": "tanh", "flag": True, "tag": "7", "width": 5}
    assert isinstance(w.info["lr"], float)
    assert get_workload(typed_module, hidden=(2, 3)).info["hidden"] == (2, 3)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"n": "abc"}, "option n='abc' must be an integer"),
        ({"n": 2.5}, "option n=2.5 must be an integer"),
        ({"lr": "fast"}, "option lr='fast' must be a number"),
        ({"hidden": "wide"}, "option hidden='wide' must be a comma list of integers"),
        ({"act": "gelu"}, "option act='gelu' must be one of relu, tanh"),
        ({"flag": 1}, "option flag=1 must be true or false"),
        ({"width": "x"}, "option width='x' must be an integer"),  # from the default's type
    ],
)
def test_user_option_of_the_wrong_type_is_one_line(typed_module, options, fragment):
    with pytest.raises(InputError) as info:
        get_workload(typed_module, **options)
    assert fragment in str(info.value) and "typed" in str(info.value) and "\n" not in str(info.value)


def test_user_workload_description_is_its_docstring(typed_module, user_module):
    from batchscale.empirical.workloads import workload_description

    assert workload_description(typed_module) == "Typed options, for the coercion tests."
    assert workload_description("my_workloads:good") == "user workload"  # no docstring
    assert workload_description("linreg").startswith("Gaussian least squares")
