// `/import-errors`: DAG files uploaded under dags/ that failed validation.
import { api, type ImportError } from '../api.ts';
import { Empty, ErrorBox, Loading } from '../components.tsx';
import { formatTime } from '../format.ts';
import { useLoad } from '../hooks.ts';
import { Link, links } from '../router.tsx';

export function ImportErrorsPage() {
  const list = useLoad(
    () => api<{ importErrors: ImportError[] }>('GET', '/v1/import-errors?limit=100'),
    [],
  );
  return (
    <section>
      <div class="page-head">
        <h1>Import errors</h1>
      </div>
      <p class="muted">
        DAG files uploaded under <code>dags/</code> that failed validation.
      </p>
      {list.error && <ErrorBox title="Could not load the import errors:" error={list.error} />}
      {!list.data && !list.error && <Loading what="import errors" />}
      {list.data?.importErrors.length === 0 && (
        <Empty>No import errors: every DAG file under dags/ is valid.</Empty>
      )}
      {list.data && list.data.importErrors.length > 0 && (
        <table class="table">
          <thead>
            <tr>
              <th scope="col">File</th>
              <th scope="col">DAG</th>
              <th scope="col">Problems</th>
              <th scope="col">Seen</th>
            </tr>
          </thead>
          <tbody>
            {list.data.importErrors.map((e) => (
              <tr key={e.key}>
                <td>
                  <code>{e.key}</code>
                </td>
                <td>
                  {e.dagId ? (
                    <Link href={links.dag(e.dagId)}>{e.dagId}</Link>
                  ) : (
                    <span class="muted">—</span>
                  )}
                </td>
                <td>
                  <ul class="problems">
                    {e.errors.map((p, i) => (
                      <li key={i}>
                        <code>{p.path}</code> {p.message}
                      </li>
                    ))}
                  </ul>
                </td>
                <td>
                  <time dateTime={e.time}>{formatTime(e.time)}</time>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
