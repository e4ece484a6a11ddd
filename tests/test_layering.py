import pkgutil
import subprocess
import sys

import adprune_core


def test_core_never_imports_ray_or_mlflow():
    modules = [f"adprune_core.{m.name}" for m in pkgutil.iter_modules(adprune_core.__path__)]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(modules) >= 8
    assert out.stdout.strip() == ""
