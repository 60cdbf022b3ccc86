import { type EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { ThrottledError } from '../../core/errors.ts';
import { type AirlessEvent, EVENT_SOURCE } from '../../core/events.ts';
import type { EventPublisher } from '../../core/ports.ts';
import { aws } from './errors.ts';

/**
 * Run events on an EventBridge bus (the account's default bus unless the deployment names
 * another), with source `airless`. PutEvents takes at most 10 entries and can refuse some of
 * them (throttled, or the bus failed): those are retried a few times, then the publish throws a
 * retryable error so that the stream record is delivered again.
 * https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html
 */
export class EventBridgePublisher implements EventPublisher {
  constructor(
    private readonly client: EventBridgeClient,
    private readonly busName: string,
  ) {}

  async publish(events: readonly AirlessEvent[]): Promise<void> {
    for (let i = 0; i < events.length; i += 10) await this.#put(events.slice(i, i + 10));
  }

  async #put(batch: readonly AirlessEvent[]): Promise<void> {
    let entries = batch.map((e) => ({
      EventBusName: this.busName,
      Source: EVENT_SOURCE,
      DetailType: e.detailType,
      Detail: JSON.stringify(e.detail),
    }));
    for (let attempt = 0; entries.length > 0; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
      const res = await aws('put events', () =>
        this.client.send(new PutEventsCommand({ Entries: entries })),
      );
      if (!res.FailedEntryCount) return;
      // The results are in the order of the entries; a failed one has an ErrorCode.
      const marked = entries.filter((_, i) => res.Entries?.[i]?.ErrorCode);
      const failed = marked.length > 0 ? marked : entries;
      if (attempt >= 3) {
        const first = res.Entries?.find((e) => e.ErrorCode);
        throw new ThrottledError(
          `put events: ${failed.length} events not put: ${first?.ErrorCode} ${first?.ErrorMessage ?? ''}`,
        );
      }
      entries = failed;
    }
  }
}
