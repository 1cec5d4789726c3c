"""Per-example gradient statistics (B_simple) on an MLP at batch 512: four ways, timed in one run.

- one plain batched backward pass of the mean loss (the unit of cost; gives G only);
- the fast path: per-example squared norms from activations and output gradients (hooks);
- torch.func: vmap(grad) per-example gradients, then their squared norms;
- a plain loop of single-example backward passes (the obviously correct baseline).

Every method's output is reduced to (sum_i |g_i|^2, sum_i g_i), i.e. what B_simple needs. Repeats are
interleaved (method order rotated each round) and medians reported. Usage:

    .venv/bin/python benchmarks/bench_per_example.py [--repeats 15] [--batch 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from batchscale.empirical.gradients import (
    flat_grad,
    gradient_statistics,
    iter_per_example_gradients,
    per_example_sq_norms,
)
from batchscale.empirical.workloads import get_workload, per_example_loss


def load(batch: int):
    """mnist1d-mlp (40-256-256-10) if it builds here, else the same MLP on random data."""
    try:
        wl = get_workload("mnist1d-mlp")
        return "mnist1d-mlp", wl.model(0), wl.x_train[:batch], wl.y_train[:batch]
    except Exception as exc:  # noqa: BLE001 - a benchmark falls back rather than fails
        print(f"(mnist1d-mlp unavailable: {exc}; using random data)")
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )
        return "random 40-256-256-10", model, torch.randn(batch, 40), torch.randint(10, (batch,))


def loss_fn(out, y):
    return per_example_loss("cross_entropy", out, y)


def plain_backward(model, x, y):
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).mean().backward()
    return None, flat_grad(model)


def fast_norms(model, x, y):
    return per_example_sq_norms(model, loss_fn, x, y)


def torch_func(model, x, y, chunk_size=None):
    sq, total = [], 0
    for grads in iter_per_example_gradients(model, loss_fn, x, y, chunk_size=chunk_size or x.shape[0]):
        sq.append(grads.pow(2).sum(1))
        total = total + grads.sum(0)
    return torch.cat(sq), total


def torch_func_chunked(model, x, y):
    return torch_func(model, x, y, chunk_size=64)


def plain_loop(model, x, y):
    sq, total = [], None
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).sum().backward()
        g = flat_grad(model)
        sq.append(g.pow(2).sum())
        total = g.clone() if total is None else total + g
    return torch.stack(sq), total


def statistics_fast(model, x, y):
    """The whole B_simple routine over the batch's examples (exact values: no bootstrap needed)."""
    stats = gradient_statistics(model, loss_fn, x, y, method="fast")
    return None, stats.mean_gradient


def statistics_fast_ci(model, x, y):
    """B_simple from a sample of the batch size out of 8 x as many examples (x tiled 8 times), with a
    1000-replicate bootstrap (512 of 4096 at the default batch)."""
    big_x, big_y = x.repeat(8, *([1] * (x.dim() - 1))), y.repeat(8)
    stats = gradient_statistics(model, loss_fn, big_x, big_y, method="fast", sample=x.shape[0])
    return None, stats.mean_gradient


METHODS = {
    "one plain batched backward (G only)": plain_backward,
    "fast path: hook squared norms": fast_norms,
    "torch.func vmap(grad), one chunk of the batch": torch_func,
    "torch.func vmap(grad), chunks of 64": torch_func_chunked,
    "plain loop of single-example backwards": plain_loop,
    "gradient_statistics(method='fast'): B_simple of the batch": statistics_fast,
    "gradient_statistics(method='fast', sample=batch of 8 x batch): + bootstrap CI": statistics_fast_ci,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--loop-repeats", type=int, default=5, help="repeats of the (slow) plain loop")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name, model, x, y = load(args.batch)
    # cross-check: all per-example methods give the same squared norms
    ref_sq, _ = torch_func(model, x, y)
    for label, fn in list(METHODS.items())[1:-2]:
        sq, _ = fn(model, x, y)
        assert torch.allclose(sq, ref_sq, rtol=1e-4), label
    times: dict[str, list[float]] = {k: [] for k in METHODS}
    names = list(METHODS)
    for r in range(args.repeats):
        for label in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order each round
            if label.startswith("plain loop") and len(times[label]) >= args.loop_repeats:
                continue
            start = time.perf_counter()
            METHODS[label](model, x, y)
            times[label].append(time.perf_counter() - start)
    base = statistics.median(times[names[0]])
    print(f"\n{name}, batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}\n")
    print("| method | repeats | median ms | x plain backward |")
    print("|---|---:|---:|---:|")
    for label in names:
        med = statistics.median(times[label])
        print(f"| {label} | {len(times[label])} | {med * 1e3:.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
