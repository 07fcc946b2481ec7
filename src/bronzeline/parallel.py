"""Run several tables at once: one worker thread per connection set, tables handed out in order.

Each worker has its own Context (its own source and warehouse connections), so nothing is shared
between threads but the config and the callbacks. The per-table advisory lock still guarantees
one run of a table at a time, across workers and across processes.
"""

from __future__ import annotations

import queue
import threading

from bronzeline.config.models import Config
from bronzeline.context import Context
from bronzeline.retry import run_tables
from bronzeline.runner import Event, Progress, Runner, TableOutcome


def run_parallel(config: Config, names: list[str] | None, *, workers: int = 1, on_event: Event | None = None,
               on_progress: Progress | None = None, debug: bool = False) -> list[TableOutcome]:
    tables = [config.table(n).name for n in names] if names else [t.name for t in config.tables]
    if workers <= 1 or len(tables) <= 1:
        with Context(config) as ctx:
            return run_tables(Runner(ctx, on_event, on_progress, debug=debug), tables)
    todo: queue.Queue[str] = queue.Queue()
    for name in tables:
        todo.put(name)
    results: dict[str, TableOutcome] = {}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with Context(config) as ctx:
                runner = Runner(ctx, on_event, on_progress, debug=debug)
                while True:
                    try:
                        name = todo.get_nowait()
                    except queue.Empty:
                        return
                    results[name] = run_tables(runner, [name])[0]
        except BaseException as exc:  # surfaced in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=work, name=f"bronzeline-worker-{i}") for i in range(min(workers, len(tables)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [results[name] for name in tables if name in results]
