"""The optimizers of the training engine, one registry entry each.

An entry (:data:`REGISTRY`) holds everything the engine knows about one optimizer:

- its hyper-parameters: which :class:`~batchscale.empirical.trials.TrainConfig` fields it reads, their
  defaults and checks (:meth:`validate`), which of them may differ between the copies of one stacked
  run (:meth:`hyper`, e.g. the momentum) and which a stack shares (:meth:`shared`, e.g. Adam's beta2);
- its state: ``slots`` tensors per parameter (0 for SGD, the momentum buffer, Adam's two moments);
- its stacked update (:meth:`update`): K copies at once on (K, ...) tensors with per-copy (K,)
  hyper-parameters, following ``torch.optim``'s rules; SGD-type entries also have a fused update of a
  plain MLP from its activation gradients (:meth:`SGDRule.fused_update`);
- its ``torch.optim`` twin for the single-model loop (:meth:`torch_optimizer`).

Adding an optimizer is one entry here plus its test against ``torch.optim`` (``tests/test_batched.py``)
and its name in :data:`batchscale.vocabulary.TRAIN_OPTIMIZERS` (a test checks the two agree).

This module imports torch only inside :meth:`torch_optimizer`, so :meth:`TrainConfig.validate` (and the
store and CLI through it) can check hyper-parameters without torch's ~2 s import; the updates use tensor
methods only and run under the caller's ``torch.no_grad()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchscale.errors import require
from batchscale.vocabulary import check_choice

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import torch

    from batchscale.empirical.trials import TrainConfig

ADAM_DEFAULT_BETA1 = 0.9  # torch.optim.Adam's defaults
ADAM_DEFAULT_BETA2 = 0.999
ADAM_DEFAULT_EPS = 1e-8

Hyper = dict[str, "torch.Tensor"]  # (K,) per-copy values: "lr" (scheduled), "weight_decay", the entry's own


def per_copy(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) values shaped to broadcast against a stacked tensor (K, ...)."""
    return values.view((-1,) + (1,) * (like.dim() - 1))


def l2_gradient(g: torch.Tensor, p: torch.Tensor, wd: torch.Tensor, decay: bool) -> torch.Tensor:
    """torch.optim's coupled weight decay: g + wd w (``g`` itself when no copy decays)."""
    return g.addcmul(p, per_copy(wd, p)) if decay else g


class Rule:
    """What every entry provides (see the module docstring); subclasses fill it in."""

    name: str
    slots: int  # state tensors per parameter
    fusable: bool = False  # has :meth:`fused_update` for plain MLPs
    uses: tuple[str, ...] = ()  # the TrainConfig fields it reads besides learning_rate and weight_decay

    def validate(self, config: TrainConfig) -> None:
        """Raise :class:`InputError` on hyper-parameters this optimizer cannot use."""
        given = [f for f in ("beta1", "beta2", "eps") if getattr(config, f) is not None]
        unused = [f for f in given if f not in self.uses]
        require(not unused, f"optimizer {self.name!r} takes no {', '.join(unused)}")

    def hyper(self, config: TrainConfig) -> dict[str, float]:
        """Hyper-parameters that may differ between the copies of one stack (besides lr, weight decay)."""
        return {}

    def shared(self, config: TrainConfig) -> dict[str, float]:
        """Hyper-parameters every copy of a stack shares (they are part of ``TrainConfig.group_key``)."""
        return {}

    def torch_optimizer(self, params: Iterable[torch.Tensor], config: TrainConfig) -> torch.optim.Optimizer:
        """The torch.optim optimizer with these rules (learning rate set per step by the run)."""
        raise NotImplementedError

    def update(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
               state: Sequence[list[torch.Tensor]], hyper: Hyper, t: int,
               shared: Mapping[str, float]) -> None:
        """One update of stacked ``params`` (K, ...) in place from their gradients; ``t`` is the 1-based
        update count. In-place ops keep temporaries few: the update is memory-bound at small batch sizes."""
        raise NotImplementedError


@dataclass(frozen=True)
class SGDRule(Rule):
    """``torch.optim.SGD`` with dampening 0: plain (``sgd``), heavy ball (``momentum``), ``nesterov``.

    sgd: w <- w - lr (g + wd w).  momentum: b <- mu b + g + wd w, w <- w - lr b.
    nesterov: the same b, w <- w - lr (g + wd w + mu b).  ``TrainConfig.momentum`` is mu (> 0 for the
    two momentum methods; ignored by ``sgd``).
    """

    name: str
    heavy_ball: bool  # keeps a momentum buffer
    nesterov: bool = False
    fusable: bool = True
    uses: tuple[str, ...] = ("momentum",)

    @property
    def slots(self) -> int:
        return 1 if self.heavy_ball else 0

    def validate(self, config: TrainConfig) -> None:
        super().validate(config)
        require(
            not self.heavy_ball or config.momentum > 0,
            f"optimizer {self.name!r} needs momentum > 0, got {config.momentum}",
        )

    def hyper(self, config: TrainConfig) -> dict[str, float]:
        return {"momentum": config.momentum} if self.heavy_ball else {}

    def torch_optimizer(self, params, config):
        import torch

        momentum = config.momentum if self.heavy_ball else 0.0
        return torch.optim.SGD(params, lr=config.learning_rate, momentum=momentum, nesterov=self.nesterov,
                               weight_decay=config.weight_decay)

    def update(self, params, grads, state, hyper, t, shared) -> None:
        lr, wd = hyper["lr"], hyper["weight_decay"]
        decay = bool((wd != 0).any())
        for p, g, s in zip(params, grads, state, strict=True):
            g = l2_gradient(g, p, wd, decay)
            neg_lr = per_copy(-lr, p)
            if not self.heavy_ball:
                p.addcmul_(g, neg_lr)  # w <- w - lr g
                continue
            mu = per_copy(hyper["momentum"], p)
            buf = s[0].mul_(mu).add_(g)  # b <- mu b + g
            step = g.addcmul(buf, mu) if self.nesterov else buf  # g + mu b  |  b
            p.addcmul_(step, neg_lr)  # w <- w - lr step

    def fused_update(self, params, layers, plan: Sequence[str], state, hyper: Hyper,
                     uniform: Mapping[str, float], decay: bool) -> None:
        """One update of a stacked plain MLP from its activation gradients.

        ``layers``: (a, delta) per linear layer, a (K, B, in) its input and delta (K, B, out) the gradient
        of the loss with respect to its output. The weight gradient is g = delta^T a (K, out, in), rank
        <= B; it is never formed: ``baddbmm_`` adds it into the weights (SGD) or the momentum buffer in one
        pass, so at small B an update reads and writes each stacked weight once or twice instead of the
        four to six passes of "form g, then :meth:`update`". Same rules, different float rounding:
        sgd: w <- (1 - lr wd) w - lr g;  momentum: b <- mu b + wd w + g, w <- w - lr b;
        nesterov: the same b, w <- (1 - lr wd) w - lr g - lr mu b.
        ``uniform``: hyper-parameters every copy shares (a shared momentum fuses b's decay into
        baddbmm_); ``decay``: whether any weight decay is nonzero.
        """
        lr, wd = hyper["lr"], hyper["weight_decay"]
        mu = hyper.get("momentum")
        same_mu = uniform.get("momentum")
        neg_lr_k = -lr  # (K,)
        grads = iter(layers)
        tensors = iter(zip(params, state, strict=True))
        for op in plan:
            if op not in ("linear", "linear_nobias"):
                continue
            a, delta = next(grads)  # (K, B, in), (K, B, out)
            pairs = [next(tensors)] + ([next(tensors)] if op == "linear" else [])
            for i, (p, s) in enumerate(pairs):
                neg_lr = per_copy(neg_lr_k, p)
                if i == 0:  # the weight (K, out, in): g = delta^T a
                    gt = delta.transpose(1, 2)  # (K, out, B)

                    def add_grad(target, scale=None, beta=1.0, a=a, gt=gt):
                        target.baddbmm_(gt if scale is None else gt * scale, a, beta=beta)
                else:  # the bias (K, out): g = sum_b delta
                    g_bias = delta.sum(dim=1)  # (K, out)

                    def add_grad(target, scale=None, beta=1.0, g_bias=g_bias):
                        if beta != 1.0:
                            target.mul_(beta)
                        target.add_(g_bias if scale is None else g_bias * scale)
                if not self.heavy_ball:
                    if decay:
                        p.mul_(1 + per_copy(-lr * wd, p))
                    add_grad(p, per_copy(neg_lr_k, delta) if i == 0 else neg_lr)  # w <- w - lr g
                    continue
                buf = s[0]
                if same_mu is not None and not decay:
                    add_grad(buf, beta=same_mu)  # b <- mu b + g
                else:
                    buf.mul_(per_copy(mu, p))
                    if decay:
                        buf.addcmul_(p, per_copy(wd, p))  # + wd w
                    add_grad(buf)  # + g
                if not self.nesterov:
                    p.addcmul_(buf, neg_lr)  # w <- w - lr b
                else:
                    if decay:
                        p.mul_(1 + per_copy(-lr * wd, p))
                    add_grad(p, per_copy(neg_lr_k, delta) if i == 0 else neg_lr)  # w <- w - lr g
                    p.addcmul_(buf, per_copy(-lr * mu, p))  # ... - lr mu b


@dataclass(frozen=True)
class AdamRule(Rule):
    """``torch.optim.Adam`` (L2 weight decay added to the gradient) or, with ``decoupled``,
    ``torch.optim.AdamW`` (the weights shrink by (1 - lr wd) before the step).

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    w <- w - lr m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps), with g the gradient (+ wd w for ``adam``).
    ``TrainConfig.beta1`` (per copy), ``beta2`` and ``eps`` (shared by a stack) default to 0.9, 0.999,
    1e-8. Older configs gave beta1 as ``momentum`` (0 meaning 0.9); that spelling still means beta1 when
    ``beta1`` is not given.
    """

    name: str
    decoupled: bool = False
    slots: int = 2
    uses: tuple[str, ...] = ("beta1", "beta2", "eps")

    def validate(self, config: TrainConfig) -> None:
        super().validate(config)
        require(
            config.beta1 is None or config.momentum == 0,
            f"optimizer {self.name!r}: give beta1 (momentum is its old spelling), not both; got beta1 "
            f"{config.beta1} and momentum {config.momentum}",
        )

    def beta1(self, config: TrainConfig) -> float:
        """``beta1``, else the old spelling ``momentum`` when > 0, else :data:`ADAM_DEFAULT_BETA1`."""
        if config.beta1 is not None:
            return config.beta1
        return config.momentum if config.momentum > 0 else ADAM_DEFAULT_BETA1

    def hyper(self, config: TrainConfig) -> dict[str, float]:
        return {"beta1": self.beta1(config)}

    def shared(self, config: TrainConfig) -> dict[str, float]:
        beta2 = ADAM_DEFAULT_BETA2 if config.beta2 is None else config.beta2
        eps = ADAM_DEFAULT_EPS if config.eps is None else config.eps
        return {"beta2": beta2, "eps": eps}

    def torch_optimizer(self, params, config):
        import torch

        s = self.shared(config)
        kind = torch.optim.AdamW if self.decoupled else torch.optim.Adam
        return kind(params, lr=config.learning_rate, betas=(self.beta1(config), s["beta2"]), eps=s["eps"],
                    weight_decay=config.weight_decay)

    def update(self, params, grads, state, hyper, t, shared) -> None:
        lr, wd, b1 = hyper["lr"], hyper["weight_decay"], hyper["beta1"]
        b2, eps = shared["beta2"], shared["eps"]
        decay = bool((wd != 0).any())
        step_size = lr / (1 - b1**t)  # lr / (1 - b1^t), (K,)
        for p, g, (m, v) in zip(params, grads, state, strict=True):
            if self.decoupled:
                if decay:
                    p.mul_(1 + per_copy(-lr * wd, p))  # w <- (1 - lr wd) w
            else:
                g = l2_gradient(g, p, wd, decay)
            m.lerp_(g, 1 - per_copy(b1, p))  # m <- b1 m + (1 - b1) g
            v.mul_(b2).addcmul_(g, g, value=1 - b2)  # v <- b2 v + (1 - b2) g^2
            denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(eps)
            p.addcmul_(m.div(denom), per_copy(-step_size, p))  # w <- w - lr m_hat / (sqrt(v_hat) + eps)


REGISTRY: dict[str, Rule] = {
    "sgd": SGDRule("sgd", heavy_ball=False),
    "momentum": SGDRule("momentum", heavy_ball=True),
    "nesterov": SGDRule("nesterov", heavy_ball=True, nesterov=True),
    "adam": AdamRule("adam"),
    "adamw": AdamRule("adamw", decoupled=True),
}


def optimizer_rule(name: str) -> Rule:
    """The registry entry of optimizer ``name`` (:class:`InputError` naming the choices if unknown)."""
    return REGISTRY[check_choice("optimizer", name, tuple(REGISTRY))]


__all__ = [
    "ADAM_DEFAULT_BETA1",
    "ADAM_DEFAULT_BETA2",
    "ADAM_DEFAULT_EPS",
    "REGISTRY",
    "AdamRule",
    "Rule",
    "SGDRule",
    "optimizer_rule",
    "per_copy",
]
