import { z } from 'zod';
import { canonicalTimeZone } from '../cron/index.ts';
import { DEFAULT_MAX_MAP_LENGTH, MAX_MAP_LENGTH } from '../mapping/index.ts';
import { mayHoldTemplate } from '../template/index.ts';
import { OperatorSchemas } from './operators.ts';

/**
 * Ids of DAGs and tasks, 1 to 128 of `A-Za-z0-9_.-`, but not only dots:
 * ids become S3 key and URL path segments, where `.` and `..` mean this and the parent folder.
 */
export const ID_PATTERN = /^(?!\.+$)[A-Za-z0-9_.-]{1,128}$/;
const ONLY_DOTS = /^\.+$/;
/** Refused before parsing: a DAG document is stored whole in S3 and read whole by Lambdas. */
export const MAX_DAG_BYTES = 1024 * 1024;
export const MAX_TASKS = 10_000;

export const TRIGGER_RULES = [
  'all_success',
  'all_failed',
  'all_done',
  'one_success',
  'one_failed',
  'none_failed',
  'none_failed_min_one_success',
  'none_skipped',
  'always',
  'one_done',
  'all_skipped',
  'all_done_min_one_success',
] as const;
export type TriggerRule = (typeof TRIGGER_RULES)[number];

/** A pool's name (core/pools). */
export const POOL_PATTERN = /^(?!\.+$)[A-Za-z0-9_.-]{1,64}$/;
/** The largest `maxActiveTasks`: a DAG's largest run. */
export const MAX_ACTIVE_TASKS = 10_000;

const id = (what: string) =>
  z.string().regex(ID_PATTERN, {
    error: (issue) =>
      typeof issue.input === 'string' && ONLY_DOTS.test(issue.input)
        ? `${what} must not be made only of dots ("." and ".." are path segments)`
        : `${what} must match ${ID_PATTERN.source}`,
  });

/**
 * Retry and timeout settings. A task inherits each one from the DAG's `defaults`, and those from
 * the values below. Defaults follow Airflow where it has one (no retries, fixed backoff).
 */
export const TASK_SETTING_DEFAULTS = {
  retries: 0,
  retryDelaySeconds: 60,
  retryBackoff: 'fixed',
  maxRetryDelaySeconds: 3600,
  // Fits one Lambda invocation: see LAMBDA_MAX_TIMEOUT_SECONDS.
  timeoutSeconds: 840,
  executor: 'lambda',
} as const;

/** Where a task's attempts run (DESIGN.md section 9). */
export const EXECUTORS = ['lambda', 'fargate'] as const;
export type Executor = (typeof EXECUTORS)[number];

/**
 * The longest `timeoutSeconds` of a `lambda` task. A Lambda invocation ends at 15 minutes (900
 * s); the worker also claims the attempt, reads the DAG, writes the log and records the outcome
 * within it, and keeps a margin so that a task cut by its own timeout still gets its outcome
 * written. 14 minutes leaves a minute for that. A longer task belongs on `fargate`.
 */
export const LAMBDA_MAX_TIMEOUT_SECONDS = 840;

const taskSettings = {
  retries: z.int().min(0).max(100).optional(),
  retryDelaySeconds: z.number().min(0).max(86_400).optional(),
  retryBackoff: z.enum(['fixed', 'exponential']).optional(),
  maxRetryDelaySeconds: z.number().min(0).max(86_400).optional(),
  // Lambda workers stop at 15 minutes (validateDag refuses a longer `lambda` task); Fargate
  // tasks may run up to 7 days.
  timeoutSeconds: z.int().min(1).max(604_800).optional(),
  executor: z.enum(EXECUTORS).optional().describe('lambda (the default) or fargate'),
  pool: z
    .string()
    .regex(POOL_PATTERN, { error: `pool must match ${POOL_PATTERN.source}` })
    .optional()
    .describe(
      'The pool whose slots the task takes while it runs (PUT /v1/pools/{pool}); it waits queued while the pool is full',
    ),
};

const schedule = z.strictObject({
  cron: z.string().min(1).describe('5-field Unix cron, or @hourly @daily @weekly @monthly @yearly'),
  // Stored as the canonical IANA name (`utc` → `UTC`); a name that is not one is reported by
  // validateDag, beside the cron expression, through compileSchedule.
  timezone: z
    .string()
    .min(1)
    .overwrite((tz) => {
      const c = canonicalTimeZone(tz);
      return c.ok ? c.timezone : tz;
    })
    .default('UTC')
    .describe('IANA time zone name, such as America/New_York'),
  catchup: z
    .boolean()
    .default(false)
    .describe(
      'On registering or unpausing the DAG: true creates the runs of every scheduled time missed since the later of startDate and its latest scheduled run; false, only the latest one (Airflow)',
    ),
  startDate: z.iso
    .datetime({ offset: true, error: 'must be an ISO 8601 time, such as 2026-01-01T00:00:00Z' })
    .optional()
    .describe('The first scheduled time that catchup may create a run for'),
});

/** Whether an issue's path is at or inside one of the templated strings' paths. */
function underAny(path: readonly PropertyKey[], templated: readonly (readonly PathKey[])[]) {
  return templated.some((t) => t.length <= path.length && t.every((k, i) => k === path[i]));
}
type PathKey = string | number;

/** The paths, as zod writes them, of a JSON value's strings that hold a placeholder. */
function templatedPaths(value: unknown, path: PathKey[] = [], out: PathKey[][] = []) {
  if (typeof value === 'string') {
    if (mayHoldTemplate(value)) out.push(path);
  } else if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) templatedPaths(value[i], [...path, i], out);
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) templatedPaths(v, [...path, k], out);
  }
  return out;
}

/**
 * An operator's config that may hold templates (core/template): checked whole when it holds
 * none; when it does, every part but the templated strings is checked now, and the rendered
 * config is checked again by the worker before the operator runs (a string that becomes a
 * number, say). A templated config is kept as written.
 */
function templatable(config: z.ZodType) {
  return z
    .unknown()
    .optional()
    .transform((value, ctx) => {
      const parsed = config.safeParse(value);
      if (parsed.success) return parsed.data;
      // A templated string inside the config; the config itself must be written as an object.
      const templated = templatedPaths(value).filter((path) => path.length > 0);
      const left = parsed.error.issues.filter((i) => !underAny(i.path, templated));
      if (left.length === 0) return value;
      for (const issue of left) ctx.issues.push({ ...issue, input: value } as never);
      return z.NEVER;
    });
}

function taskSchema(operator: string, config: z.ZodType, templates: boolean) {
  // A `noop` needs no config; every other operator must say what to call.
  const base = operator === 'noop' ? config.default({}) : config;
  const cfg = templates ? templatable(base) : base;
  return z.strictObject({
    taskId: id('taskId'),
    operator: z.literal(operator),
    config: cfg,
    dependsOn: z.array(z.string()).default([]),
    triggerRule: z.enum(TRIGGER_RULES).default('all_success'),
    description: z.string().max(1024).optional(),
    mapOver: z
      .union([z.string(), z.array(z.unknown())])
      .optional()
      .describe(
        'Dynamic mapping: a list, or one placeholder that renders to a list ("{{ tasks.list.output.files }}"); the task runs once per item, with {{ item }} and {{ mapIndex }} in its config',
      ),
    maxMapLength: z
      .int()
      .min(1)
      .max(MAX_MAP_LENGTH)
      .optional()
      .describe(
        `The most items mapOver may give (default ${DEFAULT_MAX_MAP_LENGTH}); more fails the task`,
      ),
    ...taskSettings,
  });
}

/**
 * Builds the DAG schema for the operators registered in `operators`. `templates: false` gives
 * each config its operator's schema as it stands, for the JSON Schema file (an editor then
 * flags a templated number field, which registration accepts).
 */
export function dagSchema(
  operators: OperatorSchemas = OperatorSchemas.builtIn(),
  { templates = true }: { readonly templates?: boolean } = {},
) {
  const variants = operators.entries().map(([name, config]) => taskSchema(name, config, templates));
  const [first, ...rest] = variants;
  if (!first) throw new Error('no operators registered');
  return z
    .strictObject({
      $schema: z.string().optional(),
      dagId: id('dagId'),
      description: z.string().max(4096).optional(),
      owner: z.string().max(256).optional(),
      tags: z.array(z.string().min(1).max(64)).max(50).optional(),
      schedule: schedule.optional(),
      maxActiveRuns: z.int().min(1).max(1000).default(16),
      maxActiveTasks: z
        .int()
        .min(1)
        .max(MAX_ACTIVE_TASKS)
        .optional()
        .describe('The most tasks of this DAG running at once, across its runs'),
      defaults: z.strictObject(taskSettings).default({}),
      params: z.record(z.string(), z.unknown()).default({}),
      tasks: z
        .array(z.discriminatedUnion('operator', [first, ...rest]))
        .min(1, { message: 'a DAG needs at least one task' })
        .max(MAX_TASKS, { message: `a DAG may have at most ${MAX_TASKS} tasks` }),
    })
    .describe('An Airless DAG');
}

export interface RetrySettings {
  readonly retries: number;
  readonly retryDelaySeconds: number;
  readonly retryBackoff: 'fixed' | 'exponential';
  readonly maxRetryDelaySeconds: number;
}

export interface Task extends RetrySettings {
  readonly taskId: string;
  readonly operator: string;
  readonly config: unknown;
  readonly dependsOn: readonly string[];
  readonly triggerRule: TriggerRule;
  readonly description?: string | undefined;
  readonly timeoutSeconds: number;
  readonly executor: Executor;
  /** The pool whose slots its attempts take (core/pools). */
  readonly pool?: string | undefined;
  /** Dynamic mapping (core/mapping): a list, or a placeholder that renders to one. */
  readonly mapOver?: unknown;
  /** With mapOver: the most items it may give. */
  readonly maxMapLength?: number | undefined;
}

export interface Schedule {
  readonly cron: string;
  readonly timezone: string;
  readonly catchup: boolean;
  /** ISO: the first scheduled time catchup may create a run for. */
  readonly startDate?: string | undefined;
}

/** A valid DAG, with every task's settings resolved from its own, the DAG defaults and ours. */
export interface Dag {
  readonly dagId: string;
  readonly description?: string | undefined;
  readonly owner?: string | undefined;
  readonly tags?: readonly string[] | undefined;
  readonly schedule?: Schedule | undefined;
  readonly maxActiveRuns: number;
  /** The most of its tasks running at once, across its runs; none when absent. */
  readonly maxActiveTasks?: number | undefined;
  readonly params: Readonly<Record<string, unknown>>;
  readonly tasks: readonly Task[];
}
