"""K trials as one stacked model: the fast engine for learning-rate sweeps on small models.

Trials that share a workload, batch size, optimizer, loss form, schedule shape and max_steps (their
:meth:`~batchscale.empirical.trials.TrainConfig.group_key`) differ only in learning rate, momentum,
weight decay and seed. :class:`StackedRun` stacks their weights along a leading copy axis K and does one
forward/backward for all of them: copy k has its own initialisation (``make_model(seed_k)``), its own
batch order (indices (K, B), gathered as ``x[idx]``) and its own hyper-parameters, so its numbers are
those of the plain loop (:class:`~batchscale.empirical.train.SingleRun`) up to float rounding. Copies
that end (target met, diverged, pruned) are dropped from the stack, so later steps get cheaper.

Two forward paths: plain MLPs (``nn.Sequential`` of Flatten/Linear/ReLU, or one ``nn.Linear``) run as
``torch.baddbmm`` on (K, in, out) weights; any other module without buffers runs through
``torch.func.vmap(functional_call)`` over ``torch.func.stack_module_state``. Modules with buffers
(batch norm) run one at a time. The optimizers are written out on the stacked tensors with
``torch.optim``'s update rules. :mod:`batchscale.empirical.engine` decides when to stack (measured in
``docs/perf-training.md``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from batchscale.empirical.optimizers import optimizer_rule
from batchscale.empirical.train import (
    BatchOrder,
    Snapshot,
    batch_loss,
    check_fits,
    eval_data,
    lr_factor,
)
from batchscale.empirical.trials import TrainConfig
from batchscale.empirical.workloads import Workload, per_example_loss

EVAL_CHUNK = 2048  # test examples per forward pass when evaluating a stack


# ---------------------------------------------------------------------------------------------------
# Stacked forward passes
# ---------------------------------------------------------------------------------------------------


def mlp_plan(model: nn.Module) -> list[str] | None:
    """The layer plan (``flatten``, ``linear``, ``linear_nobias``, ``relu``) of a plain MLP, else None."""
    layers = list(model) if isinstance(model, nn.Sequential) else [model]
    plan = []
    for layer in layers:
        if isinstance(layer, nn.Flatten) and layer.start_dim == 1 and layer.end_dim == -1:
            plan.append("flatten")
        elif type(layer) is nn.Linear:
            plan.append("linear" if layer.bias is not None else "linear_nobias")
        elif type(layer) is nn.ReLU:
            plan.append("relu")
        else:
            return None
    return plan


def mlp_forward(plan: Sequence[str], params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Stacked MLP: ``params`` are torch's Linear weights (K, out, in) and biases (K, out); x (K, B, ...)."""
    weights = iter(params)
    for op in plan:
        if op == "flatten":
            x = x.flatten(start_dim=2)  # (K, B, D)
        elif op == "relu":
            x = torch.relu(x)
        elif op == "linear":
            w, b = next(weights), next(weights)  # (K, out, in), (K, out)
            x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))  # (K, B, out)
        else:
            x = torch.bmm(x, next(weights).transpose(1, 2))  # (K, B, out)
    return x


def mlp_forward_layers(
    plan: Sequence[str], params: Sequence[torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """:func:`mlp_forward` that keeps what the weight gradients are made of, without weight gradients.

    Returns the output (K, B, C), the input ``a`` (K, B, in) of every linear layer and its output ``z``
    (K, B, out). The weights need no ``requires_grad``: the first ``z`` is made a leaf that requires
    grad, so autograd carries only the (K, B, width) activation gradients ``delta = dL/dz``, and each
    weight gradient is the rank-B product ``delta^T a`` (``SGDRule.fused_update`` in
    :mod:`batchscale.empirical.optimizers` adds it into the weights).
    """
    weights = iter(params)
    inputs, outputs = [], []
    for op in plan:
        if op == "flatten":
            x = x.flatten(start_dim=2)  # (K, B, D)
        elif op == "relu":
            x = torch.relu(x)
        else:
            w = next(weights)  # (K, out, in)
            b = next(weights) if op == "linear" else None  # (K, out)
            inputs.append(x)
            wt = w.transpose(1, 2)  # (K, in, out)
            x = torch.bmm(x, wt) if b is None else torch.baddbmm(b.unsqueeze(1), x, wt)  # (K, B, out)
            if not x.requires_grad:
                x.requires_grad_(True)  # the first layer: a leaf, so its delta is returned too
            outputs.append(x)  # (K, B, out)
    return x, inputs, outputs


def stackable(model: nn.Module) -> bool:
    """Whether ``model`` can be stacked: no buffers (batch norm running stats), no dropout."""
    no_buffers = next(model.buffers(), None) is None
    no_dropout = not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
    return no_buffers and no_dropout


def stacked_forward(models: Sequence[nn.Module]) -> tuple[list[torch.Tensor], Callable]:
    """Stacked parameters (K, ...) of ``models`` and ``forward(params, x (K, B, ...)) -> (K, B, C)``."""
    plan = mlp_plan(models[0])
    if plan is not None:
        params = [torch.stack(ps).detach() for ps in zip(*(m.parameters() for m in models), strict=True)]
        return params, lambda ps, x: mlp_forward(plan, ps, x)
    stacked, _ = torch.func.stack_module_state(list(models))
    names = list(stacked)
    base = copy.deepcopy(models[0]).to("meta")

    def call(param_values: tuple, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(base, dict(zip(names, param_values, strict=True)), (x,))

    def forward(ps: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.vmap(call)(tuple(ps), x)

    return [stacked[n].detach() for n in names], forward


# ---------------------------------------------------------------------------------------------------
# The stacked run
# ---------------------------------------------------------------------------------------------------


class StackedRun:
    """K trials of one group trained as one stacked model (the :class:`~batchscale.empirical.train.Run`
    protocol, so :class:`~batchscale.empirical.train.Driver` runs it like a single model)."""

    def __init__(self, workload: Workload, configs: Sequence[TrainConfig], trials: Sequence[int]):
        for config in configs:
            check_fits(config, workload)
        c = self.config = configs[0]
        self.workload, self.trials, self.step = workload, list(trials), 0
        models = [workload.model(x.seed) for x in configs]
        self.params, self.forward = stacked_forward(models)
        self.plan = mlp_plan(models[0])
        self.rule = optimizer_rule(c.optimizer)
        self.fused = self.plan is not None and self.rule.fusable
        for p in self.params:
            p.requires_grad_(not self.fused)  # fused: autograd stops at the activations
        self.state = [[torch.zeros_like(p) for _ in range(self.rule.slots)] for p in self.params]
        values = {"lr": [x.learning_rate for x in configs], "weight_decay": [x.weight_decay for x in configs]}
        for x in configs:
            for name, value in self.rule.hyper(x).items():
                values.setdefault(name, []).append(value)
        self.hyper = {k: torch.tensor(v, device=workload.device) for k, v in values.items()}  # (K,) each
        self.uniform = {k: v[0] for k, v in values.items() if len(set(v)) == 1}  # shared by every copy
        self.shared = self.rule.shared(c)
        self.decay = any(x.weight_decay != 0 for x in configs)  # known once: no per-step check
        self.constant_lr = c.schedule == "constant"
        seeds = [x.seed for x in configs]
        self.order = BatchOrder(workload.n_train, c.batch_size, seeds, c.drop_last, workload.device)
        self.x_eval, self.y_eval = eval_data(c, workload)

    def train_step(self) -> torch.Tensor:
        """One update of every copy; returns the K minibatch losses."""
        c = self.config
        idx = self.order.next()  # (K, B)
        x, y = self.workload.x_train[idx], self.workload.y_train[idx]  # (K, B, ...), (K, B[, C])
        if self.fused:
            out, inputs, outputs = mlp_forward_layers(self.plan, self.params, x)  # (K, B, C)
        else:
            out = self.forward(self.params, x)  # (K, B, C)
        k, b = idx.shape
        per_example = per_example_loss(self.workload.loss, out.flatten(0, 1), y.flatten(0, 1))  # (K*B,)
        losses = batch_loss(per_example.view(k, b), c.loss_form)  # (K,)
        hyper = self.hyper
        if not self.constant_lr:
            factor = lr_factor(self.step, c.schedule, c.warmup_steps, c.max_steps)
            hyper = dict(hyper, lr=hyper["lr"] * factor)
        self.step += 1
        if self.fused:  # copies are independent: d sum / d z_k = d L_k / d z_k
            deltas = torch.autograd.grad(losses.sum(), outputs)  # (K, B, out) per layer
            layers = list(zip(inputs, deltas, strict=True))
            with torch.no_grad():
                self.rule.fused_update(self.params, layers, self.plan, self.state, hyper, self.uniform,
                                       self.decay)
        else:
            grads = torch.autograd.grad(losses.sum(), self.params)  # copies are independent: d sum / d w_k
            with torch.no_grad():
                self.rule.update(self.params, grads, self.state, hyper, self.step, self.shared)
        return losses.detach()

    def advance(self, until: int) -> list[int]:
        """Train to step ``until``; stop early, returning the trials whose training loss is not finite."""
        while self.step < until:
            finite = torch.isfinite(self.train_step())  # (K,)
            if not bool(finite.all()):
                return [t for t, ok in zip(self.trials, finite.tolist(), strict=True) if not ok]
        return []

    @torch.no_grad()
    def evaluate(self) -> tuple[list[float], list[float]]:
        """Test metric and loss of every copy."""
        k, n = len(self.trials), self.x_eval.shape[0]
        loss_sum = torch.zeros(k, device=self.x_eval.device)
        wrong = torch.zeros(k, device=self.x_eval.device)
        for start in range(0, n, EVAL_CHUNK):
            x, y = self.x_eval[start : start + EVAL_CHUNK], self.y_eval[start : start + EVAL_CHUNK]
            out = self.forward(self.params, x.expand(k, *x.shape))  # (K, N, C)
            y = y.expand(k, *y.shape)  # (K, N[, C])
            per_example = per_example_loss(self.workload.loss, out.flatten(0, 1), y.flatten(0, 1))  # (K*N,)
            loss_sum += per_example.view(k, -1).sum(dim=1)
            if self.config.target_metric == "error":
                wrong += (out.argmax(dim=-1) != y).float().sum(dim=1)
        loss = (loss_sum / n).tolist()
        metric = loss if self.config.target_metric == "loss" else (wrong / n).tolist()
        return metric, loss

    def snapshot(self) -> Snapshot:
        tensors = [p.detach().clone() for p in self.params], [[s.clone() for s in ss] for ss in self.state]
        hyper = {k: v.clone() for k, v in self.hyper.items()}
        return Snapshot(self.step, tuple(self.trials), (tensors, hyper), self.order.state())

    def resume(self, snapshot: Snapshot, trials: Sequence[int]) -> StackedRun:
        """A new stacked run of ``trials`` from ``snapshot``."""
        rows = [snapshot.trials.index(t) for t in trials]
        (params, state), hyper = snapshot.state
        run = copy.copy(self)
        run.trials, run.step = list(trials), snapshot.step
        run.params = [p[rows].clone().requires_grad_(not self.fused) for p in params]
        run.state = [[s[rows].clone() for s in ss] for ss in state]
        run.hyper = {k: v[rows] for k, v in hyper.items()}
        run.order = copy.copy(self.order)
        run.order.restore(snapshot.order, rows)
        return run

    def keep(self, trials: Sequence[int]) -> None:
        """Drop every copy not in ``trials`` from the stack."""
        rows = [i for i, t in enumerate(self.trials) if t in trials]
        if len(rows) == len(self.trials):
            return
        self.trials = [self.trials[i] for i in rows]
        with torch.no_grad():
            self.params = [p[rows].clone().requires_grad_(not self.fused) for p in self.params]
            self.state = [[s[rows] for s in ss] for ss in self.state]
        self.hyper = {k: v[rows] for k, v in self.hyper.items()}
        self.order.keep(rows)
