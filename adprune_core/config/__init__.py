"""The spec, without torch: every section a schedule reads, how it loads from YAML, and the
names and formulas every room shares.

- :class:`ScheduleSpec` and its sections; :func:`load_spec`, :func:`spec_from_dict`;
- :class:`SpecError` and the other one-line errors a user can cause;
- :func:`net_name`, :func:`training_complexity` (Eq. 1), :data:`LATENCY_FIELDS`,
  :class:`Objective` and :func:`parse_objectives` (``COLUMN:max|min``).
"""

from adprune_core.config.catalog import BUILTIN_ARCHS, DATASETS, FIXED_DATASET_SHAPES
from adprune_core.config.definitions import (
    LATENCY_FIELDS,
    DataShape,
    Objective,
    net_label,
    net_name,
    parse_objectives,
    training_complexity,
)
from adprune_core.config.errors import (
    ArchError,
    DatasetNotFoundError,
    DeviceUnavailable,
    PluginError,
    SpecError,
    TrainingDiverged,
)
from adprune_core.config.loading import (
    apply_overrides,
    flatten,
    get_dotted,
    load_spec,
    read_yaml,
    set_dotted,
    spec_from_dict,
    spec_to_dict,
    validate_as,
)
from adprune_core.config.plugin_loading import DATASET_GROUP, MODEL_GROUP
from adprune_core.config.spec import (
    PRECISIONS,
    STRICT,
    DataSpec,
    DeltaSpec,
    FinalSpec,
    LatencySpec,
    ModelSpec,
    Number,
    PruneSpec,
    RecordSpec,
    RhoSpec,
    ScheduleSpec,
    SyntheticSpec,
    TrainSpec,
)

__all__ = [
    "BUILTIN_ARCHS",
    "DATASETS",
    "DATASET_GROUP",
    "FIXED_DATASET_SHAPES",
    "LATENCY_FIELDS",
    "MODEL_GROUP",
    "PRECISIONS",
    "STRICT",
    "ArchError",
    "DataShape",
    "DataSpec",
    "DatasetNotFoundError",
    "DeltaSpec",
    "DeviceUnavailable",
    "FinalSpec",
    "LatencySpec",
    "ModelSpec",
    "Number",
    "Objective",
    "PluginError",
    "PruneSpec",
    "RecordSpec",
    "RhoSpec",
    "ScheduleSpec",
    "SpecError",
    "SyntheticSpec",
    "TrainSpec",
    "TrainingDiverged",
    "apply_overrides",
    "flatten",
    "get_dotted",
    "load_spec",
    "net_label",
    "net_name",
    "parse_objectives",
    "read_yaml",
    "set_dotted",
    "spec_from_dict",
    "spec_to_dict",
    "training_complexity",
    "validate_as",
]
