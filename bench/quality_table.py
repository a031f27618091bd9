#!/usr/bin/env python3
"""Turns the reports of bench/quality_report.sh into docs/results.md (Markdown)."""
import json
import os
import sys


def load(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def spread(s):
    return f"{s['mean']:.4f} ± {s['std']:.4f}"


def steps(report):
    found = [s for s in report["steps_to_baseline_accuracy"] if s is not None]
    never = len(report["steps_to_baseline_accuracy"]) - len(found)
    mean = f"{sum(found) / len(found):.0f}" if found else "n/a"
    return f"{mean} (reached in {len(found)} of {len(found) + never} seeds; baseline: {report['steps']})"


def main(folder):
    w, t = load(folder, "weighting.json"), load(folder, "weighting-transfer.json")
    b, m = load(folder, "blending.json"), load(folder, "masks.json")
    seeds = ", ".join(str(r["seed"]) for r in w["baseline"]["runs"])
    print("# Quality report\n")
    print("Measured by `bench/quality_report.sh` on this project's 2-core machine (CPU, flex backend),")
    print(f"seeds {seeds}; mean ± sample std over seeds. Students train {w['steps']} steps of batch "
          f"{w['batch_size']} with Adam; learning never sees the test split.\n")
    print("| kind | student | metric | without | with commentary |")
    print("|---|---|---|---|---|")
    print(f"| example weighting | {w['student']} | test accuracy | {spread(w['baseline']['test_accuracy'])} | "
          f"{spread(w['with_commentary']['test_accuracy'])} |")
    print(f"| example weighting | {w['student']} | steps to the baseline's final val. accuracy | {w['steps']} | {steps(w)} |")
    print(f"| example weighting (transfer) | {t['student']} | test accuracy | {spread(t['baseline']['test_accuracy'])} | "
          f"{spread(t['with_commentary']['test_accuracy'])} |")
    print(f"| example weighting (transfer) | {t['student']} | steps to the baseline's final val. accuracy | {t['steps']} | {steps(t)} |")
    rb = b.get("random_blending")
    print(f"| label blending (1,000 images) | {b['student']} | test accuracy | none: {spread(b['baseline']['test_accuracy'])}; "
          f"random: {spread(rb['test_accuracy']) if rb else 'n/a'} | {spread(b['with_commentary']['test_accuracy'])} |")
    mk = m["masks"]
    print(f"| attention masks (spurious variant) | {m['student']} | test accuracy (de-correlated test) | "
          f"{spread(m['baseline']['test_accuracy'])} | {spread(m['with_commentary']['test_accuracy'])} |")
    print(f"| attention masks (spurious variant) | {m['student']} | mask mass inside the digit's box | – | {mk['mass_in_box']:.3f} |")
    print(f"| attention masks (spurious variant) | {m['student']} | baseline accuracy, {mk['removed_fraction']:.0%} of pixels removed | "
          f"random: {spread(mk['accuracy_random_removed'])} | most-masked: {spread(mk['accuracy_most_masked_removed'])} |")
    print("\nReading the table: steps to the baseline's final validation accuracy are evaluated every "
          f"{w['eval_every']} steps (the baseline needs all {w['steps']} by definition). On the spurious variant the "
          "validation examples come from the train split and share its shortcut, so L_V rewards "
          "the patch; the removal test shows where the masks point (removing the most-masked "
          "pixels versus random ones). Where a commentary does not help, the table says so; the "
          "configuration (small MLP students, short learning runs on 2 CPU cores) is in "
          "`bench/quality_report.sh`, with a larger GPU configuration in its header.")


if __name__ == "__main__":
    main(sys.argv[1])
