#!/usr/bin/env python3
"""Independent float64 reference for `commentary hypergrad` problem files (numpy only).

Written from the problem-format description alone (trainer/src/verify/mod.rs docs), it
shares no code with the Rust engine:
- weight-bptt: L_V(phi) by training the MLP in float64, and d L_V / d phi by central finite
  differences of L_V over each phi_i;
- blend-ift: a dense float64 Hessian of the inner loss (central differences of its analytic
  gradient), p = alpha * sum_{j=0..J} (I - alpha H)^j grad L_V (or the exact damped inverse,
  p = (H + damping I)^-1 grad L_V, for `inverse` = `cg`), and -(d/d phi)[grad L_T . p] by central
  differences over phi.

Usage: scripts/hypergrad_reference.py PROBLEM.safetensors   (prints JSON)
       scripts/hypergrad_reference.py --train-blend PROBLEM STEPS LR OUT
           (gradient descent on a blend-ift problem's inner loss; writes OUT, prints the
           gradient norms before and after and the smallest |ReLU pre-activation| as JSON)
"""
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file


def load(path):
    tensors = load_file(path)
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
    layers = []
    i = 0
    while f"student.layers.{i}.weight" in tensors:
        layers.append((tensors[f"student.layers.{i}.weight"].astype(np.float64),
                       tensors[f"student.layers.{i}.bias"].astype(np.float64)))
        i += 1
    return tensors, meta, layers


def flatten(layers):
    return np.concatenate([np.concatenate([w.ravel(), b.ravel()]) for w, b in layers])


def unflatten(theta, shapes):
    out, k = [], 0
    for (wo, wi) in shapes:
        w = theta[k:k + wo * wi].reshape(wo, wi)
        k += wo * wi
        b = theta[k:k + wo]
        k += wo
        out.append((w, b))
    return out


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def loss_and_grad(theta, shapes, x, targets, weights):
    """L = mean_i w_i * sum_c -t_ic log softmax(z_i)_c and dL/dtheta for the ReLU MLP."""
    layers = unflatten(theta, shapes)
    activations, pre = [x], []
    h = x
    for i, (w, b) in enumerate(layers):
        z = h @ w.T + b
        pre.append(z)
        h = np.maximum(z, 0) if i < len(layers) - 1 else z
        activations.append(h)
    logp = log_softmax(h)
    n = x.shape[0]
    loss = np.mean(weights * -(targets * logp).sum(axis=1))
    dz = weights[:, None] * (np.exp(logp) * targets.sum(axis=1, keepdims=True) - targets) / n
    grads = []
    for i in range(len(layers) - 1, -1, -1):
        w, _ = layers[i]
        grads.append((dz.T @ activations[i], dz.sum(axis=0)))
        if i > 0:
            dz = (dz @ w) * (pre[i - 1] > 0)
    grads.reverse()
    return loss, np.concatenate([np.concatenate([gw.ravel(), gb.ravel()]) for gw, gb in grads])


def one_hot(y, c):
    return np.eye(c)[y]


def weight_bptt(tensors, meta, layers):
    shapes = [w.shape for w, _ in layers]
    classes = shapes[-1][0]
    x, y = tensors["train.x"].astype(np.float64), tensors["train.y"]
    vx, vy = tensors["val.x"].astype(np.float64), tensors["val.y"]
    batches = tensors["batches"]
    theta0 = flatten(layers)
    t_all, v_targets = one_hot(y, classes), one_hot(vy, classes)
    lr = float(meta["inner_lr"])
    optimizer = meta["optimizer"]
    # An Adam state part-way through training (a truncated-BPTT window), when given.
    m0 = tensors.get("state.first")
    v0 = tensors.get("state.second")
    step0 = int(meta.get("state_step", 0)) if m0 is not None else 0

    def val_loss(phi):
        theta = theta0.copy()
        buf = None
        m = None if m0 is None else m0.astype(np.float64)
        v = None if v0 is None else v0.astype(np.float64)
        for k, idx in enumerate(batches):
            w = 1.0 / (1.0 + np.exp(-phi[idx]))
            _, g = loss_and_grad(theta, shapes, x[idx], t_all[idx], w)
            if optimizer == "sgd":
                mu = float(meta.get("momentum", 0.0))
                buf = g if buf is None or mu == 0 else mu * buf + g
                theta = theta - lr * buf
            else:
                b1, b2 = float(meta.get("adam_beta1", 0.9)), float(meta.get("adam_beta2", 0.999))
                eps = float(meta.get("adam_eps", 1e-8))
                m = (1 - b1) * g if m is None else b1 * m + (1 - b1) * g
                v = (1 - b2) * g * g if v is None else b2 * v + (1 - b2) * g * g
                t = step0 + k + 1
                theta = theta - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        return loss_and_grad(theta, shapes, vx, v_targets, np.ones(len(vy)))[0]

    phi = tensors["commentary.logits"].astype(np.float64)
    h = 1e-6
    grad = np.zeros_like(phi)
    used = np.unique(batches)
    for i in used:
        e = np.zeros_like(phi)
        e[i] = h
        grad[i] = (val_loss(phi + e) - val_loss(phi - e)) / (2 * h)
    return grad, val_loss(phi)


def blended(tensors, classes, phi):
    """The blended inputs x~ and soft targets of a blend-ift problem."""
    x, y = tensors["train.x"].astype(np.float64), tensors["train.y"]
    pairs = tensors["pairs"]
    onehot = one_hot(y, classes)
    lam = 1.0 - 0.5 / (1.0 + np.exp(-phi[y, y[pairs]]))
    xt = lam[:, None] * x + (1 - lam[:, None]) * x[pairs]
    return xt, lam[:, None] * onehot + (1 - lam[:, None]) * onehot[pairs]


def blend_inner_grad(tensors, shapes):
    """grad_theta L_T(theta, phi) of a blend-ift problem."""
    classes = shapes[-1][0]

    def inner_grad(theta, phi):
        xt, t = blended(tensors, classes, phi)
        return loss_and_grad(theta, shapes, xt, t, np.ones(len(xt)))[1]

    return inner_grad


def closest_kink(theta, shapes, x):
    """The smallest |pre-activation| of a ReLU unit: central differences of the gradient with a
    smaller step than this see a smooth loss."""
    h, closest = x, np.inf
    for w, b in unflatten(theta, shapes)[:-1]:
        z = h @ w.T + b
        closest = min(closest, float(np.abs(z).min()))
        h = np.maximum(z, 0)
    return closest


def blend_ift(tensors, meta, layers):
    shapes = [w.shape for w, _ in layers]
    classes = shapes[-1][0]
    vx, vy = tensors["val.x"].astype(np.float64), tensors["val.y"]
    theta = flatten(layers)
    inner_grad = blend_inner_grad(tensors, shapes)
    phi = tensors["commentary.logits"].astype(np.float64)
    val_loss, v0 = loss_and_grad(theta, shapes, vx, one_hot(vy, classes), np.ones(len(vy)))
    h = 1e-6
    n = theta.size
    hessian = np.zeros((n, n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = h
        hessian[:, j] = (inner_grad(theta + e, phi) - inner_grad(theta - e, phi)) / (2 * h)
    hessian = (hessian + hessian.T) / 2
    if meta.get("inverse", "neumann") == "cg":
        p = np.linalg.solve(hessian + float(meta["cg_damping"]) * np.eye(n), v0)
    else:
        alpha, terms = float(meta["neumann_lr"]), int(meta["neumann_terms"])
        term, total = v0.copy(), v0.copy()
        for _ in range(terms):
            term = term - alpha * hessian @ term
            total = total + term
        p = alpha * total
    grad = np.zeros_like(phi)
    for idx in np.ndindex(*phi.shape):
        e = np.zeros_like(phi)
        e[idx] = h
        grad[idx] = -(inner_grad(theta, phi + e) @ p - inner_grad(theta, phi - e) @ p) / (2 * h)
    return grad, val_loss


def train_blend(path, steps, lr, out):
    """Gradient descent on a blend-ift problem's inner loss at its phi, in float64; writes the
    problem with the trained student to `out` and prints the gradient norm before and after and
    how close a ReLU unit sits to its kink (long training drives some there, where H is
    undefined). The exact
    inverse Hessian belongs at a trained theta: elsewhere H may be indefinite."""
    tensors, meta, layers = load(path)
    shapes = [w.shape for w, _ in layers]
    inner_grad = blend_inner_grad(tensors, shapes)
    phi = tensors["commentary.logits"].astype(np.float64)
    theta = flatten(layers)
    initial_norm = float(np.linalg.norm(inner_grad(theta, phi)))
    for _ in range(steps):
        theta = theta - lr * inner_grad(theta, phi)
    # The file holds float32: report the gradient at the weights as written.
    theta = theta.astype(np.float32).astype(np.float64)
    for i, (w, b) in enumerate(unflatten(theta, shapes)):
        tensors[f"student.layers.{i}.weight"] = w.astype(np.float32)
        tensors[f"student.layers.{i}.bias"] = b.astype(np.float32)
    save_file(tensors, out, metadata=meta)
    xt, _ = blended(tensors, shapes[-1][0], phi)
    print(json.dumps({"initial_gradient_norm": initial_norm,
                      "gradient_norm": float(np.linalg.norm(inner_grad(theta, phi))),
                      "closest_kink": closest_kink(theta, shapes, xt)}))


def main(path):
    tensors, meta, layers = load(path)
    solve = {"weight-bptt": weight_bptt, "blend-ift": blend_ift}[meta["problem"]]
    grad, val_loss = solve(tensors, meta, layers)
    print(json.dumps({"hypergrad": grad.ravel().tolist(), "shape": list(grad.shape),
                      "val_loss": float(val_loss)}))


if __name__ == "__main__":
    if sys.argv[1] == "--train-blend":
        train_blend(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    else:
        main(sys.argv[1])
