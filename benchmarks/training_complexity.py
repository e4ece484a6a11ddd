"""Training complexity (Eq. 1) of each quickstart trial, next to the fixed-epoch baseline
that trains net0 for the same total number of epochs (the paper: 0.31-0.64x)."""

import tempfile
from pathlib import Path

from common import REPO, launch, reproduce, trial_results

if __name__ == "__main__":
    reproduce("training_complexity.py")
    folder = Path(tempfile.mkdtemp(prefix="adprune-bench-"))
    launch((REPO / "sweeps" / "quickstart.yaml").read_text(), folder)
    print(
        f"{'threshold':>10}  {'rounds':>6}  {'epochs':>6}  {'TC (Eq. 1)':>10}  "
        f"{'baseline':>8}  {'ratio':>6}  {'MACs red.':>9}  accuracy"
    )
    ratios = []
    for rows in trial_results(folder, "quickstart").values():
        last = rows[-1]
        threshold = last["config"]["spec"]["prune"]["rho"]["threshold"]
        tc, base = last["final_training_complexity"], last["final_baseline_complexity"]
        ratios.append(tc / base)
        print(
            f"{threshold:>10g}  {last['final_rounds']:>6}  {base:>6.0f}  {tc:>10.2f}  "
            f"{base:>8.0f}  {tc / base:>5.2f}x  {last['final_mac_reduction']:>8.1f}x  "
            f"{100 * last['final_accuracy']:.1f}%"
        )
    print(
        f"training complexity / fixed-epoch baseline: {min(ratios):.2f}x to {max(ratios):.2f}x "
        "(the paper: 0.31x to 0.64x)"
    )
