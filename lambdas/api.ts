import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import middy from '@middy/core';
import httpHeaderNormalizer from '@middy/http-header-normalizer';
import httpRouterHandler, { type Route } from '@middy/http-router';
import type { APIGatewayProxyEventV2, APIGatewayProxyResultV2 } from 'aws-lambda';
import { z } from 'zod';
import { backfillView, createBackfill } from '../app/backfills.ts';
import { catchUp } from '../app/catchup.ts';
import { clearTasks } from '../app/clear.ts';
import { deleteDag, loadDag, registerDag, validateDocument } from '../app/dags.ts';
import type { Deps } from '../app/deps.ts';
import { readLog } from '../app/logs.ts';
import { readOutput } from '../app/outputs.ts';
import { putPool } from '../app/pools.ts';
import { cancelRun, reconcileRunSlots, triggerRun } from '../app/runs.ts';
import { compileSchedule, nextRuns } from '../core/cron/index.ts';
import { ID_PATTERN, MAX_DAG_BYTES, POOL_PATTERN } from '../core/dag/schema.ts';
import { jsonPath } from '../core/dag/validate.ts';
import {
  AirlessError,
  ConflictError,
  NotFoundError,
  TooLargeError,
  ValidationError,
} from '../core/errors.ts';
import { jsonValueIssues } from '../core/json.ts';
import { instanceId, MAX_MAP_LENGTH, parseInstance } from '../core/mapping/index.ts';
import { MAX_POOL_SLOTS } from '../core/pools/index.ts';
import type { DagRecord, RunRecord, TaskInstanceRecord } from '../core/ports.ts';
import { attemptHistory } from '../core/state/index.ts';
import { awsRequestMetrics, logger, metrics, runtime } from './runtime.ts';

type Event = APIGatewayProxyEventV2;
type Result = APIGatewayProxyResultV2;

/** An HTTP error with a status, for what is wrong with the request itself. */
class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

const json = (statusCode: number, body: unknown): Result => ({
  statusCode,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

/** The raw body, refused past 1 MiB before anything reads it. */
function rawBody(event: Event): string {
  const body = event.body ?? '';
  const bytes = event.isBase64Encoded ? Math.floor((body.length * 3) / 4) : Buffer.byteLength(body);
  if (bytes > MAX_DAG_BYTES) {
    throw new HttpError(413, `request body is over the ${MAX_DAG_BYTES}-byte limit`);
  }
  return event.isBase64Encoded ? Buffer.from(body, 'base64').toString('utf8') : body;
}

/** Parses the JSON body with a schema; malformed JSON and schema errors are 400s naming the field. */
function jsonBody<T>(event: Event, schema: z.ZodType<T>, optional = false): T {
  const text = rawBody(event).trim();
  let value: unknown = {};
  if (text !== '' || !optional) {
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new HttpError(400, `malformed JSON: ${(e as Error).message.replace(/\s+/g, ' ')}`);
    }
  }
  // Values that would not survive storage are refused before the schema reads them.
  const unstorable = jsonValueIssues(value);
  if (unstorable.length > 0) throw new ValidationError(unstorable);
  return parse(schema, value);
}

function parse<T>(schema: z.ZodType<T>, value: unknown, prefix: PropertyKey[] = []): T {
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new ValidationError(
      r.error.issues.map((i) => ({ path: jsonPath([...prefix, ...i.path]), message: i.message })),
    );
  }
  return r.data;
}

const onlyDots = /^\.+$/;
const id = z
  .string()
  .refine((v) => !onlyDots.test(v), { message: 'must not be made only of dots' })
  .refine((v) => ID_PATTERN.test(v), { message: 'must be 1 to 128 of A-Z a-z 0-9 _ . -' });
const runIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9_.:+-]{1,200}$/, { message: 'is not a run id' })
  .refine((v) => !onlyDots.test(v), { message: 'is not a run id' });
const pathParams = z.object({
  dag_id: id,
  run_id: runIdSchema.optional(),
  task_id: id.optional(),
  backfill_id: z.string().optional(),
});

function path(event: Event) {
  const p = parse(pathParams, event.pathParameters ?? {}, ['path']);
  return { dagId: p.dag_id, runId: p.run_id ?? '', taskId: p.task_id ?? '' };
}

const pageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(50),
  nextToken: z.string().max(2048).optional(),
});

/**
 * `?tasks=false`: the run alone, one read, for a caller that waits for its end. The whole view
 * reads every task instance of the run (a run of 200 tasks is a query of 200 items): polled often,
 * that load falls on the same table as the run it waits for.
 */
const runViewQuery = z.object({ tasks: z.enum(['true', 'false']).optional() });

function dagView(d: DagRecord, now: Date) {
  const compiled = d.schedule ? compileSchedule(d.schedule.cron, d.schedule.timezone) : undefined;
  return {
    dagId: d.dagId,
    latestVersion: d.latestVersion,
    paused: d.paused,
    description: d.description ?? null,
    owner: d.owner ?? null,
    schedule: d.schedule ?? null,
    nextRunTimes:
      compiled?.ok && !d.paused
        ? nextRuns(compiled.spec, compiled.timezone, now, 5).map((t) => t.toISOString())
        : [],
    updatedAt: d.updatedAt,
  };
}

const runSummary = (r: RunRecord) => ({
  runId: r.runId,
  status: r.status,
  logicalDate: r.logicalDate,
  startTime: r.startTime,
  endTime: r.endTime,
});

/** `?mapIndex=N`: one instance of a mapped task (core/mapping). */
const mapIndexQuery = z.object({
  mapIndex: z.coerce
    .number()
    .int()
    .min(0)
    .max(MAX_MAP_LENGTH - 1)
    .optional(),
});

function mapIndexOf(event: Event): number | undefined {
  const q = event.queryStringParameters ?? {};
  return parse(mapIndexQuery, { mapIndex: q.mapIndex }, ['query']).mapIndex;
}

async function taskInstance(
  deps: Deps,
  dagId: string,
  runId: string,
  taskId: string,
  mapIndex?: number,
) {
  const id = mapIndex === undefined ? taskId : instanceId(taskId, mapIndex);
  const ti = await deps.store.getTaskInstance({ dagId, runId, taskId: id });
  if (!ti) {
    throw new NotFoundError(
      mapIndex === undefined
        ? `task ${taskId} of run ${runId} not found`
        : `task ${taskId} of run ${runId} has no mapped instance ${mapIndex}`,
    );
  }
  // An instance of an earlier expansion (the mapped task ran again with fewer items) is gone.
  if (mapIndex !== undefined) {
    const parent = await deps.store.getTaskInstance({ dagId, runId, taskId });
    if (parent?.mapAttempt !== ti.mapAttempt) {
      throw new NotFoundError(`task ${taskId} of run ${runId} has no mapped instance ${mapIndex}`);
    }
  }
  return ti;
}

/**
 * The task instances of a run view: each DAG task, then its mapped instances (of its current
 * expansion) in index order, with their `mapIndex`.
 */
function runTasks(tasks: readonly TaskInstanceRecord[]) {
  const current = new Map<string, number | undefined>();
  for (const t of tasks) if (!parseInstance(t.taskId)) current.set(t.taskId, t.mapAttempt);
  const key = (t: TaskInstanceRecord) => {
    const inst = parseInstance(t.taskId);
    return { base: inst?.taskId ?? t.taskId, index: inst ? inst.mapIndex : -1 };
  };
  return tasks
    .filter((t) => {
      const inst = parseInstance(t.taskId);
      return !inst || current.get(inst.taskId) === t.mapAttempt;
    })
    .map((t) => ({ t, k: key(t) }))
    .sort((a, b) => (a.k.base === b.k.base ? a.k.index - b.k.index : a.k.base < b.k.base ? -1 : 1))
    .map(({ t, k }) => ({ t, taskId: k.base, mapIndex: k.index >= 0 ? k.index : undefined }));
}

async function liveDag(dagId: string): Promise<DagRecord> {
  const dag = await runtime().deps.store.getDag(dagId);
  if (!dag || dag.deleted) throw new NotFoundError(`DAG ${dagId} not found`);
  return dag;
}

const isoTime = z.iso.datetime({
  offset: true,
  error: 'must be an ISO 8601 time, such as 2026-03-01T00:00:00Z',
});
const backfillBody = z.strictObject({ from: isoTime, to: isoTime });
const poolPath = z.object({
  pool: z.string().regex(POOL_PATTERN, { message: `must match ${POOL_PATTERN.source}` }),
});
const poolBody = z.strictObject({
  slots: z
    .int({ message: 'must be a whole number of slots' })
    .min(0)
    .max(MAX_POOL_SLOTS, { message: `must be at most ${MAX_POOL_SLOTS}` }),
});
const backfillPath = z.object({
  backfill_id: z.string().regex(/^bf_[A-Za-z0-9_]{1,80}$/, { message: 'is not a backfill id' }),
});

const triggerBody = z.strictObject({
  conf: z.record(z.string(), z.unknown()).optional(),
  idempotencyKey: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,128}$/, { message: 'must match ^[A-Za-z0-9_.:-]{1,128}$' })
    .refine((v) => !onlyDots.test(v), { message: 'must not be made only of dots' })
    .optional(),
});

/**
 * Where each task of a DAG version runs (DESIGN.md section 5: the run view names each task's
 * executor). Versions are cached per container (app/dags.ts). A version that can no longer be
 * read (its document was removed) leaves the field out rather than failing the whole view.
 */
async function executorsOf(dagId: string, version: number): Promise<Map<string, string>> {
  try {
    const { dag } = await loadDag(runtime().deps, dagId, version);
    return new Map(dag.tasks.map((t) => [t.taskId, t.executor]));
  } catch (e) {
    if (e instanceof NotFoundError || e instanceof ValidationError) return new Map();
    throw e;
  }
}

const routes: Route<Event, Result>[] = [
  { method: 'GET', path: '/v1/health', handler: async () => json(200, { status: 'ok' }) },
  {
    method: 'POST',
    path: '/v1/dags',
    handler: async (event: Event) => {
      const { deps } = runtime();
      const text = rawBody(event);
      // Validate before writing anything. Register, then store the file where uploads go: the
      // registrar that the upload triggers then finds the version unchanged. (Written the other
      // way round, the registrar could register the new DAG first, and this call would answer
      // "unchanged" for a DAG it created.)
      const checked = validateDocument(deps, text);
      if (!checked.ok) throw new ValidationError(checked.issues);
      const fileKey = `dags/${checked.dag.dagId}.json`;
      const r = await registerDag(deps, text, checked, fileKey);
      if (!r.ok) throw new ValidationError(r.issues);
      await deps.blobs.putDagFile(`${checked.dag.dagId}.json`, text);
      return json(r.created ? 201 : 200, {
        dagId: r.dagId,
        version: r.version,
        ...(r.warnings.length > 0 ? { warnings: r.warnings } : {}),
      });
    },
  },
  {
    method: 'GET',
    path: '/v1/dags',
    handler: async (event: Event) => {
      const q = parse(pageQuery, event.queryStringParameters ?? {}, ['query']);
      const page = await runtime().deps.store.listDags({ limit: q.limit, nextToken: q.nextToken });
      const now = new Date();
      return json(200, { dags: page.items.map((d) => dagView(d, now)), nextToken: page.nextToken });
    },
  },
  {
    method: 'GET',
    path: '/v1/dags/{dag_id}',
    handler: async (event: Event) => {
      const { deps } = runtime();
      const dag = await liveDag(path(event).dagId);
      // The latest version's tasks and edges, so that a client can draw the graph.
      const { dag: doc } = await loadDag(deps, dag.dagId, dag.latestVersion);
      return json(200, {
        ...dagView(dag, new Date()),
        tasks: doc.tasks.map((t) => ({
          taskId: t.taskId,
          operator: t.operator,
          dependsOn: t.dependsOn,
          triggerRule: t.triggerRule,
          ...(t.description ? { description: t.description } : {}),
        })),
      });
    },
  },
  {
    method: 'PATCH',
    path: '/v1/dags/{dag_id}',
    handler: async (event: Event) => {
      const { dagId } = path(event);
      const { paused } = jsonBody(event, z.strictObject({ paused: z.boolean() }));
      const { deps } = runtime();
      const dag = await deps.store.setDagPaused(dagId, paused, deps.clock());
      if (dag.schedule) await deps.schedules.setEnabled(dagId, !paused);
      // Runs triggered while paused waited `queued`: start what the slots allow. Then the
      // scheduled times missed while paused: all of them with catchup, else the latest.
      if (!paused) {
        await reconcileRunSlots(deps, dagId);
        await catchUp(deps, dagId, runtime().env.BACKFILL_MAX_RUNS);
      }
      return json(200, dagView(dag, deps.clock()));
    },
  },
  {
    method: 'DELETE',
    path: '/v1/dags/{dag_id}',
    handler: async (event: Event) => {
      const { dagId } = path(event);
      const { deps } = runtime();
      await liveDag(dagId);
      await deleteDag(deps, dagId);
      return { statusCode: 204, body: '' };
    },
  },
  {
    method: 'POST',
    path: '/v1/dags/{dag_id}/runs',
    handler: async (event: Event) => {
      const { dagId } = path(event);
      const body = jsonBody(event, triggerBody, true);
      const { run, created } = await triggerRun(runtime().deps, {
        dagId,
        conf: body.conf,
        idempotencyKey: body.idempotencyKey,
      });
      return json(created ? 201 : 200, { runId: run.runId, status: run.status });
    },
  },
  {
    method: 'GET',
    path: '/v1/dags/{dag_id}/runs',
    handler: async (event: Event) => {
      const { dagId } = path(event);
      const q = parse(pageQuery, event.queryStringParameters ?? {}, ['query']);
      await liveDag(dagId);
      const page = await runtime().deps.store.listRuns(dagId, {
        limit: q.limit,
        nextToken: q.nextToken,
      });
      return json(200, { runs: page.items.map(runSummary), nextToken: page.nextToken });
    },
  },
  {
    method: 'GET',
    path: '/v1/dags/{dag_id}/runs/{run_id}',
    handler: async (event: Event) => {
      const { dagId, runId } = path(event);
      const q = parse(runViewQuery, event.queryStringParameters ?? {}, ['query']);
      const { store } = runtime().deps;
      const run = await store.getRun(dagId, runId);
      if (!run) throw new NotFoundError(`run ${runId} of DAG ${dagId} not found`);
      const view = {
        ...runSummary(run),
        dagId,
        dagVersion: run.dagVersion,
        conf: run.conf,
        ...(run.error ? { error: run.error } : {}),
      };
      if (q.tasks === 'false') return json(200, view);
      const [tasks, executors] = await Promise.all([
        store.listTaskInstances(dagId, runId),
        executorsOf(dagId, run.dagVersion),
      ]);
      return json(200, {
        ...view,
        tasks: runTasks(tasks).map(({ t, taskId, mapIndex }) => ({
          taskId,
          ...(mapIndex !== undefined ? { mapIndex } : {}),
          status: t.status,
          attempt: t.attempt,
          ...(executors.has(taskId) ? { executor: executors.get(taskId) } : {}),
          ...(t.mapLength !== undefined && mapIndex === undefined
            ? { mapLength: t.mapLength }
            : {}),
          queuedAt: t.queuedAt,
          startTime: t.startTime,
          endTime: t.endTime,
          ...(t.error ? { error: t.error } : {}),
        })),
      });
    },
  },
  {
    method: 'POST',
    path: '/v1/dags/{dag_id}/runs/{run_id}/cancel',
    handler: async (event: Event) => {
      const { dagId, runId } = path(event);
      const { deps } = runtime();
      const run = await deps.store.getRun(dagId, runId);
      if (!run) throw new NotFoundError(`run ${runId} of DAG ${dagId} not found`);
      try {
        return json(200, runSummary(await cancelRun(deps, dagId, runId)));
      } catch (e) {
        if (e instanceof ConflictError)
          throw new HttpError(409, `run ${runId} has already ended (${run.status})`);
        throw e;
      }
    },
  },
  {
    method: 'POST',
    path: '/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear',
    handler: async (event: Event) => {
      const { dagId, runId, taskId } = path(event);
      const mapIndex = mapIndexOf(event);
      return json(
        200,
        runSummary(
          await clearTasks(
            runtime().deps,
            dagId,
            runId,
            taskId,
            mapIndex === undefined ? {} : { mapIndex },
          ),
        ),
      );
    },
  },
  {
    method: 'GET',
    path: '/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}',
    handler: async (event: Event) => {
      const { dagId, runId, taskId } = path(event);
      const { deps } = runtime();
      const mapIndex = mapIndexOf(event);
      const ti = await taskInstance(deps, dagId, runId, taskId, mapIndex);
      const executor = (await executorsOf(dagId, ti.dagVersion)).get(taskId);
      return json(200, {
        taskId,
        ...(mapIndex !== undefined ? { mapIndex } : {}),
        ...(ti.mapLength !== undefined && mapIndex === undefined
          ? { mapLength: ti.mapLength }
          : {}),
        status: ti.status,
        attempt: ti.attempt,
        ...(executor ? { executor } : {}),
        startTime: ti.startTime,
        endTime: ti.endTime,
        attempts: attemptHistory(ti),
      });
    },
  },
  {
    method: 'GET',
    path: '/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs',
    handler: async (event: Event) => {
      const { dagId, runId, taskId } = path(event);
      const q = parse(
        z
          .object({ attempt: z.coerce.number().int().min(1).optional() })
          .extend(mapIndexQuery.shape),
        event.queryStringParameters ?? {},
        ['query'],
      );
      const { deps } = runtime();
      const ti = await taskInstance(deps, dagId, runId, taskId, q.mapIndex);
      const attempt = q.attempt ?? ti.attempt;
      const text = attempt >= 1 ? await readLog(deps, ti, attempt) : undefined;
      if (text === undefined)
        throw new NotFoundError(`no log for attempt ${attempt} of task ${taskId}`);
      return {
        statusCode: 200,
        headers: { 'content-type': 'text/plain; charset=utf-8' },
        body: text,
      };
    },
  },
  {
    method: 'GET',
    path: '/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/output',
    handler: async (event: Event) => {
      const { dagId, runId, taskId } = path(event);
      const { deps } = runtime();
      const ti = await taskInstance(deps, dagId, runId, taskId, mapIndexOf(event));
      const found = await readOutput(deps, ti);
      if (!found) {
        throw new NotFoundError(
          ti.status === 'success'
            ? `task ${taskId} succeeded without an output`
            : `task ${taskId} has no output: it is ${ti.status}`,
        );
      }
      return json(200, { output: found.output });
    },
  },
  {
    method: 'POST',
    path: '/v1/dags/{dag_id}/backfills',
    handler: async (event: Event) => {
      const { dagId } = path(event);
      const body = jsonBody(event, backfillBody);
      const { deps, env } = runtime();
      const b = await createBackfill(
        deps,
        dagId,
        { from: new Date(body.from), to: new Date(body.to) },
        env.BACKFILL_MAX_RUNS,
      );
      return json(201, await backfillView(deps, dagId, b.backfillId));
    },
  },
  {
    method: 'GET',
    path: '/v1/dags/{dag_id}/backfills/{backfill_id}',
    handler: async (event: Event) => {
      const { dagId } = path(event);
      const { backfill_id } = parse(backfillPath, event.pathParameters ?? {}, ['path']);
      return json(200, await backfillView(runtime().deps, dagId, backfill_id));
    },
  },
  {
    method: 'PUT',
    path: '/v1/pools/{pool}',
    handler: async (event: Event) => {
      const { pool } = parse(poolPath, event.pathParameters ?? {}, ['path']);
      const body = jsonBody(event, poolBody);
      return json(200, await putPool(runtime().deps, pool, body.slots));
    },
  },
  {
    method: 'GET',
    path: '/v1/pools',
    handler: async () => json(200, { pools: await runtime().deps.store.listPools() }),
  },
  {
    method: 'DELETE',
    path: '/v1/pools/{pool}',
    handler: async (event: Event) => {
      const { pool } = parse(poolPath, event.pathParameters ?? {}, ['path']);
      await runtime().deps.store.deletePool(pool);
      return { statusCode: 204, body: '' };
    },
  },
  {
    method: 'GET',
    path: '/v1/import-errors',
    handler: async (event: Event) => {
      const q = parse(pageQuery, event.queryStringParameters ?? {}, ['query']);
      const page = await runtime().deps.store.listImportErrors({
        limit: q.limit,
        nextToken: q.nextToken,
      });
      return json(200, { importErrors: page.items, nextToken: page.nextToken });
    },
  },
];

function statusOf(e: unknown): number | undefined {
  const code = (e as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof code === 'number' ? code : undefined;
}

/** Every error becomes `{error, details?}` with the right status; nothing leaks a stack trace. */
const jsonErrors = (): middy.MiddlewareObj<Event, Result> => ({
  onError: async (request) => {
    const e = request.error;
    if (e instanceof TooLargeError) {
      request.response = json(413, { error: e.message, details: e.issues });
    } else if (e instanceof ValidationError) {
      request.response = json(400, { error: 'invalid request', details: e.issues });
    } else if (e instanceof NotFoundError) {
      request.response = json(404, { error: e.message });
    } else if (e instanceof HttpError) {
      request.response = json(e.statusCode, { error: e.message });
    } else if (e instanceof ConflictError) {
      request.response = json(409, { error: e.message });
    } else if ((statusOf(e) ?? 500) < 500) {
      // The router's own errors, such as a method a route does not have (405).
      const event = request.event;
      request.response = json(statusOf(e) as number, {
        error: `no route ${event.requestContext?.http?.method ?? ''} ${event.rawPath ?? ''}`.trim(),
      });
    } else {
      logger.error('unhandled', { error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
      const retryable = e instanceof AirlessError && e.retryable;
      request.response = json(retryable ? 503 : 500, {
        error: retryable ? 'busy, try again' : 'internal error',
      });
    }
  },
});

export const handler = middy<Event, Result>()
  .use(httpHeaderNormalizer())
  .use(injectLambdaContext(logger))
  .use(logMetrics(metrics))
  .use(awsRequestMetrics())
  .use(jsonErrors())
  .handler(
    httpRouterHandler({
      routes,
      notFoundResponse: ({ method, path }) => {
        throw new HttpError(404, `no route ${method} ${path}`);
      },
    }),
  );
