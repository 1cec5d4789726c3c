"""Workloads: a dataset, a model factory and a loss, under one name.

A :class:`Workload` is what every measurement and training routine takes. Built-in workloads are
registered by name (``mnist1d-mlp``, ``digits-mlp``, ``linreg``, ...) and built with :func:`get_workload`;
users pass their own as ``package.module:function``, a function returning a :class:`Workload`.

The package has three parts: :mod:`.contract` (the :class:`Workload` type, its loss and the checks of a
factory's result), :mod:`.registry` (names, user factories, :func:`get_workload`) and :mod:`.builtins`
(the built-in workloads, registered on import). Every public name is re-exported here.
"""

from batchscale.empirical.workloads.builtins import (
    DIGITS_EXAMPLES,
    as_choice,
    as_float,
    as_fraction,
    as_int,
    as_ints,
    as_tuple,
    cifar10_resnet8_workload,
    default_data_dir,
    digits_cnn_workload,
    digits_mlp_workload,
    digits_train_size,
    fashion_mnist_cnn_workload,
    file_arrays,
    linreg_workload,
    mnist1d_arrays,
    mnist1d_cnn_workload,
    mnist1d_mlp_workload,
    mnist1d_samples,
    mnist1d_train_size,
    mnist_cnn_model,
    mnist_cnn_workload,
    n_train_option,
    pooled_channels,
    teacher_student_workload,
    tensors,
)
from batchscale.empirical.workloads.contract import (
    LOSSES,
    LossName,
    Workload,
    check_model,
    check_workload,
    per_example_loss,
    to_plain,
    workload_summary,
)
from batchscale.empirical.workloads.registry import (
    _REGISTRY,
    WorkloadInfo,
    call_factory,
    default_options,
    factory_arguments,
    get_workload,
    import_factory,
    known_names,
    list_workloads,
    register_workload,
    registered,
    training_set_size,
    workload_description,
)
from batchscale.empirical.workloads.user import one_line

__all__ = [
    "as_choice", "as_float", "as_fraction", "as_int", "as_ints", "as_tuple", "call_factory", "check_model",
    "check_workload", "cifar10_resnet8_workload", "default_data_dir", "default_options",
    "digits_cnn_workload", "DIGITS_EXAMPLES", "digits_mlp_workload", "digits_train_size",
    "factory_arguments", "fashion_mnist_cnn_workload", "file_arrays", "get_workload", "import_factory",
    "known_names", "linreg_workload", "list_workloads", "LOSSES", "LossName", "mnist1d_arrays",
    "mnist1d_cnn_workload", "mnist1d_mlp_workload", "mnist1d_samples", "mnist1d_train_size",
    "mnist_cnn_model", "mnist_cnn_workload", "n_train_option", "one_line", "per_example_loss",
    "pooled_channels", "register_workload", "registered", "teacher_student_workload", "tensors", "to_plain",
    "training_set_size", "Workload", "workload_description", "workload_summary", "WorkloadInfo",
    "_REGISTRY",
]
