#!/usr/bin/env python3
"""The PyTorch + higher reference for `commentary bench meta-step`: one Algorithm-1 meta-step in
the configuration of the paper's own code (CBR student, CBR teacher with the iteration channel,
28x28x1 random data, batch 8, Adam inner lr 1e-4, K inner steps, outer loss on 512 validation
examples, 2 threads). Prints `seconds_per_meta_step=<median> peak_rss_mib=<n>` like the Rust
command. Needs `pip install torch higher`.

Usage: bench/meta_step_reference.py [--inner-steps K] [--meta-steps M]
"""
import argparse
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CBR(nn.Module):
    """conv5x5/s2/p2(32)-BN-ReLU-maxpool3/s2, conv3x3/s2/p2(64)-BN-ReLU-maxpool3/s2, linear."""

    def __init__(self, in_channels, outputs, side=28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 5, stride=2, padding=2)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=2)
        self.bn2 = nn.BatchNorm2d(64)
        with torch.no_grad():
            flat = self.features(torch.zeros(2, in_channels, side, side)).shape[1]
        self.fc = nn.Linear(flat, outputs)

    def features(self, x):
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
            x = F.relu(bn(conv(x)))
            if x.shape[2] >= 3 and x.shape[3] >= 3:
                x = F.max_pool2d(x, 3, 2)
        return x.flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))


def random_examples(n, classes=10):
    """n random 28x28x1 images and labels below `classes`: the benchmarks' data."""
    return torch.rand(n, 1, 28, 28), torch.randint(0, classes, (n,))


def teacher_weights(teacher, x, step, horizon):
    """sigmoid(teacher([x, step / horizon])) per example: the weights, with the time channel."""
    time_channel = torch.full_like(x, step / horizon)
    return torch.sigmoid(teacher(torch.cat([x, time_channel], 1))).squeeze(1)


def main():
    import higher  # only the meta-step needs it (the other references import CBR and the helpers from here)

    parser = argparse.ArgumentParser()
    parser.add_argument("--inner-steps", type=int, default=100)
    parser.add_argument("--meta-steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--validation-examples", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    k, b = args.inner_steps, args.batch_size
    train_x, train_y = random_examples(k * b)
    val_x, val_y = random_examples(args.validation_examples)
    teacher = CBR(2, 1)
    outer = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    seconds = []
    for step in range(args.meta_steps):
        student = CBR(1, 10)
        inner = torch.optim.Adam(student.parameters(), lr=1e-4)
        start = time.perf_counter()
        outer.zero_grad()
        with higher.innerloop_ctx(student, inner, copy_initial_weights=False) as (fmodel, diffopt):
            for i in range(k):
                x, y = train_x[i * b:(i + 1) * b], train_y[i * b:(i + 1) * b]
                w = teacher_weights(teacher, x, i, k)
                loss = (w * F.cross_entropy(fmodel(x), y, reduction="none")).mean()
                diffopt.step(loss)
            val_loss = F.cross_entropy(fmodel(val_x), val_y)
            val_loss.backward()
        outer.step()
        elapsed = time.perf_counter() - start
        seconds.append(elapsed)
        print(f"meta_step={step} seconds={elapsed:.3f} val_loss={val_loss.item():.4f}", flush=True)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"seconds_per_meta_step={statistics.median(seconds):.3f} peak_rss_mib={rss_mib:.0f}")


if __name__ == "__main__":
    main()
