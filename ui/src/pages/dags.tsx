// `/dags`: every DAG, with its paused switch, schedule, next run and last runs.
import { useState } from 'preact/hooks';
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
  if (!runs.data) return <span class="muted">…</span>;
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

export function DagsPage() {
  const [query, setQuery] = useState('');
  const [pages, setPages] = useState<Dag[][]>([]);
  const [nextToken, setNextToken] = useState<string>();
  const [moreError, setMoreError] = useState<string>();
  const first = useLoad(async () => {
    const body = await api<{ dags: Dag[]; nextToken?: string }>('GET', '/v1/dags?limit=100');
    setPages([body.dags]);
    setNextToken(body.nextToken);
    return body;
  }, []);

  const loadMore = async () => {
    if (!nextToken) return;
    try {
      const q = new URLSearchParams({ limit: '100', nextToken });
      const body = await api<{ dags: Dag[]; nextToken?: string }>('GET', `/v1/dags?${q}`);
      setPages((p) => [...p, body.dags]);
      setNextToken(body.nextToken);
    } catch (e) {
      setMoreError((e as Error).message);
    }
  };
  const replace = (dag: Dag) =>
    setPages((p) => p.map((page) => page.map((d) => (d.dagId === dag.dagId ? dag : d))));

  const all = pages.flat();
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
      {first.error && <ErrorBox title="Could not load the DAGs:" error={first.error} />}
      {!first.data && !first.error && <Loading what="DAGs" />}
      {first.data && all.length === 0 && (
        <Empty>
          No DAGs yet. Upload a DAG JSON file under <code>dags/</code> in the DAGs bucket, or run{' '}
          <code>airless dags push FILE</code>.
        </Empty>
      )}
      {all.length > 0 && shown.length === 0 && <Empty>No DAG matches “{query}”.</Empty>}
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
            {shown.map((d) => (
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
      {moreError && <ErrorBox title="Could not load more DAGs:" error={moreError} />}
      {nextToken && (
        <button type="button" class="btn" onClick={() => void loadMore()}>
          Load more DAGs
        </button>
      )}
    </section>
  );
}
