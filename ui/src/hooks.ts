import { useCallback, useEffect, useRef, useState } from 'preact/hooks';

export interface Loaded<T> {
  readonly data: T | undefined;
  readonly error: Error | undefined;
  readonly loading: boolean;
  reload(): void;
}

/**
 * Loads `load()` when `deps` change, and again after `refreshMs(data)` milliseconds for as long
 * as it says a number (a run still going), also after a failed refresh (every 5 s at least). One
 * request at a time: the next starts when the last has answered, so a slow API is never flooded.
 */
export function useLoad<T>(
  load: () => Promise<T>,
  deps: readonly unknown[],
  refreshMs?: (data: T) => number | undefined,
): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: Error; loading: boolean }>({
    loading: true,
  });
  const [tick, setTick] = useState(0);
  const latest = useRef({ load, refreshMs });
  latest.current = { load, refreshMs };

  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    // The refresh period the last good answer asked for: a failed refresh (a timeout, a network
    // blip) tries again, more slowly, instead of leaving a live page frozen.
    let period: number | undefined;
    const run = async () => {
      setState((s) => ({ ...s, loading: true }));
      try {
        const data = await latest.current.load();
        if (!live) return;
        setState({ data, loading: false });
        period = latest.current.refreshMs?.(data);
        if (period !== undefined) timer = setTimeout(run, period);
      } catch (e) {
        if (!live) return;
        setState((s) => ({ ...s, error: e as Error, loading: false }));
        if (period !== undefined) timer = setTimeout(run, Math.max(period, 5000));
      }
    };
    void run();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [...deps, tick]);

  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data: state.data, error: state.error, loading: state.loading, reload };
}
