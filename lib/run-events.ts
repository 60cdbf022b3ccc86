import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import { EVENT_SOURCE, EventDetailType } from '../core/events.ts';

/**
 * The event pattern of Airless run events (core/events.ts) on a bus, for rules of your own:
 * `runEventPattern({ detailType: 'Airless Task Failed', dagIds: ['etl'] })`.
 */
export function runEventPattern(
  opts: {
    readonly detailType?: EventDetailType;
    readonly statuses?: readonly string[];
    readonly dagIds?: readonly string[];
  } = {},
): events.EventPattern {
  const detail: Record<string, string[]> = {};
  if (opts.statuses?.length) detail.status = [...opts.statuses];
  if (opts.dagIds?.length) detail.dagId = [...opts.dagIds];
  return {
    source: [EVENT_SOURCE],
    ...(opts.detailType ? { detailType: [opts.detailType] } : {}),
    ...(Object.keys(detail).length > 0 ? { detail } : {}),
  };
}

export interface FailedRunNotificationProps {
  /** The bus Airless puts its run events on. */
  readonly eventBus: events.IEventBus;
  /** Who gets an email for each failed run (SNS asks each address to confirm first). */
  readonly emails?: readonly string[];
  /**
   * Only these DAGs' failed runs.
   * @default - every DAG
   */
  readonly dagIds?: readonly string[];
  /**
   * An existing topic to publish to instead of a new one.
   * @default - a new SNS topic
   */
  readonly topic?: sns.ITopic;
}

/**
 * An email (through SNS) for every failed run, of every DAG or of the named ones: a rule on the
 * run events with the topic as its target, and a short readable message instead of the raw
 * event. Created by `AirlessScheduler.notifyOnFailedRuns`.
 */
export class FailedRunNotification extends Construct {
  readonly rule: events.Rule;
  readonly topic: sns.ITopic;

  constructor(scope: Construct, id: string, props: FailedRunNotificationProps) {
    super(scope, id);
    if (props.dagIds !== undefined && props.dagIds.length === 0) {
      throw new Error('notifyOnFailedRuns: dagIds is empty; leave it out for every DAG');
    }
    if (props.topic) {
      this.topic = props.topic;
    } else {
      const topic = new sns.Topic(this, 'Topic', { enforceSSL: true });
      // The policy enforceSSL creates replaces the default one: EventBridge (rules of this
      // account) needs an explicit grant. https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sns-permissions
      topic.grants.publish(new iam.ServicePrincipal('events.amazonaws.com'));
      this.topic = topic;
    }
    for (const email of props.emails ?? []) {
      this.topic.addSubscription(new subscriptions.EmailSubscription(email));
    }
    const detail = (field: string) => events.EventField.fromPath(`$.detail.${field}`);
    this.rule = new events.Rule(this, 'Rule', {
      eventBus: props.eventBus,
      description: `Airless: failed runs of ${props.dagIds ? props.dagIds.join(', ') : 'every DAG'}`,
      eventPattern: runEventPattern({
        detailType: EventDetailType.runStatusChange,
        statuses: ['failed'],
        ...(props.dagIds ? { dagIds: props.dagIds } : {}),
      }),
      targets: [
        new targets.SnsTopic(this.topic, {
          message: events.RuleTargetInput.fromText(
            `Airless run ${detail('runId')} of DAG ${detail('dagId')} failed at ${detail('endTime')}. ` +
              `Open it in the UI at ${detail('link')} (airless ui), or run: airless runs get ${detail('dagId')} ${detail('runId')}`,
          ),
        }),
      ],
    });
  }
}
