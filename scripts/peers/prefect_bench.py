"""The Prefect side of `npm run bench:peers` (scripts/bench-peers.ts starts the server and this).

It talks to a running `prefect server start` through PREFECT_API_URL, so every flow run and
task run is persisted in the server's SQLite database, as in a real deployment.

Protocol: one command per line on stdin, one JSON line per command on stdout.
  chain N    a flow of N noop tasks, each waiting on the one before
  fanout N   a flow of root -> N parallel noop tasks -> sink
  quit
Each answer: {"shape", "tasks", "clientS", "runS", "persistedS", "state", "taskRuns"}, or
{"error": "..."}. Prefect's own console output goes to stderr, which the caller keeps in a file.
"""

import json
import os
import sys
import time

# The protocol keeps the real stdout; anything else that prints (Prefect's console logger, a
# warning) goes to stderr, so that it cannot corrupt an answer.
protocol = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)

import httpx  # noqa: E402  (after the redirect: importing Prefect may print)
from prefect import flow, task  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

API = os.environ["PREFECT_API_URL"].rstrip("/")
# How long to wait for the server to hold every task run of a finished flow run as COMPLETED.
PERSIST_WAIT_S = 30.0
PERSIST_POLL_S = 0.025


@task
def noop(i: int | None = None) -> None:
    return None


@flow
def chain(n: int) -> None:
    # A Prefect user writes a chain as plain calls in order: a task call returns once the task
    # has finished (and its state is recorded), so each task waits on the one before.
    for _ in range(n):
        noop()


# The default task runner, stated: a thread pool, unbounded in 3.9 unless
# PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS says otherwise; .submit and .map are the
# documented way to run tasks concurrently, and wait_for the way to order tasks without data.
@flow(task_runner=ThreadPoolTaskRunner())
def fanout(n: int) -> None:
    root = noop.submit()
    middle = noop.map(range(n), wait_for=[root])
    noop.submit(wait_for=middle).result()


def completed_task_runs(http: httpx.Client, flow_run_id: str) -> int:
    body = {
        "task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        "flow_runs": {"id": {"any_": [flow_run_id]}},
    }
    res = http.post(f"{API}/task_runs/count", json=body, timeout=10)
    res.raise_for_status()
    return int(res.json())


def measure(shape: str, n: int, http: httpx.Client) -> dict:
    fn = chain if shape == "chain" else fanout
    tasks = n if shape == "chain" else n + 2
    t0 = time.perf_counter()
    # Prefect's defaults, untuned. One of them shows in the client clock: a sync flow call joins
    # its heartbeat thread on exit (prefect/flow_engine.py _send_heartbeats, on by default every
    # 180 s), which sleeps in 1-second steps, so the call returns at that thread's next tick,
    # up to 1 s after the flow run's end_time.
    state = fn(n, return_state=True)
    client_s = time.perf_counter() - t0
    flow_run_id = str(state.state_details.flow_run_id)
    # Task run states reach the server as events, written by its task run recorder after the
    # flow has returned: this is how long until the server holds every one of them. Waiting for
    # it also keeps that backlog from landing on the next run (of either system): without the
    # wait, the next flow call was seen to wait up to 2 s for the server.
    persisted_s = None
    count = 0
    deadline = time.monotonic() + PERSIST_WAIT_S
    while time.monotonic() < deadline:
        count = completed_task_runs(http, flow_run_id)
        if count >= tasks:
            persisted_s = time.perf_counter() - t0
            break
        time.sleep(PERSIST_POLL_S)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    run_s = None
    if run.start_time and run.end_time:
        run_s = (run.end_time - run.start_time).total_seconds()
    return {
        "shape": shape,
        "tasks": tasks,
        "clientS": client_s,
        "runS": run_s,
        "persistedS": persisted_s,
        "state": state.type.value,
        "taskRuns": count,
        "flowRunId": flow_run_id,
    }


def main() -> int:
    import prefect

    protocol.write(json.dumps({"ready": True, "prefect": prefect.__version__}) + "\n")
    with httpx.Client() as http:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                return 0
            try:
                if words[0] not in ("chain", "fanout") or len(words) != 2:
                    raise ValueError(f"unknown command: {line.strip()}")
                answer = measure(words[0], int(words[1]), http)
            except Exception as e:  # noqa: BLE001  (the caller reports it and stops)
                answer = {"error": f"{type(e).__name__}: {e}"}
            protocol.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
