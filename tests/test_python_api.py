"""The README's "Use it from Python" example, run as written, and what it leaves behind."""

import re
import subprocess
import sys
from pathlib import Path

from mlflow_store import all_runs, client_for

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Use it from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    widths = re.search(r"chosen widths \[([\d, ]+)\]: ([\d.]+)x fewer MACs", out)
    assert widths, out
    assert float(widths.group(2)) > 1.0
    trial_lines = [line for line in out.splitlines() if re.match(r"^\w+_0000\d\s", line)]
    assert len(trial_lines) == 2 and all(" done " in line for line in trial_lines)
    assert "threshold=0.002" in out and "threshold=0.004" in out
    assert re.search(r"^2 trials; sweep from-python [0-9a-f]{32} in sqlite:///", out, re.M)

    # The sweep it launched is in ./mlruns, sweep -> trial -> net[i], with its own front.
    client = client_for(tmp_path)
    runs = all_runs(client)
    kinds = {}
    for run in runs:
        kinds.setdefault(run.data.tags["adprune.kind"], []).append(run)
    (sweep,) = kinds["sweep"]
    assert len(kinds["trial"]) == 2 and len(kinds["net"]) >= 2
    assert sweep.data.metrics["front_size"] >= 1
    assert sweep.data.metrics["networks"] == len(kinds["net"])
    artifacts = {a.path for a in client.list_artifacts(sweep.info.run_id, "pareto")}
    assert artifacts == {"pareto/pareto.parquet", "pareto/pareto.png"}
