"""How the steps of a run execute, chosen by UBP_EXECUTOR: one process (default), a process per step, Kubernetes
Jobs or Celery workers. The last two come from optional packages (dagster-k8s, dagster-celery) and are imported
only when chosen."""

import dagster as dg

EXECUTORS = ("in_process", "multiprocess", "k8s", "celery")


def executor_for(name: str) -> dg.ExecutorDefinition:
    if name == "in_process":
        # steps share one process: a fresh interpreter per step would re-import torch for every asset
        return dg.in_process_executor
    if name == "multiprocess":
        # forkserver with the code and torch preloaded: each step forks a warm process instead of starting cold
        start = {"forkserver": {"preload_modules": ["ubp_pipeline.definitions", "torch"]}}
        return dg.multiprocess_executor.configured({"start_method": start, "max_concurrent": 2})
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor
    raise ValueError(f"UBP_EXECUTOR={name!r}: choose one of {', '.join(EXECUTORS)}")
