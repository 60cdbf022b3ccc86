// `/dags/{dagId}`: the grid of recent runs × tasks, the graph, the next runs and a trigger form.
import { useEffect, useState } from 'preact/hooks';
import {
  api,
  type Dag,
  dagPath,
  FINISHED_RUN,
  type Run,
  type RunSummary,
  runPath,
} from '../api.ts';
import { Empty, ErrorBox, Loading, PauseSwitch } from '../components.tsx';
import { formatTime } from '../format.ts';
import { DagGraph } from '../graph.tsx';
import { useLoad } from '../hooks.ts';
import { Link, links, navigate } from '../router.tsx';
import { Legend, StatusSquare, statusText } from '../status.tsx';

const GRID_RUNS = 20;
/** How often the page reads again while one of its runs is still going. */
const REFRESH_MS = 3000;

/** The conf as an object, or what is wrong with it, in words. */
export function parseConf(text: string): { conf: Record<string, unknown> } | { error: string } {
  if (text.trim() === '') return { conf: {} };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { error: `Conf is not valid JSON: ${(e as Error).message}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const what = Array.isArray(value) ? 'an array' : value === null ? 'null' : typeof value;
    return { error: `Conf must be a JSON object such as {"key": "value"}, not ${what}.` };
  }
  return { conf: value as Record<string, unknown> };
}

function TriggerForm(props: { dagId: string }) {
  const [text, setText] = useState('{}');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const parsed = parseConf(text);
    if ('error' in parsed) {
      setError(parsed.error);
      return;
    }
    setError(undefined);
    setBusy(true);
    try {
      const run = await api<{ runId: string }>('POST', `${dagPath(props.dagId)}/runs`, {
        conf: parsed.conf,
      });
      navigate(links.run(props.dagId, run.runId));
    } catch (err) {
      setError(`The API refused the run: ${(err as Error).message}`);
      setBusy(false);
    }
  };
  return (
    <form class="card trigger" onSubmit={(e) => void submit(e)} noValidate>
      <h2>Trigger a run</h2>
      <label for="conf">Conf (a JSON object)</label>
      <textarea
        id="conf"
        name="conf"
        rows={5}
        spellcheck={false}
        value={text}
        aria-invalid={error ? 'true' : 'false'}
        aria-describedby={error ? 'conf-error' : undefined}
        onInput={(e) => setText(e.currentTarget.value)}
      />
      {error && (
        <p id="conf-error" class="inline-error" role="alert">
          {error}
        </p>
      )}
      <button type="submit" class="btn primary" disabled={busy}>
        {busy ? 'Triggering…' : 'Trigger run'}
      </button>
    </form>
  );
}

function NextRuns(props: { dag: Dag }) {
  const { dag } = props;
  return (
    <div class="card">
      <h2>Next runs</h2>
      {!dag.schedule ? (
        <p class="muted">Manual only: this DAG has no schedule; it runs when triggered.</p>
      ) : dag.paused ? (
        <p class="muted">Paused: no scheduled run starts until the DAG is unpaused.</p>
      ) : dag.nextRunTimes.length === 0 ? (
        <p class="muted">No upcoming scheduled time.</p>
      ) : (
        <ol class="next-runs">
          {dag.nextRunTimes.map((t) => (
            <li key={t}>
              <time dateTime={t} title={t}>
                {formatTime(t)}
              </time>
            </li>
          ))}
        </ol>
      )}
      {dag.schedule && (
        <p class="muted small">
          <code>{dag.schedule.cron}</code> in {dag.schedule.timezone}; times shown in{' '}
          {Intl.DateTimeFormat().resolvedOptions().timeZone}
        </p>
      )}
    </div>
  );
}

function Grid(props: { dag: Dag; runs: Run[] }) {
  // Oldest on the left, as in Airflow's grid.
  const runs = [...props.runs].reverse();
  const taskIds = [...(props.dag.tasks ?? []).map((t) => t.taskId)];
  for (const r of runs)
    for (const t of r.tasks) if (!taskIds.includes(t.taskId)) taskIds.push(t.taskId);
  return (
    <div class="grid-scroll">
      <table class="grid">
        <thead>
          <tr>
            <th scope="col" class="grid-task">
              Task \ run
            </th>
            {runs.map((r) => (
              <th scope="col" key={r.runId}>
                <Link href={links.run(r.dagId, r.runId)} class="sq-link">
                  <StatusSquare
                    status={r.status}
                    label={`run ${r.runId} (${formatTime(r.logicalDate)}): ${statusText(r.status)}`}
                  />
                </Link>
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {taskIds.map((taskId) => (
            <tr key={taskId}>
              <th scope="row" class="grid-task">
                {taskId}
              </th>
              {runs.map((r) => {
                const ti = r.tasks.find((t) => t.taskId === taskId);
                return (
                  <td key={r.runId}>
                    {ti ? (
                      <Link href={links.run(r.dagId, r.runId)} class="sq-link">
                        <StatusSquare
                          status={ti.status}
                          label={`${taskId} in run ${r.runId}: ${statusText(ti.status)}`}
                        />
                      </Link>
                    ) : (
                      <span class="sq st-none" title="not in this run" />
                    )}
                  </td>
                );
              })}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function DagPage(props: { dagId: string }) {
  const { dagId } = props;
  const [dagOverride, setDag] = useState<Dag>();
  const [selected, setSelected] = useState<string>();
  const loaded = useLoad(
    async () => {
      const [dag, page] = await Promise.all([
        api<Dag>('GET', dagPath(dagId)),
        api<{ runs: RunSummary[] }>('GET', `${dagPath(dagId)}/runs?limit=${GRID_RUNS}`),
      ]);
      const runs = await Promise.all(
        page.runs.map((r) => api<Run>('GET', runPath(dagId, r.runId))),
      );
      return { dag, runs };
    },
    [dagId],
    (d) => (d.runs.some((r) => !FINISHED_RUN.has(r.status)) ? REFRESH_MS : undefined),
  );
  // The switch's answer shows at once; the next load (asked for below) replaces it, so that a
  // later change made elsewhere (the CLI, another tab) is not hidden behind it.
  useEffect(() => setDag(undefined), [loaded.data]);
  const onPaused = (d: Dag) => {
    setDag(d);
    loaded.reload();
  };

  if (loaded.error && !loaded.data) {
    return (
      <section>
        <Breadcrumbs dagId={dagId} />
        <ErrorBox title={`Could not load DAG ${dagId}:`} error={loaded.error} />
      </section>
    );
  }
  if (!loaded.data) return <Loading what={`DAG ${dagId}`} />;
  const dag =
    dagOverride?.dagId === dagId ? { ...loaded.data.dag, ...dagOverride } : loaded.data.dag;
  const { runs } = loaded.data;
  const graphRun = runs.find((r) => r.runId === selected) ?? runs[0];
  // A mapped task's own status, not its instances' (listed after it, with a mapIndex).
  const statuses = new Map(
    graphRun?.tasks.filter((t) => t.mapIndex === undefined).map((t) => [t.taskId, t.status]) ?? [],
  );

  return (
    <section>
      <Breadcrumbs dagId={dagId} />
      <div class="page-head">
        <h1>{dag.dagId}</h1>
        <PauseSwitch dag={dag} onChange={onPaused} />
      </div>
      {dag.description && <p class="lead">{dag.description}</p>}
      <p class="muted small">
        version {dag.latestVersion}
        {dag.owner && <> · owner {dag.owner}</>} · {dag.tasks?.length ?? 0} tasks
      </p>
      {loaded.error && <ErrorBox title="Could not refresh:" error={loaded.error} />}

      <div class="columns">
        <div class="main-col">
          <div class="card">
            <h2>Runs</h2>
            {runs.length === 0 ? (
              <Empty>No runs yet. Trigger one with the form, or wait for the schedule.</Empty>
            ) : (
              <>
                <Grid dag={dag} runs={runs} />
                <Legend />
              </>
            )}
          </div>
          <div class="card">
            <div class="card-head">
              <h2>Graph</h2>
              {runs.length > 0 && (
                <label class="inline-label">
                  Coloured by run{' '}
                  <select
                    value={graphRun?.runId}
                    onChange={(e) => setSelected(e.currentTarget.value)}
                  >
                    {runs.map((r) => (
                      <option key={r.runId} value={r.runId}>
                        {r.runId} ({statusText(r.status)})
                      </option>
                    ))}
                  </select>
                </label>
              )}
            </div>
            {dag.tasks && dag.tasks.length > 0 ? (
              <DagGraph
                tasks={dag.tasks}
                statuses={statuses}
                runLabel={graphRun ? `run ${graphRun.runId}` : 'no run'}
              />
            ) : (
              <Empty>The API did not return this DAG's tasks.</Empty>
            )}
          </div>
        </div>
        <div class="side-col">
          <TriggerForm dagId={dagId} />
          <NextRuns dag={dag} />
        </div>
      </div>
    </section>
  );
}

function Breadcrumbs(props: { dagId: string }) {
  return (
    <nav class="crumbs" aria-label="Breadcrumbs">
      <Link href={links.dags()}>DAGs</Link> / <span>{props.dagId}</span>
    </nav>
  );
}
