"""How to run a sweep: the options of ``launch``, as the CLI's flags give them."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


@dataclass
class LaunchOptions:
    """How to run a sweep of a spec; every field has the CLI's default."""

    cluster: str | None = None  # None: embedded local Ray; "auto" or HOST:PORT: a cluster
    storage: str | None = None  # trial state and checkpoints; default ./runs
    name: str | None = None  # default: the spec's name
    resume: bool = False
    num_samples: int | None = None  # overrides the spec's
    max_concurrent: int | None = None  # overrides the spec's
    max_failures: int = 3  # retries per trial, each from its last checkpoint
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else ./mlruns sqlite
    spec_label: str | None = None  # the spec's file, for errors and the resume command
    py_modules: list[str] = field(default_factory=list)  # plugin packages Ray ships to workers
    working_dir: str | None = None  # a folder Ray ships to workers as their working directory
    register_as: str | None = None  # registered model name for the chosen network at the end
    share: bool = True  # False: every trial trains all its epochs itself (--no-share)

    def resume_command(self, name: str) -> str:
        """The command line that goes on with sweep ``name`` launched with these options."""
        parts = ["adprune-sweep", "launch"]
        if self.spec_label:
            parts.append(shlex.quote(self.spec_label))
        parts += ["--name", shlex.quote(name)]
        if self.storage:
            parts += ["--storage", shlex.quote(self.storage)]
        if self.cluster:
            parts += ["--cluster", shlex.quote(self.cluster)]
        for module in self.py_modules:
            parts += ["--py-module", shlex.quote(module)]
        if self.working_dir:
            parts += ["--working-dir", shlex.quote(self.working_dir)]
        return " ".join([*parts, "--resume"])
