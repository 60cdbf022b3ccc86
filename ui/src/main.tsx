import { render } from 'preact';
import { useEffect } from 'preact/hooks';
import { DagPage } from './pages/dag.tsx';
import { DagsPage } from './pages/dags.tsx';
import { ImportErrorsPage } from './pages/import-errors.tsx';
import { RunPage } from './pages/run.tsx';
import { Link, links, match, type Route, usePath } from './router.tsx';
import './style.css';

function Page(props: { route: Route }) {
  const r = props.route;
  switch (r.page) {
    case 'dags':
      return <DagsPage />;
    case 'dag':
      return <DagPage key={r.dagId} dagId={r.dagId} />;
    case 'run':
      return <RunPage key={`${r.dagId}/${r.runId}`} dagId={r.dagId} runId={r.runId} />;
    case 'import-errors':
      return <ImportErrorsPage />;
    case 'not-found':
      return (
        <section>
          <h1>Not found</h1>
          <div class="error" role="alert">
            There is no page at <code>{r.path}</code>. Go to the{' '}
            <Link href={links.dags()}>DAGs</Link>.
          </div>
        </section>
      );
  }
}

function titleOf(r: Route): string {
  switch (r.page) {
    case 'dags':
      return 'DAGs';
    case 'dag':
      return r.dagId;
    case 'run':
      return `${r.runId} · ${r.dagId}`;
    case 'import-errors':
      return 'Import errors';
    case 'not-found':
      return 'Not found';
  }
}

function App() {
  const route = match(usePath());
  const title = titleOf(route);
  useEffect(() => {
    document.title = `${title} · Airless`;
    window.scrollTo(0, 0);
  }, [title]);
  const here = (page: Route['page']) =>
    route.page === page || (page === 'dags' && (route.page === 'dag' || route.page === 'run'))
      ? 'page'
      : undefined;
  return (
    <>
      <a href="#main" class="skip">
        Skip to content
      </a>
      <header class="topbar">
        <Link href={links.dags()} class="brand">
          Airless
        </Link>
        <nav aria-label="Main">
          <Link href={links.dags()} aria-current={here('dags')}>
            DAGs
          </Link>
          <Link href={links.importErrors()} aria-current={here('import-errors')}>
            Import errors
          </Link>
        </nav>
      </header>
      <main id="main">
        <Page route={route} />
      </main>
    </>
  );
}

const root = document.getElementById('app');
if (root) render(<App />, root);
