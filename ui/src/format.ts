const pad = (n: number) => String(n).padStart(2, '0');

/** `2026-03-09 06:30:00` in the browser's time zone; '—' for no time. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** `850 ms`, `12.4 s`, `3 m 05 s`, `2 h 07 m`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${pad(Math.floor(s % 60))} s`;
  return `${Math.floor(m / 60)} h ${pad(m % 60)} m`;
}

/** From start to end, or to now for something still going; undefined before it started. */
export function durationMs(start: string | null, end: string | null, now = Date.now()) {
  if (!start) return undefined;
  return (end ? Date.parse(end) : now) - Date.parse(start);
}
