"""Starting a run from the app: the checks (settings, this workspace's share of the queue, disk space), the run's
folder, and its ticket in the app's queue (one per data root; its own training slots)."""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

from pipeline.config import DatasetConfig, RunConfig
from pipeline.dataset import Dataset, require_trainable
from pipeline.errors import RetrainError
from pipeline.files import describe_write_error
from pipeline.run_dataset import summarize_dataset, write_run_dataset
from pipeline.run_queue import RunQueue
from pipeline.runs import RunDir, max_jobs, refreshed_status
from pipeline.settings import default_bottleneck_dir
from pipeline.studio.datasets import dataset_config
from pipeline.studio.hosting import data_root, max_queued_per_workspace
from pipeline.studio.next_run import resolved_config
from pipeline.studio.quotas import RUN_RESERVE_MB, check_quota
from pipeline.studio.run_history import is_active, new_run_name, workspace_runs
from pipeline.studio.workspaces import Workspace


def start_run(workspace: Workspace, config: RunConfig, images: Dataset | None = None) -> RunDir:
    """Write a new run folder with `config` (dataset from the workspace) and put it in the app's queue.

    `images` is the current dataset as the page read it (its broken images marked): it must be trainable. The
    settings, this workspace's share of the queue and the disk space are checked too, before anything is written;
    the queue starts the run at once when a training slot is free.
    The dataset's decisions are copied into the run, so deciding more later changes the next run, not this one.
    """
    dataset = dataset_config(workspace)
    if dataset is None:
        raise RetrainError("choose a dataset first (Dataset page)")
    if images is not None:
        require_trainable(images)
    config = resolved_config(workspace, config).validate()
    # One start at a time per workspace (two tabs pressing Start together): the count and the new run are one step.
    with open(workspace.path / ".start.lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        waiting = [run.name for run in workspace_runs(workspace) if is_active(refreshed_status(run))]
        if len(waiting) >= max_queued_per_workspace():
            raise RetrainError(
                f"this workspace already has {len(waiting)} runs queued or training, the most it "
                "may have; wait for one to finish, or cancel one"
            )
        check_quota(workspace, RUN_RESERVE_MB << 20, "a new run")
        run = RunDir(workspace.runs / new_run_name())
        try:
            run.path.mkdir(parents=True)
            if images is not None:  # a queued run already says what it trains on; the run rewrites it once read
                write_run_dataset(run.path, summarize_dataset(images, dataset))
            _write_run(workspace, run, config, dataset)
        except OSError as error:  # a full disk, most likely: say so on the page, not as a traceback
            shutil.rmtree(run.path, ignore_errors=True)  # ours, made above: a refused run leaves nothing behind
            raise RetrainError(f"the run could not be started: {describe_write_error(error, run.path)}") from None
        except BaseException:
            shutil.rmtree(run.path, ignore_errors=True)
            raise
    workspace.update_state(run=run.name)
    dispatch_queue(workspace.path.parents[1])
    return run


def _write_run(workspace: Workspace, run: RunDir, config: RunConfig, dataset: DatasetConfig) -> None:
    """The run's folder (config, its own copy of the decisions, status) and its ticket in the queue."""
    run.marker.touch()  # made just now by start_run for this run: ours, so the run may write into it
    if dataset.overrides and Path(dataset.overrides).is_file():
        shutil.copyfile(dataset.overrides, run.path / "overrides.json")
        config.dataset.overrides = str(run.path / "overrides.json")
    else:
        config.dataset.overrides = None
    config.output.output_dir = str(run.path)
    config.output.bottleneck_dir = str(bottleneck_folder(workspace, dataset))
    config.save(run.config)
    queue = app_queue(workspace.path.parents[1])
    run.write_status("queued", 0.0, "waiting for a free training slot", pid=0, waiting=True, queue=str(queue.folder))
    queue.submit(run.path, owner=workspace.token)


def bottleneck_folder(workspace: Workspace, dataset: DatasetConfig) -> Path:
    """Where a dataset's bottlenecks are cached: inside the workspace for uploads, shared for server folders.

    Uploaded photos are private: a shared cache would tell a stranger's run (by what it reused)
    that someone else uploaded the same photos. Server folders and samples are there for everyone, so
    their bottlenecks are shared and a sample trains fast in every new workspace.
    """
    sources = [value for value in (dataset.image_dir, dataset.zip, dataset.label_csv) if value]
    if any(Path(value).resolve().is_relative_to(workspace.path.resolve()) for value in sources):
        return workspace.path / "cache" / "bottlenecks"
    return default_bottleneck_dir()


def app_queue(root: Path | None = None) -> RunQueue:
    """The training queue of this data root (its own slots: CLI runs elsewhere on the machine never hold one)."""
    return RunQueue((root or data_root()) / "queue")


def dispatch_queue(root: Path | None = None) -> list[int]:
    """Start the next queued runs while training slots are free (cheap when none is; called on every refresh)."""
    return app_queue(root).dispatch(max_jobs())


def queue_place(run: RunDir):
    """Where a queued run stands (pipeline.run_queue.Place: position, waiting, running, estimate), or None."""
    queue = refreshed_status(run).get("queue")
    try:
        return RunQueue(queue).place(run.path, max_jobs()) if isinstance(queue, str) else None
    except RetrainError:  # an unreadable queue: the page shows the run as waiting, without its place
        return None
