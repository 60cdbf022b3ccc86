import {
  DescribeTaskDefinitionCommand,
  type DescribeTaskDefinitionCommandOutput,
  DescribeTasksCommand,
  type DescribeTasksCommandOutput,
  RunTaskCommand,
  type RunTaskCommandOutput,
  StopTaskCommand,
} from '@aws-sdk/client-ecs';
import { ecsConfig } from '../core/dag/operators.ts';
import { UnrecoverableError } from '../core/errors.ts';
import type { AwsEvent, DeferredOperator, DeferredWork, WorkState } from './registry.ts';

type Config = typeof ecsConfig._output;

/** What the operator needs of an `ECSClient`. */
export interface EcsClient {
  send(command: RunTaskCommand): Promise<RunTaskCommandOutput>;
  send(command: DescribeTasksCommand): Promise<DescribeTasksCommandOutput>;
  send(command: DescribeTaskDefinitionCommand): Promise<DescribeTaskDefinitionCommandOutput>;
  send(command: StopTaskCommand): Promise<unknown>;
}

/**
 * RunTask errors that the next attempt would meet again unchanged.
 * https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html#API_RunTask_Errors
 */
const CALLER_ERRORS = new Set([
  'AccessDeniedException',
  'ClusterNotFoundException',
  'InvalidParameterException',
  'PlatformUnknownException',
  'PlatformTaskDefinitionIncompatibilityException',
  'UnsupportedFeatureException',
]);

/** `startedBy` names the attempt (at most 128 characters): `airless-` and the work name. */
const STARTED_BY = /^airless-([0-9a-f]{32})$/;

interface EcsWork extends DeferredWork {
  readonly cluster: string;
  readonly taskArn: string;
  /** The containers whose exit decides the outcome; all of them when the list is empty. */
  readonly essential: readonly string[];
}

interface StoppedTask {
  readonly lastStatus?: string | undefined;
  readonly stoppedReason?: string | undefined;
  readonly containers?:
    | readonly { name?: string | undefined; exitCode?: number | undefined }[]
    | undefined;
  readonly taskArn?: string | undefined;
}

/**
 * A stopped task's outcome: success when every essential container exited 0; otherwise failed,
 * with the stop reason and the exit codes. A container that never ran has no exit code.
 */
function outcomeOf(task: StoppedTask, work: EcsWork): WorkState {
  const decisive = (task.containers ?? []).filter(
    (c) => work.essential.length === 0 || work.essential.includes(c.name ?? ''),
  );
  const codes = decisive.map((c) => `${c.name ?? '?'}=${c.exitCode ?? 'none'}`).join(', ');
  if (decisive.length > 0 && decisive.every((c) => c.exitCode === 0)) {
    const exitCodes = Object.fromEntries(decisive.map((c) => [c.name ?? '?', c.exitCode]));
    return { state: 'success', output: { taskArn: work.taskArn, exitCodes } };
  }
  return {
    state: 'failed',
    error: `task stopped: ${task.stoppedReason ?? 'no reason given'}; exit codes: ${codes || 'none'}`,
  };
}

/**
 * The `ecs` operator: runs a task (Fargate launch type) and holds no worker while it runs. The
 * RunTask client token is the attempt's work name, so a start repeated after a crash gets the
 * task the first one started (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html#ECS-RunTask-request-clientToken),
 * and `startedBy` names the attempt, so that the "ECS Task State Change" event of its stop
 * finds it. The reaper asks DescribeTasks when that event is late.
 *
 * `taskDefinitions` are the task definitions (ARNs) this deployment may run
 * (`runnableTaskDefinitions`): a DAG naming another is refused at registration. A DAG may name
 * one by ARN, `family:revision` or `family`. `defaultSubnets` are used when a task names none.
 */
export function createEcsOperator(
  client: () => EcsClient,
  opts: { taskDefinitions: readonly string[]; defaultSubnets?: readonly string[] },
): DeferredOperator<Config> {
  // arn:aws:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION
  const names = new Set<string>();
  for (const arn of opts.taskDefinitions) {
    names.add(arn);
    const familyRevision = arn.split('task-definition/')[1];
    if (familyRevision) {
      names.add(familyRevision);
      names.add(familyRevision.split(':')[0] ?? familyRevision);
    }
  }
  const essentials = new Map<string, readonly string[]>();
  async function essentialContainers(taskDefinition: string): Promise<readonly string[]> {
    const known = essentials.get(taskDefinition);
    if (known) return known;
    const d = await client().send(new DescribeTaskDefinitionCommand({ taskDefinition }));
    const list = (d.taskDefinition?.containerDefinitions ?? [])
      // A container is essential unless it says otherwise.
      .filter((c) => c.essential !== false)
      .map((c) => c.name ?? '');
    // Only a pinned revision is immutable: a family name may move to a new revision.
    if (/:\d+$/.test(taskDefinition)) essentials.set(taskDefinition, list);
    return list;
  }

  return {
    name: 'ecs',
    config: ecsConfig,
    deferred: true,
    refuses: (config) => {
      if (!names.has(config.taskDefinition)) {
        return `task definition ${config.taskDefinition} is not one this deployment may run (runnableTaskDefinitions)`;
      }
      if (!config.subnets && !opts.defaultSubnets?.length) {
        return 'subnets are required: this deployment has no default subnets for ECS tasks';
      }
      return undefined;
    },
    async start(config, ctx) {
      const subnets = config.subnets ?? opts.defaultSubnets ?? [];
      if (subnets.length === 0) {
        throw new UnrecoverableError(
          'config.subnets: required, since this deployment has no default subnets for ECS tasks',
        );
      }
      // Before RunTask: a failure here must not leave a task running that no attempt records.
      const essential = await essentialContainers(config.taskDefinition);
      let res: RunTaskCommandOutput;
      try {
        res = await client().send(
          new RunTaskCommand({
            cluster: config.cluster,
            taskDefinition: config.taskDefinition,
            launchType: 'FARGATE',
            count: 1,
            startedBy: `airless-${ctx.workName}`,
            clientToken: ctx.workName,
            networkConfiguration: {
              awsvpcConfiguration: {
                subnets: [...subnets],
                ...(config.securityGroups ? { securityGroups: config.securityGroups } : {}),
                assignPublicIp: config.assignPublicIp ? 'ENABLED' : 'DISABLED',
              },
            },
            ...(config.containerOverrides
              ? { overrides: { containerOverrides: config.containerOverrides } }
              : {}),
          }),
        );
      } catch (e) {
        const code = (e as { name?: string }).name ?? '';
        if (CALLER_ERRORS.has(code)) {
          throw new UnrecoverableError(`RunTask refused: ${code}: ${(e as Error).message}`);
        }
        throw e;
      }
      const task = res.tasks?.[0];
      if (!task?.taskArn) {
        // Capacity and placement failures come back here, not as errors: retryable.
        const f = res.failures?.[0];
        throw new Error(`RunTask started no task: ${f?.reason ?? 'no reason'} ${f?.detail ?? ''}`);
      }
      ctx.log(`started ECS task ${task.taskArn}`);
      const work: EcsWork = {
        operator: 'ecs',
        name: ctx.workName,
        cluster: config.cluster,
        taskArn: task.taskArn,
        // A family name may have moved to a new revision since it was described.
        essential:
          task.taskDefinitionArn && !task.taskDefinitionArn.endsWith(config.taskDefinition)
            ? await essentialContainers(task.taskDefinitionArn)
            : essential,
      };
      return work;
    },
    async check(work) {
      const w = work as EcsWork;
      const d = await client().send(
        new DescribeTasksCommand({ cluster: w.cluster, tasks: [w.taskArn] }),
      );
      const task = d.tasks?.[0];
      if (!task) {
        // ECS forgets stopped tasks after about an hour: an end that no event reported in time.
        return {
          state: 'failed',
          error: `task ${w.taskArn} is gone (${d.failures?.[0]?.reason ?? 'MISSING'})`,
        };
      }
      return task.lastStatus === 'STOPPED' ? outcomeOf(task, w) : { state: 'running' };
    },
    async stop(work, reason) {
      const w = work as EcsWork;
      await client().send(
        new StopTaskCommand({ cluster: w.cluster, task: w.taskArn, reason: reason.slice(0, 255) }),
      );
    },
    nameOfEvent(event: AwsEvent) {
      if (event.source !== 'aws.ecs' || event['detail-type'] !== 'ECS Task State Change') {
        return undefined;
      }
      const d = event.detail as { lastStatus?: unknown; startedBy?: unknown } | undefined;
      if (d?.lastStatus !== 'STOPPED' || typeof d.startedBy !== 'string') return undefined;
      return STARTED_BY.exec(d.startedBy)?.[1];
    },
    endOfEvent(event, work) {
      const d = event.detail as StoppedTask;
      if (d.taskArn !== (work as EcsWork).taskArn) return undefined;
      return outcomeOf(d, work as EcsWork);
    },
  };
}
