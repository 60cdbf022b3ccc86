// `/dags`: every DAG, with its paused switch, schedule, next run and last runs.
import { useEffect, useState } from 'preact/hooks';
import { api, type Dag, dagPath, type RunSummary } from '../api.ts';
import { Empty, ErrorBox, Loading, PauseSwitch } from '../components.tsx';
import { formatTime } from '../format.ts';
import { useLoad } from '../hooks.ts';
import { Link, links } from '../router.tsx';
import { StatusSquare, statusText } from '../status.tsx';

const RECENT_RUNS = 5;

function RecentRuns(props: { dagId: string }) {
  const runs = useLoad(
    () => api<{ runs: RunSummary[] }>('GET', `${dagPath(props.dagId)}/runs?limit=${RECENT_RUNS}`),
    [props.dagId],
  );
  if (runs.error) return <span class="inline-error">{runs.error.message}</span>;
  if (!runs.data) {
    return (
      <span class="muted runs-loading" title="loading the last runs">
        …
      </span>
    );
  }
  if (runs.data.runs.length === 0) return <span class="muted">no runs yet</span>;
  // Oldest first, as in the grid: the newest run is on the right.
  return (
    <span class="squares">
      {[...runs.data.runs].reverse().map((r) => (
        <Link key={r.runId} href={links.run(props.dagId, r.runId)} class="sq-link">
          <StatusSquare status={r.status} label={`run ${r.runId}: ${statusText(r.status)}`} />
        </Link>
      ))}
    </span>
  );
}

/** Rows drawn at a time; each drawn row reads its last runs. */
const ROWS = 50;

/**
 * Every DAG, a page of 100 at a time: the first page shows at once, and the rest follow, so
 * that the search covers them all.
 */
function useAllDags() {
  const [dags, setDags] = useState<Dag[]>([]);
  const [done, setDone] = useState(false);
  const [error, setError] = useState<Error>();
  useEffect(() => {
    let live = true;
    void (async () => {
      let token: string | undefined;
      try {
        do {
          const q = new URLSearchParams({ limit: '100', ...(token ? { nextToken: token } : {}) });
          const body = await api<{ dags: Dag[]; nextToken?: string }>('GET', `/v1/dags?${q}`);
          if (!live) return;
          setDags((d) => [...d, ...body.dags]);
          token = body.nextToken;
        } while (token);
        setDone(true);
      } catch (e) {
        if (live) setError(e as Error);
      }
    })();
    return () => {
      live = false;
    };
  }, []);
  return { dags, setDags, done, error };
}

export function DagsPage() {
  const [query, setQuery] = useState('');
  const [rows, setRows] = useState(ROWS);
  const { dags: all, setDags, done, error } = useAllDags();
  const replace = (dag: Dag) => setDags((ds) => ds.map((d) => (d.dagId === dag.dagId ? dag : d)));

  const q = query.trim().toLowerCase();
  const shown = q
    ? all.filter((d) =>
        [d.dagId, d.description ?? '', d.owner ?? ''].some((s) => s.toLowerCase().includes(q)),
      )
    : all;

  return (
    <section>
      <div class="page-head">
        <h1>DAGs</h1>
        <label class="search">
          <span class="visually-hidden">Search DAGs</span>
          <input
            type="search"
            placeholder="Search DAGs by id, description or owner"
            value={query}
            onInput={(e) => setQuery(e.currentTarget.value)}
          />
        </label>
      </div>
      {error && <ErrorBox title="Could not load the DAGs:" error={error} />}
      {!done && !error && <Loading what={all.length > 0 ? 'more DAGs' : 'DAGs'} />}
      {done && all.length === 0 && (
        <Empty>
          No DAGs yet. Upload a DAG JSON file under <code>dags/</code> in the DAGs bucket, or run{' '}
          <code>airless dags push FILE</code>.
        </Empty>
      )}
      {done && all.length > 0 && shown.length === 0 && <Empty>No DAG matches “{query}”.</Empty>}
      {shown.length > 0 && (
        <table class="table">
          <thead>
            <tr>
              <th scope="col">Active</th>
              <th scope="col">DAG</th>
              <th scope="col">Schedule</th>
              <th scope="col">Next run</th>
              <th scope="col">Last {RECENT_RUNS} runs</th>
            </tr>
          </thead>
          <tbody>
            {shown.slice(0, rows).map((d) => (
              <tr key={d.dagId}>
                <td>
                  <PauseSwitch dag={d} onChange={replace} />
                </td>
                <td>
                  <Link href={links.dag(d.dagId)} class="dag-link">
                    {d.dagId}
                  </Link>
                  {d.description && <div class="muted small">{d.description}</div>}
                  {d.owner && <div class="muted small">owner: {d.owner}</div>}
                </td>
                <td>
                  {d.schedule ? (
                    <>
                      <code>{d.schedule.cron}</code>
                      {d.schedule.timezone !== 'UTC' && (
                        <div class="muted small">{d.schedule.timezone}</div>
                      )}
                    </>
                  ) : (
                    <span class="muted">manual</span>
                  )}
                </td>
                <td>
                  {d.nextRunTimes[0] ? (
                    <time dateTime={d.nextRunTimes[0]} title={d.nextRunTimes[0]}>
                      {formatTime(d.nextRunTimes[0])}
                    </time>
                  ) : (
                    <span class="muted">{d.paused && d.schedule ? 'paused' : '—'}</span>
                  )}
                </td>
                <td>
                  <RecentRuns dagId={d.dagId} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {shown.length > rows && (
        <button type="button" class="btn more" onClick={() => setRows((n) => n + ROWS)}>
          Show {Math.min(ROWS, shown.length - rows)} more of {shown.length - rows}
        </button>
      )}
    </section>
  );
}
