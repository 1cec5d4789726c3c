"""The workload registry: built-in names, user factories named ``package.module:function``, the checks
of their options and results, and :func:`get_workload`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from batchscale.empirical.device import resolve_device
from batchscale.empirical.workloads import user
from batchscale.empirical.workloads.contract import Workload, check_model, check_workload, to_plain
from batchscale.empirical.workloads.user import one_line
from batchscale.errors import InputError, require


@dataclass(frozen=True)
class WorkloadInfo:
    """What ``batchscale workloads`` lists about a registered workload, without building it."""

    name: str
    description: str
    loss: str
    options: dict[str, Any]  # option name -> default
    needs_files: bool = False  # reads its data from files under the ``data_dir`` option


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Workload]
    info: WorkloadInfo
    size: Callable[[dict[str, Any]], int | None] | None = None  # training examples from the options


_REGISTRY: dict[str, _Entry] = {}


def default_options(factory: Callable[..., Any]) -> dict[str, Any]:
    """Keyword options of ``factory`` with their defaults (``seed`` excluded; None when required)."""
    out: dict[str, Any] = {}
    for p in inspect.signature(factory).parameters.values():
        if p.name == "seed" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        out[p.name] = None if p.default is p.empty else p.default
    return out


def register_workload(
    name: str,
    factory: Callable[..., Workload],
    description: str,
    *,
    loss: str = "cross_entropy",
    needs_files: bool = False,
    size: Callable[[dict[str, Any]], int | None] | None = None,
) -> None:
    """Register ``factory(**options) -> Workload`` under ``name`` (it gets ``seed=`` if it takes one).

    ``size(options)``: the number of training examples from the (defaulted) options alone, checking the
    options it reads, or None when only building the workload can tell (see :func:`training_set_size`).
    """
    require(bool(name) and ":" not in name, f"workload name {name!r} must be non-empty and without ':'")
    info = WorkloadInfo(name, description, loss, default_options(factory), needs_files)
    _REGISTRY[name] = _Entry(factory, info, size)


def registered(name: str) -> _Entry | None:
    """The registry entry of ``name``; None for ``package.module:function``; an unknown name is an error."""
    entry = _REGISTRY.get(name)
    if entry is None and ":" not in name:
        raise InputError(f"unknown workload {name!r}; known: {known_names()} (or package.module:function)")
    return entry


def training_set_size(name: str, options: Mapping[str, Any]) -> int | None:
    """Training examples of the registered workload ``name`` with ``options``, without building it.

    Checks the option names (and the values the count depends on); None for a user factory
    (``package.module:function``) or when the count needs the data (file datasets without ``n_train``).
    """
    entry = registered(name)
    if entry is None:
        return None
    factory_arguments(name, entry.factory, 0, dict(options))
    return None if entry.size is None else entry.size({**entry.info.options, **options})


def list_workloads() -> list[WorkloadInfo]:
    """Every registered workload, in registration order."""
    return [entry.info for entry in _REGISTRY.values()]


def known_names() -> str:
    return ", ".join(_REGISTRY)


def import_factory(spec: str) -> Callable[..., Any]:
    """``'package.module:function'`` -> the function (see :func:`.user.import_factory`)."""
    return user.import_factory(spec, known_names())


def factory_arguments(
    name: str, factory: Callable[..., Any], seed: int, options: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments for ``factory``: ``options`` plus ``seed`` if it takes one; unknown options
    are an :class:`InputError` naming the accepted ones."""
    params = inspect.signature(factory).parameters
    kwargs = dict(options)
    if "seed" in params:
        kwargs["seed"] = seed
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(default_options(factory)) or "none"
        raise InputError(
            f"workload {name!r}: bad options {sorted(options)} ({exc}); its options: {accepted}"
        ) from None
    return kwargs


def call_factory(
    name: str, factory: Callable[..., Any], kwargs: dict[str, Any], *, builtin: bool = True
) -> Any:
    """``factory(**kwargs)``. An :class:`InputError` passes through; any other exception becomes a one-line
    InputError naming a built-in workload, or a :class:`UserCodeError` naming a user's factory and the
    frame that raised (``builtin=False``). The original exception is chained as the cause."""
    try:
        return factory(**kwargs)
    except InputError:
        raise
    except Exception as exc:
        if not builtin:
            raise user.user_code_error(f"workload {name}", exc) from exc
        raise InputError(f"workload {name} failed: {one_line(exc)}") from exc


def workload_description(name: str) -> str:
    """A registered workload's description, or the first paragraph of a user factory's docstring."""
    entry = _REGISTRY.get(name)
    return entry.info.description if entry is not None else user.description(import_factory(name))


def get_workload(name: str, *, device: str | torch.device = "cpu", seed: int = 0, **options: Any) -> Workload:
    """Build the workload ``name`` (registered, or ``package.module:function``) on ``device``.

    ``seed`` is the data seed of the synthetic workloads (``linreg``, ``teacher-student``); model weights
    are seeded separately by ``Workload.make_model(seed)``. Unknown names, bad options or a result that
    breaks the :class:`Workload` contract raise a one-line :class:`InputError`; an exception inside a user's
    factory or model raises :class:`~batchscale.errors.UserCodeError`. ``device`` may also be
    ``"auto"`` (CUDA when available, see :func:`batchscale.empirical.device.resolve_device`).
    """
    device = resolve_device(device) if isinstance(device, str) else device
    entry = registered(name)
    factory = entry.factory if entry is not None else import_factory(name)
    kwargs = factory_arguments(name, factory, seed, options)
    if entry is None:  # user code: -W values coerced to (and checked against) the signature's types
        kwargs = user.checked_options(name, factory, kwargs)
    workload = check_workload(name, call_factory(name, factory, kwargs, builtin=entry is not None))
    if entry is None:  # user code: also check that its model builds and fits the data
        check_model(name, workload)
    resolved = {**default_options(factory), **kwargs}
    return replace(workload, name=name, options=to_plain(resolved)).to(device)
