"""Which threads work for a training run (tracing.threads, tracing.context).

Real threads and a real ThreadPoolExecutor, with a run destination pushed as a Monitor
does: a thread the run's work starts, and pool work it submits, belong to the run while it
is active; a pool's worker threads, threads started elsewhere and pool work submitted
elsewhere belong to none. The patches come and go with a registry of their own.
"""

import concurrent.futures
import threading

import pytest


@pytest.fixture
def run():
    from synalinks_obs.patching.registry import PatchRegistry
    from synalinks_obs.tracing import context, threads
    from synalinks_obs.tracing.records import Destination

    original_start = threading.Thread.start
    registry = PatchRegistry()
    threads.install(registry)
    destination = Destination("sqlite:///x.db", "runs", "1", "run-1", trace_kind="training")
    context.push_run_destination(destination)
    token = context.DESTINATION_OVERRIDE.set(destination)
    yield destination
    context.DESTINATION_OVERRIDE.reset(token)
    context.pop_run_destination(destination)
    registry.revert()
    assert threading.Thread.start is original_start


def _seen_in_thread(start=True):
    from synalinks_obs.tracing import context

    seen = []
    thread = threading.Thread(target=lambda: seen.append(context.run_destination()))
    if start:
        thread.start()
        thread.join()
    return seen, thread


def test_threads_and_pool_work_of_the_run(run):
    from synalinks_obs.tracing import context

    seen, _ = _seen_in_thread()
    assert seen == [run]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        assert pool.submit(context.run_destination).result() == run
        # the worker thread itself is not the run's: work submitted from elsewhere is not
        outside = []
        token = context.DESTINATION_OVERRIDE.set(None)
        try:
            thread = threading.Thread(target=lambda: outside.append(pool.submit(context.run_destination).result()))
            thread.start()
            thread.join()
        finally:
            context.DESTINATION_OVERRIDE.reset(token)
        assert outside == [None]
    finally:
        pool.shutdown()


def test_a_thread_started_elsewhere_works_for_no_run(run):
    from synalinks_obs.tracing import context

    token = context.DESTINATION_OVERRIDE.set(None)
    try:
        seen, _ = _seen_in_thread()
    finally:
        context.DESTINATION_OVERRIDE.reset(token)
    assert seen == [None]


def test_a_runs_threads_are_forgotten_when_it_ends(run):
    from synalinks_obs.runtime import RUNTIME
    from synalinks_obs.tracing import context

    release, seen = threading.Event(), []

    def later():
        release.wait(30)
        seen.append(context.run_destination())

    thread = threading.Thread(target=later)
    thread.start()
    assert RUNTIME.run_threads.get(thread) == run
    context.pop_run_destination(run)  # the run ends while its thread still runs
    release.set()
    thread.join()
    assert seen == [None] and thread not in RUNTIME.run_threads
    context.push_run_destination(run)  # (the fixture pops it)
