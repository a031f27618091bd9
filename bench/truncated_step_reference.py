#!/usr/bin/env python3
"""The PyTorch + higher reference for `commentary bench truncated-step`: truncated BPTT with a
hyper-step after every student step (a one-step look-ahead) in the configuration of
bench/meta_step_reference.py: CBR student, CBR teacher with the time channel step / N (N the
steps timed), 28x28x1 random data, batch 8, Adam inner lr 1e-4, outer Adam lr 1e-3, outer loss
on 128 validation examples, 2 threads. One student is trained for all N steps; step i uses
train examples i*b to (i+1)*b. One step is the student step plus the hyper-step.

Each step unrolls one differentiable Adam step of the student in `higher.innerloop_ctx`
(initial weights copied, so the hypergradient reaches only the teacher), takes the validation
loss of the look-ahead weights, and steps the teacher. The student then carries on from the
look-ahead step without recomputing it: the fast weights are copied into the student, and the
differentiable Adam's state (higher keeps it in `diffopt.state[group][param index]`: step,
exp_avg, exp_avg_sq) is carried back, detached, into the inner `torch.optim.Adam`, from which
the next step's `innerloop_ctx` copies it, so the student takes exactly the steps of one
differentiable Adam run through all N steps. The BatchNorm running statistics are copied back too
(they do not change the losses: the student is always in training mode, on batch statistics).

higher's Adam adds eps to sqrt(v) before the bias correction (its effective eps is
eps / sqrt(1 - beta2^t)), so its steps differ from `torch.optim.Adam`'s where a gradient is near
eps in size (here the conv biases, which BatchNorm cancels) and agree to float rounding elsewhere.

Prints one line per step and `seconds_per_step=<median> steps_per_second=<n> peak_rss_mib=<n>`
like the Rust command (the median of all but the first 2 steps when there are more than 4).
Needs `pip install torch higher`.

Usage: bench/truncated_step_reference.py [--steps N] [--batch-size B] [--validation-examples V]
"""
import argparse
import resource
import statistics
import time

import higher
import torch
import torch.nn.functional as F

from meta_step_reference import CBR, random_examples, teacher_weights


def carry_over(student, inner, fmodel, diffopt):
    """Continue the student from the look-ahead step: fast weights, BatchNorm buffers and the
    differentiable Adam's state, detached, back into `student` and `inner`."""
    with torch.no_grad():
        for p, fast in zip(student.parameters(), fmodel.parameters()):
            p.copy_(fast)
        for buffer, fast in zip(student.buffers(), fmodel.buffers()):
            buffer.copy_(fast)
    for group, states in zip(inner.param_groups, diffopt.state):
        for index, p in enumerate(group["params"]):
            state = states[index]
            inner.state[p] = {
                # float64 (torch.optim.Adam takes any float tensor): with float32, higher's bias
                # corrections would round differently from those of its own int count.
                "step": torch.tensor(float(state["step"]), dtype=torch.float64),
                "exp_avg": state["exp_avg"].detach(),
                "exp_avg_sq": state["exp_avg_sq"].detach(),
            }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--validation-examples", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    n, b = args.steps, args.batch_size
    train_x, train_y = random_examples(n * b)
    val_x, val_y = random_examples(args.validation_examples)
    student = CBR(1, 10)
    inner = torch.optim.Adam(student.parameters(), lr=1e-4)
    teacher = CBR(2, 1)
    outer = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    seconds = []
    for step in range(n):
        start = time.perf_counter()
        x, y = train_x[step * b:(step + 1) * b], train_y[step * b:(step + 1) * b]
        with higher.innerloop_ctx(student, inner, copy_initial_weights=True) as (fmodel, diffopt):
            w = teacher_weights(teacher, x, step, n)
            loss = (w * F.cross_entropy(fmodel(x), y, reduction="none")).mean()
            diffopt.step(loss)
            val_loss = F.cross_entropy(fmodel(val_x), val_y)
            outer.zero_grad()
            val_loss.backward()
            outer.step()
            carry_over(student, inner, fmodel, diffopt)
        elapsed = time.perf_counter() - start
        seconds.append(elapsed)
        print(f"step={step} seconds={elapsed:.4f} val_loss={val_loss.item():.4f}", flush=True)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The first steps warm allocators and kernels; the median is over the rest.
    steady = seconds[2:] if len(seconds) > 4 else seconds
    median = statistics.median(steady)
    rate = 1 / median
    print(f"seconds_per_step={median:.4f} steps_per_second={rate:.2f} peak_rss_mib={rss_mib:.0f}")


if __name__ == "__main__":
    main()
