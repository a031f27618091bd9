#!/usr/bin/env python3
"""The PyTorch reference for the Algorithm-2 benchmark (issue 14; the Rust side,
`commentary bench ift-step`, is not written yet): Algorithm 2, learning label
blending by implicit differentiation in the paper's configuration, with the logic of its own
`train_mixup`: a CBR student on random 28x28x1 data (4,096 examples, 10 classes), train and
validation batches of 128, blend logits initialised to -1, student Adam lr 1e-3, outer Adam lr
1e-2, one Neumann term with alpha = the inner lr, one hyper-step after every student step. One
step is the student step plus the hyper-step. 2 threads, like the Rust command.

The hyper-step: v = dL_V/dtheta on a validation batch; g = dL_T/dtheta on the step's mixed
batch with `create_graph=True`; Neumann p = alpha (v + (v - alpha H v)) (H v a Hessian-vector
product through g; the Rust engine's scaling); the hypergradient is -(d g / d phi)^T p, a second `torch.autograd.grad` through g.

Prints one line per step and `seconds_per_step=<median> peak_rss_mib=<n>`. Needs torch only.

Usage: bench/ift_step_reference.py [--steps N] [--neumann-terms J]
"""
import argparse
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from meta_step_reference import CBR, random_examples


def mixed_loss(student, logits_phi, x, y, perm):
    """lambda = 1 - 0.5 sigmoid(M[y_i, y_perm(i)]); the blended batch's soft-target loss."""
    lam = 1 - 0.5 * torch.sigmoid(logits_phi[y, y[perm]])
    mixed = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm]
    out = student(mixed)
    ce = F.cross_entropy(out, y, reduction="none")
    ce_partner = F.cross_entropy(out, y[perm], reduction="none")
    return (lam * ce + (1 - lam) * ce_partner).mean()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--neumann-terms", type=int, default=1)
    parser.add_argument("--examples", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    classes, b, inner_lr = 10, args.batch_size, 1e-3
    train_x, train_y = random_examples(args.examples, classes)
    val_x, val_y = random_examples(args.examples, classes)
    student = CBR(1, classes)
    params = [p for p in student.parameters()]
    phi = torch.full((classes, classes), -1.0, requires_grad=True)
    inner = torch.optim.Adam(params, lr=inner_lr)
    outer = torch.optim.Adam([phi], lr=1e-2)
    seconds = []
    for step in range(args.steps):
        start = time.perf_counter()
        index = torch.randint(0, args.examples, (b,))
        x, y, perm = train_x[index], train_y[index], torch.randperm(b)
        # The student step on the blended batch.
        inner.zero_grad()
        mixed_loss(student, phi.detach(), x, y, perm).backward()
        inner.step()
        # The hyper-step.
        val_index = torch.randint(0, args.examples, (b,))
        val_loss = F.cross_entropy(student(val_x[val_index]), val_y[val_index])
        v = torch.autograd.grad(val_loss, params)
        g = torch.autograd.grad(mixed_loss(student, phi, x, y, perm), params, create_graph=True)
        p = [vi.clone() for vi in v]
        for _ in range(args.neumann_terms):
            hv = torch.autograd.grad(g, params, grad_outputs=v, retain_graph=True)
            v = [vi - inner_lr * hvi for vi, hvi in zip(v, hv)]
            p = [pi + vi for pi, vi in zip(p, v)]
        p = [inner_lr * pi for pi in p]
        (hyper,) = torch.autograd.grad(g, phi, grad_outputs=p)
        outer.zero_grad()
        phi.grad = -hyper
        outer.step()
        elapsed = time.perf_counter() - start
        seconds.append(elapsed)
        print(f"step={step} seconds={elapsed:.4f} val_loss={val_loss.item():.4f}", flush=True)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The first steps warm allocators and kernels; the median is over the rest.
    steady = seconds[2:] if len(seconds) > 4 else seconds
    print(f"seconds_per_step={statistics.median(steady):.4f} peak_rss_mib={rss_mib:.0f}")


if __name__ == "__main__":
    main()
