// Statuses (DESIGN.md section 4), each with a colour and a symbol, so that none is told by
// colour alone.

const SYMBOLS: Record<string, string> = {
  success: '✓',
  failed: '✕',
  running: '▶',
  queued: '◷',
  pending: '○',
  up_for_retry: '↻',
  upstream_failed: '⊘',
  skipped: '»',
  cancelled: '■',
};

export const STATUSES = Object.keys(SYMBOLS);
export const statusSymbol = (status: string) => SYMBOLS[status] ?? '?';
export const statusText = (status: string) => status.replaceAll('_', ' ');

/** A small square: the symbol on the status colour, with the status (and more) as its name. */
export function StatusSquare(props: { status: string; label?: string }) {
  const name = props.label ?? statusText(props.status);
  return (
    <span class={`sq st-${props.status}`} title={name} role="img" aria-label={name}>
      {statusSymbol(props.status)}
    </span>
  );
}

/** The status in words, with its symbol and colour. */
export function StatusBadge(props: { status: string }) {
  return (
    <span class={`badge st-${props.status}`}>
      <span aria-hidden="true">{statusSymbol(props.status)}</span> {statusText(props.status)}
    </span>
  );
}

export function Legend() {
  return (
    <ul class="legend" aria-label="Status legend">
      {STATUSES.map((s) => (
        <li key={s}>
          <StatusSquare status={s} /> {statusText(s)}
        </li>
      ))}
    </ul>
  );
}
