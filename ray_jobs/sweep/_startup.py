"""What a launch does before training: Ray started beside the driver's own checks, and the
Tuner (new, or restored for ``--resume``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_jobs.sweep._errors import LaunchError
from ray_jobs.sweep._options import LaunchOptions
from ray_jobs.sweep._progress import make_progress_callback
from ray_jobs.sweep._ray_runtime import start_ray
from ray_jobs.sweep._search_space import param_space
from ray_jobs.sweep._sharing import with_share_store
from ray_jobs.sweep._spec import SweepSpec

if TYPE_CHECKING:
    from adprune_core.data import ArrayDataset


def restore_tuner(trainable: Any, storage: str, name: str) -> Any:
    from ray import tune

    try:
        return tune.Tuner.restore(
            str(Path(storage) / name) if "://" not in storage else f"{storage}/{name}",
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
        )
    except ModuleNotFoundError as err:
        # Tune pickles our scheduler and callbacks by module path; a sweep saved before
        # ray_jobs had its sweep/tracking/results rooms names modules that are gone.
        if not (err.name or "").startswith("ray_jobs."):
            raise
        raise LaunchError(
            f"--resume: sweep {name!r} was saved by an earlier adprune-sweep ({err.name} no "
            "longer exists) and cannot be resumed by this one; its MLflow records stay as they "
            "are: start a new sweep with another --name"
        ) from None


def build_tuner(
    spec: SweepSpec,
    opts: LaunchOptions,
    storage: str,
    name: str,
    callbacks: list[Any],
    loaded: ArrayDataset | None = None,
) -> Any:
    from ray import tune

    from ray_jobs.sweep._result_log import KeepLocalJsonLoggerCallback
    from ray_jobs.sweep._scheduler import ActivationDensityScheduler
    from ray_jobs.sweep._search_alg import make_search_alg
    from ray_jobs.sweep._trainable import adprune_trainable
    from ray_jobs.sweep._worker_process import PreloadedData, data_key

    function: Any = adprune_trainable
    if loaded is not None:
        function = tune.with_parameters(
            adprune_trainable, preloaded=PreloadedData(data_key(spec), loaded)
        )
    trainable = tune.with_resources(
        function, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    )
    if opts.resume:
        return restore_tuner(trainable, storage, name)
    max_concurrent = opts.max_concurrent if opts.max_concurrent is not None else spec.max_concurrent
    scheduler = ActivationDensityScheduler()
    return tune.Tuner(
        trainable,
        param_space=with_share_store(param_space(spec), spec, storage, name, opts.share),
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            # Tune applies max_concurrent_trials only to its own default generator.
            search_alg=make_search_alg(spec, scheduler, max_concurrent or 0),
            num_samples=opts.num_samples or spec.num_samples,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[make_progress_callback(), KeepLocalJsonLoggerCallback(), *callbacks],
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )


def shut_down_ray() -> None:
    """After a stop Tune saved: end the embedded Ray, or leave the cluster."""
    import ray

    with contextlib.suppress(KeyboardInterrupt):  # a second signal: skip it, end now
        ray.shutdown()


def start_ray_beside(check_store: Callable[[], Any], opts: LaunchOptions, runtime_env: Any) -> str:
    """Start (or join) Ray while ``check_store`` runs in a thread; where Ray runs.

    The store's check keeps one core busy for seconds (a new MLflow store creates its
    schema: ~3 s here), while Ray's start mostly waits for its own processes: side by side
    they cost the longer of the two. A failed check is still the error reported, and Ray is
    stopped again. (The dataset is checked before this, so that a sweep that cannot train
    fails before Ray starts.)
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adprune-store-check")
    checked: Future[Any] = pool.submit(check_store)
    try:
        try:
            where = start_ray(opts.cluster, runtime_env)
        except KeyboardInterrupt:
            raise
        except BaseException:
            checked.result()  # the earlier check's error comes first, as without the overlap
            raise
        try:
            checked.result()
        except BaseException:
            shut_down_ray()
            raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return where
