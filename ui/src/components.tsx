import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { api, type Dag, dagPath } from './api.ts';

/** An error in words, announced to screen readers. */
export function ErrorBox(props: { title: string; error: Error | string }) {
  const message = typeof props.error === 'string' ? props.error : props.error.message;
  return (
    <div class="error" role="alert">
      <strong>{props.title}</strong> {message}
    </div>
  );
}

export function Empty(props: { children: ComponentChildren }) {
  return <div class="empty">{props.children}</div>;
}

export function Loading(props: { what: string }) {
  return (
    <p class="muted" aria-live="polite">
      Loading {props.what}…
    </p>
  );
}

/**
 * The paused switch. On means active (the schedule runs), as in Airflow; the words beside it
 * say which, and it is a real button, so the keyboard reaches it.
 */
export function PauseSwitch(props: { dag: Dag; onChange: (dag: Dag) => void }) {
  const { dag } = props;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const toggle = async () => {
    setBusy(true);
    setError(undefined);
    try {
      props.onChange(await api<Dag>('PATCH', dagPath(dag.dagId), { paused: !dag.paused }));
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <span class="switch-wrap">
      <button
        type="button"
        role="switch"
        class="switch"
        aria-checked={!dag.paused}
        aria-label={`${dag.dagId} active`}
        title={dag.paused ? 'Paused: switch on to unpause' : 'Active: switch off to pause'}
        disabled={busy}
        onClick={() => void toggle()}
      >
        <span class="knob" />
      </button>
      <span class="switch-text">{dag.paused ? 'paused' : 'active'}</span>
      {error && (
        <span class="inline-error" role="alert">
          Could not {dag.paused ? 'unpause' : 'pause'}: {error}
        </span>
      )}
    </span>
  );
}
