// `/dags/{dagId}/runs/{runId}`: one run's tasks with their attempts, times and logs; cancel and
// clear. A run that has not ended reads itself again every REFRESH_MS until it does.
import { useState } from 'preact/hooks';
import {
  api,
  apiText,
  type Dag,
  dagPath,
  FINISHED_RUN,
  type Run,
  runPath,
  type TaskInstance,
  taskPath,
} from '../api.ts';
import { Empty, ErrorBox, Loading } from '../components.tsx';
import { durationMs, formatDuration, formatTime } from '../format.ts';
import { useLoad } from '../hooks.ts';
import { Link, links } from '../router.tsx';
import { StatusBadge } from '../status.tsx';

const REFRESH_MS = 1500;
/** Where a task's last error is still news; a task that succeeded later has moved past it. */
const FAILING = new Set(['failed', 'up_for_retry']);

/** A task's name in the run view: a mapped instance's with its index, `load[3]`. */
const taskName = (t: TaskInstance) =>
  t.mapIndex === undefined ? t.taskId : `${t.taskId}[${t.mapIndex}]`;

function LogView(props: { dagId: string; runId: string; task: TaskInstance }) {
  const { dagId, runId, task } = props;
  const latest = Math.max(task.attempt, 1);
  // No choice made (or the latest chosen): follow the latest attempt as new ones start.
  const [chosen, setChosen] = useState<number>();
  const attempt = chosen ?? latest;
  const setAttempt = (n: number) => setChosen(n === latest ? undefined : n);
  // Read again when the task moves on (a new attempt, a new status): its log grows.
  const loaded = useLoad(
    async () => ({
      attempt,
      text: await apiText(
        `${taskPath(dagId, runId, task.taskId)}/logs?attempt=${attempt}${task.mapIndex === undefined ? '' : `&mapIndex=${task.mapIndex}`}`,
      ),
    }),
    [dagId, runId, task.taskId, task.mapIndex, attempt, task.attempt, task.status],
  );
  // Another attempt's text is never shown under this attempt's tab while it loads.
  const log = {
    ...loaded,
    data: loaded.data?.attempt === attempt ? loaded.data.text : undefined,
    loading: loaded.loading || loaded.data?.attempt !== attempt,
  };
  const attempts = Array.from({ length: latest }, (_, i) => i + 1);
  return (
    <div class="log" id={`log-${taskName(task)}`}>
      <fieldset class="tabs">
        <legend class="visually-hidden">Attempts of {taskName(task)}</legend>
        {attempts.map((n) => (
          <button
            key={n}
            type="button"
            class="tab"
            aria-pressed={n === attempt}
            onClick={() => setAttempt(n)}
          >
            Attempt {n}
          </button>
        ))}
        <button type="button" class="btn small" onClick={log.reload}>
          Reload log
        </button>
      </fieldset>
      {log.error ? (
        <ErrorBox title="Could not read the log:" error={log.error} />
      ) : log.loading && log.data === undefined ? (
        <Loading what="the log" />
      ) : log.data === undefined ? (
        <p class="muted">No log for attempt {attempt} yet.</p>
      ) : (
        <pre class="log-text" data-attempt={attempt}>
          {log.data || '(empty log)'}
        </pre>
      )}
    </div>
  );
}

function Gantt(props: { task: TaskInstance; from: number; to: number }) {
  const { task, from, to } = props;
  if (!task.startTime) return <div class="gantt" />;
  const span = Math.max(to - from, 1000);
  const start = Date.parse(task.startTime);
  const end = task.endTime ? Date.parse(task.endTime) : to;
  const left = Math.min(Math.max(((start - from) / span) * 100, 0), 100);
  const width = Math.max(((end - start) / span) * 100, 0.8);
  return (
    <div class="gantt" aria-hidden="true">
      <div
        class={`bar st-${task.status}`}
        style={{ left: `${left}%`, width: `${Math.min(width, 100 - left)}%` }}
      />
    </div>
  );
}

export function RunPage(props: { dagId: string; runId: string }) {
  const { dagId, runId } = props;
  const [open, setOpen] = useState<string>();
  const [actionError, setActionError] = useState<string>();
  const [busy, setBusy] = useState(false);
  // The DAG only orders the rows as its tasks are written (upstream first); without it (a
  // deleted DAG) they keep the API's order.
  const dag = useLoad(() => api<Dag>('GET', dagPath(dagId)), [dagId]);
  const run = useLoad(
    () => api<Run>('GET', runPath(dagId, runId)),
    [dagId, runId],
    (r) => (FINISHED_RUN.has(r.status) ? undefined : REFRESH_MS),
  );

  const act = async (what: string, path: string) => {
    setBusy(true);
    setActionError(undefined);
    try {
      await api('POST', path);
    } catch (e) {
      setActionError(`Could not ${what}: ${(e as Error).message}`);
    } finally {
      setBusy(false);
      run.reload();
    }
  };

  const crumbs = (
    <nav class="crumbs" aria-label="Breadcrumbs">
      <Link href={links.dags()}>DAGs</Link> / <Link href={links.dag(dagId)}>{dagId}</Link> /{' '}
      <span>{runId}</span>
    </nav>
  );
  if (run.error && !run.data) {
    return (
      <section>
        {crumbs}
        <ErrorBox title={`Could not load run ${runId}:`} error={run.error} />
      </section>
    );
  }
  if (!run.data) return <Loading what={`run ${runId}`} />;
  const r = run.data;
  const order = new Map(dag.data?.tasks?.map((t, i) => [t.taskId, i]) ?? []);
  const tasks = [...r.tasks].sort(
    (a, b) => (order.get(a.taskId) ?? order.size) - (order.get(b.taskId) ?? order.size),
  );
  const active = !FINISHED_RUN.has(r.status);
  const starts = r.tasks.flatMap((t) => (t.startTime ? [Date.parse(t.startTime)] : []));
  const from = r.startTime ? Date.parse(r.startTime) : Math.min(...starts, Date.now());
  const ends = r.tasks.flatMap((t) => (t.endTime ? [Date.parse(t.endTime)] : []));
  const to = active || !r.endTime ? Math.max(Date.now(), ...ends) : Date.parse(r.endTime);
  const runDuration = durationMs(r.startTime, r.endTime);

  return (
    <section>
      {crumbs}
      <div class="page-head">
        <h1 class="run-title">
          Run <code>{r.runId}</code>
        </h1>
        <StatusBadge status={r.status} />
        {active && (
          <button
            type="button"
            class="btn danger"
            disabled={busy}
            onClick={() => void act('cancel the run', `${runPath(dagId, runId)}/cancel`)}
          >
            Cancel run
          </button>
        )}
      </div>
      {active && (
        <p class="muted small" aria-live="polite">
          The run is {r.status}; this page refreshes itself until it ends.
        </p>
      )}
      {actionError && <ErrorBox title="" error={actionError} />}
      {run.error && <ErrorBox title="Could not refresh:" error={run.error} />}
      {r.error && <ErrorBox title="The run failed:" error={r.error} />}
      <dl class="facts">
        <dt>Logical date</dt>
        <dd>{formatTime(r.logicalDate)}</dd>
        <dt>Started</dt>
        <dd>{formatTime(r.startTime)}</dd>
        <dt>Ended</dt>
        <dd>{formatTime(r.endTime)}</dd>
        <dt>Duration</dt>
        <dd>{runDuration === undefined ? '—' : formatDuration(runDuration)}</dd>
        <dt>DAG version</dt>
        <dd>{r.dagVersion}</dd>
        <dt>Conf</dt>
        <dd>
          <code class="conf">{JSON.stringify(r.conf)}</code>
        </dd>
      </dl>

      <div class="card">
        <h2>Tasks</h2>
        {tasks.length === 0 ? (
          <Empty>This run has no task instances yet.</Empty>
        ) : (
          <table class="table tasks">
            <thead>
              <tr>
                <th scope="col">Status</th>
                <th scope="col">Task</th>
                <th scope="col">Attempt</th>
                <th scope="col">Started</th>
                <th scope="col">Duration</th>
                <th scope="col" class="gantt-col">
                  Timeline
                </th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {tasks.map((t) => {
                const ms = durationMs(t.startTime, t.endTime);
                const name = taskName(t);
                const isOpen = open === name;
                return [
                  <tr key={name} data-task={name}>
                    <td>
                      <StatusBadge status={t.status} />
                    </td>
                    <td>
                      <strong>{name}</strong>
                      {t.mapLength !== undefined && (
                        <span class="muted small"> mapped: {t.mapLength}</span>
                      )}
                      {t.error && FAILING.has(t.status) && (
                        <div class="inline-error small">{t.error}</div>
                      )}
                    </td>
                    <td class="num">{t.attempt}</td>
                    <td class="nowrap">{formatTime(t.startTime)}</td>
                    <td class="num">{ms === undefined ? '—' : formatDuration(ms)}</td>
                    <td class="gantt-col">
                      <Gantt task={t} from={from} to={to} />
                    </td>
                    <td class="actions">
                      <button
                        type="button"
                        class="btn small"
                        aria-expanded={isOpen}
                        aria-controls={`log-${name}`}
                        onClick={() => setOpen(isOpen ? undefined : name)}
                      >
                        {isOpen ? 'Hide log' : 'Log'}
                      </button>
                      <button
                        type="button"
                        class="btn small"
                        disabled={busy}
                        aria-label={`Clear ${name}`}
                        title={
                          t.mapIndex === undefined
                            ? 'Run this task again, and every task that depends on it'
                            : 'Run this instance again, and every task that depends on its task'
                        }
                        onClick={() =>
                          void act(
                            `clear ${name}`,
                            `${taskPath(dagId, runId, t.taskId)}/clear${t.mapIndex === undefined ? '' : `?mapIndex=${t.mapIndex}`}`,
                          )
                        }
                      >
                        Clear
                      </button>
                    </td>
                  </tr>,
                  isOpen && (
                    <tr key={`${name}-log`} class="log-row">
                      <td colSpan={7} class="log-cell">
                        <LogView dagId={dagId} runId={runId} task={t} />
                      </td>
                    </tr>
                  ),
                ];
              })}
            </tbody>
          </table>
        )}
      </div>
    </section>
  );
}
