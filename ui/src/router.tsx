// Routes on the history API: the UI server answers index.html for every path that is not /v1/*
// or a file, so a reload or a shared link opens the same page.
import type { ComponentChildren, JSX } from 'preact';
import { useEffect, useState } from 'preact/hooks';

const enc = encodeURIComponent;
export const links = {
  dags: () => '/dags',
  dag: (dag: string) => `/dags/${enc(dag)}`,
  run: (dag: string, run: string) => `/dags/${enc(dag)}/runs/${enc(run)}`,
  importErrors: () => '/import-errors',
};

export type Route =
  | { page: 'dags' }
  | { page: 'dag'; dagId: string }
  | { page: 'run'; dagId: string; runId: string }
  | { page: 'import-errors' }
  | { page: 'not-found'; path: string };

export function match(pathname: string): Route {
  let parts: string[];
  try {
    parts = pathname.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    return { page: 'not-found', path: pathname };
  }
  const [a, b, c, d, ...rest] = parts;
  if (rest.length === 0) {
    if (a === undefined || (a === 'dags' && b === undefined)) return { page: 'dags' };
    if (a === 'import-errors' && b === undefined) return { page: 'import-errors' };
    if (a === 'dags' && b !== undefined && c === undefined) return { page: 'dag', dagId: b };
    if (a === 'dags' && b !== undefined && c === 'runs' && d !== undefined) {
      return { page: 'run', dagId: b, runId: d };
    }
  }
  return { page: 'not-found', path: pathname };
}

export function navigate(to: string): void {
  history.pushState(null, '', to);
  dispatchEvent(new PopStateEvent('popstate'));
}

/** The current path; re-renders on navigation and on the browser's back and forward. */
export function usePath(): string {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const onPop = () => setPath(location.pathname);
    addEventListener('popstate', onPop);
    return () => removeEventListener('popstate', onPop);
  }, []);
  return path;
}

/** A real link (keyboard, middle click, copy address) that navigates without a reload. */
export function Link(
  props: { href: string; children: ComponentChildren } & Omit<
    JSX.HTMLAttributes<HTMLAnchorElement>,
    'href'
  >,
) {
  const { href, children, ...rest } = props;
  const onClick = (e: MouseEvent) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(href);
  };
  return (
    <a {...rest} href={href} onClick={onClick}>
      {children}
    </a>
  );
}
