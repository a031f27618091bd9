#!/usr/bin/env python3
"""Turns the reports of bench/quality_report.sh into docs/results.md (Markdown)."""
import json
import math
import os
import sys


def load(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def spread(s):
    return f"{s['mean']:.4f} ± {s['std']:.4f}"


def z(with_arm, without_arm):
    """z of the gain, each arm's std at least 0.01 (as the apply report computes it)."""
    n, m = len(with_arm["runs"]), len(without_arm["runs"])
    sw = max(with_arm["test_accuracy"]["std"], 0.01)
    sb = max(without_arm["test_accuracy"]["std"], 0.01)
    gain = with_arm["test_accuracy"]["mean"] - without_arm["test_accuracy"]["mean"]
    return gain / math.sqrt(sw * sw / n + sb * sb / m)


def steps(report):
    found = [s for s in report["steps_to_baseline_accuracy"] if s is not None]
    mean = f"{sum(found) / len(found):.0f}" if found else "never"
    return f"{mean} (in {len(found)} of {len(report['steps_to_baseline_accuracy'])} seeds)"


def references(report):
    arms = list(report.get("reference_arms") or [])
    if report.get("random_blending"):
        arms.append({"name": "random blending", "arm": report["random_blending"]})
    return "; ".join(f"{a['name']}: {spread(a['arm']['test_accuracy'])}" for a in arms) or "–"


def row(title, report):
    b, w = report["baseline"], report["with_commentary"]
    noise = report.get("label_noise")
    found = f"AUROC {noise['auroc']:.3f}, precision {noise['precision_at_noise_rate']:.3f}" if noise else "–"
    over = report.get("gain_over_best_reference")
    over = f"{over:+.4f}" if over is not None else "–"
    harmful = " **harmful**" if report.get("harmful") else ""
    print(f"| {title} | {report['student']} | {spread(b['test_accuracy'])} | {spread(w['test_accuracy'])} | "
          f"{report['test_accuracy_gain']:+.4f} (z {z(w, b):.1f}){harmful} | {references(report)} | {over} | {found} |")


def main(folder):
    first = load(folder, "pair40-table.json")
    seeds = ", ".join(str(r["seed"]) for r in first["baseline"]["runs"])
    print("# Quality report\n")
    print("Measured by `bench/quality_report.sh` on this project's 2-core machine (CPU, flex backend), "
          f"student seeds {seeds}; mean ± sample std over seeds; z = gain / sqrt(s_with²/n + s_without²/n) "
          "(each s at least 0.01). Students train "
          f"{first['steps']} steps of batch {first['batch_size']} with Adam (lr 1e-3). The corrupted variants of "
          "the MNIST fixture come from `commentary dataset corrupt` (500 clean, class-balanced `val` examples "
          "held out of train first; test stays clean); learning measures L_V on `val` and never sees test.\n")
    print("| scenario | student | without | with commentary | gain | reference arms | gain over best reference | flipped labels found by low weight |")
    print("|---|---|---|---|---|---|---|---|")
    row("40% pair noise, tabular weights (truncated BPTT, 1-step look-ahead)", first)
    row("40% pair noise, teacher mlp:32 with a per-class head", load(folder, "pair40-head.json"))
    row("40% pair noise, teacher mlp:32 with the label as an input", load(folder, "pair40-input.json"))
    row("40% symmetric noise, tabular weights", load(folder, "sym40-table.json"))
    row("imbalance 50:1, balanced val, tabular weights", load(folder, "imbalance50-table.json"))
    sp = load(folder, "spurious-masks.json")
    spf = load(folder, "spurious-masks-full.json")
    row("spurious patch (de-correlated val and test), masks by IFT, range half (default)", sp)
    row("spurious patch, masks by IFT, range full", spf)
    row("clean data, masks with default settings (CBR), range half", load(folder, "clean-masks.json"))
    row("clean data, masks with default settings (CBR), range full", load(folder, "clean-masks-full.json"))
    t = load(folder, "clean-teacher.json")
    row("clean data, BPTT teacher", t)
    row("clean data, BPTT teacher learned with mlp:64, applied to CBR", load(folder, "clean-teacher-cbr.json"))
    row("clean data, 1,000 images, label blending", load(folder, "blending.json"))
    print()
    for name, report in [("half", sp), ("full", spf)]:
        mk = report["masks"]
        print(f"Masks (range {name}) on the spurious variant: mask mass inside the digit's box "
              f"{mk['mass_in_box']:.3f}; baseline students with the most-masked {mk['removed_fraction']:.0%} of "
              f"pixels removed {spread(mk['accuracy_most_masked_removed'])}, with as many random pixels removed "
              f"{spread(mk['accuracy_random_removed'])}.")
    print(f"BPTT teacher on clean data: steps to the baseline's final validation accuracy {steps(t)} "
          f"(evaluated every {t['eval_every']} steps; the baseline needs {t['steps']}).")


if __name__ == "__main__":
    main(sys.argv[1])
