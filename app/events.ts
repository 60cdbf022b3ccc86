import { AirlessError } from '../core/errors.ts';
import type { AirlessEvent } from '../core/events.ts';
import { Metric } from '../core/metric-names.ts';
import type { Deps } from './deps.ts';

/**
 * Puts run events (core/events.ts) on the deployment's bus, after readiness has done its part.
 * A throttled or unavailable bus throws, so that the stream record is delivered again (readiness
 * is idempotent). A bus that refuses for good (deleted, access denied, a bad request) loses the
 * events with an error log and the `EventsNotPublished` metric, and nothing else: a broken bus
 * must never hold up or fail a run.
 */
export async function publishRunEvents(
  deps: Deps,
  events: readonly AirlessEvent[],
  log: { error(message: string, extra: Record<string, unknown>): void },
): Promise<'published' | 'refused' | 'none'> {
  if (events.length === 0 || !deps.events) return 'none';
  try {
    await deps.events.publish(events);
    deps.metrics?.addMetric(Metric.EventsPublished, 'Count', events.length);
    return 'published';
  } catch (e) {
    // Retried: throttling, a 5xx, or no answer at all. Refused: the rest, which no retry changes.
    const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    const refused = e instanceof AirlessError ? !e.retryable : status !== undefined && status < 500;
    if (!refused) throw e;
    log.error('run events not published', {
      error: e instanceof Error ? e.message : String(e),
      events: events.map((x) => x.detail.eventKey),
    });
    deps.metrics?.addMetric(Metric.EventsNotPublished, 'Count', events.length);
    return 'refused';
  }
}
