import type { z } from 'zod';
import { compileSchedule } from '../cron/index.ts';
import type { Issue } from '../errors.ts';
import { jsonValueIssues } from '../json.ts';
import { DEFAULT_MAX_MAP_LENGTH } from '../mapping/index.ts';
import {
  findPlaceholders,
  mayHoldTemplate,
  parseTemplate,
  TEMPLATE_ROOTS,
  taskOfPath,
} from '../template/index.ts';
import { buildGraph, findCycles, type TaskGraph } from './graph.ts';
import { OperatorSchemas } from './operators.ts';
import {
  type Dag,
  dagSchema,
  LAMBDA_MAX_TIMEOUT_SECONDS,
  MAX_DAG_BYTES,
  TASK_SETTING_DEFAULTS,
  type Task,
} from './schema.ts';

export type ValidationResult =
  | { readonly ok: true; readonly dag: Dag; readonly graph: TaskGraph }
  | { readonly ok: false; readonly issues: readonly Issue[] };

export interface ValidateOptions {
  /** Operators a DAG may use. Defaults to the built-ins. */
  readonly operators?: OperatorSchemas;
  /**
   * The size limit of the text, MAX_DAG_BYTES by default. A stored version was checked against
   * it on upload, but its normalized form (defaults filled in) may be larger: reading it back
   * must not refuse what registration accepted.
   */
  readonly maxBytes?: number;
  /**
   * A stored version, read back: it is checked as it was when registered. Rules added since
   * (the Lambda limit on `timeoutSeconds`) apply to new versions only, so that no stored
   * version stops loading.
   */
  readonly stored?: boolean;
}

// Building the zod schema is not free; build it once per operator set.
const schemaCache = new WeakMap<OperatorSchemas, ReturnType<typeof dagSchema>>();
const builtIn = OperatorSchemas.builtIn();

function schemaFor(operators: OperatorSchemas) {
  let s = schemaCache.get(operators);
  if (!s) {
    s = dagSchema(operators);
    schemaCache.set(operators, s);
  }
  return s;
}

/** UTF-8 length, counted without encoding the string. */
export function utf8ByteLength(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * Each UTF-16 unit is 1 to 3 UTF-8 bytes (a surrogate pair is 4 bytes for 2 units), so the
 * length alone settles most documents without counting.
 */
function overSizeLimit(text: string, max: number): number | undefined {
  if (text.length > max) return text.length;
  if (text.length * 3 <= max) return undefined;
  const bytes = utf8ByteLength(text);
  return bytes > max ? bytes : undefined;
}

/** Validates a DAG document as text: the size limit first, then JSON, then everything else. */
export function validateDagText(text: string, options: ValidateOptions = {}): ValidationResult {
  const maxBytes = options.maxBytes ?? MAX_DAG_BYTES;
  const size = overSizeLimit(text, maxBytes);
  if (size !== undefined) {
    return fail('$', `document is over the ${maxBytes}-byte limit (at least ${size} bytes)`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    // One problem is one line: V8's message quotes the offending text, newlines included.
    return fail('$', `invalid JSON: ${(e as Error).message.replace(/\s+/g, ' ')}`);
  }
  // Values that would not survive storage (or would overflow the schema check's recursion).
  const unstorable = jsonValueIssues(value);
  if (unstorable.length > 0) return { ok: false, issues: unstorable };
  return validateDag(value, options);
}

/** Validates a parsed DAG document. */
export function validateDag(value: unknown, options: ValidateOptions = {}): ValidationResult {
  const operators = options.operators ?? builtIn;
  const parsed = schemaFor(operators).safeParse(value);
  if (!parsed.success) {
    return { ok: false, issues: parsed.error.issues.flatMap((i) => zodIssues(i, operators)) };
  }
  const doc = parsed.data;
  const issues: Issue[] = [];

  const index = new Map<string, number>();
  doc.tasks.forEach((t, i) => {
    const first = index.get(t.taskId);
    if (first === undefined) index.set(t.taskId, i);
    else {
      issues.push({
        path: `$.tasks[${i}].taskId`,
        message: `duplicate task id "${t.taskId}" (first defined at $.tasks[${first}])`,
      });
    }
  });

  doc.tasks.forEach((t, i) => {
    t.dependsOn.forEach((dep, k) => {
      const path = `$.tasks[${i}].dependsOn[${k}]`;
      if (dep === t.taskId) {
        issues.push({ path, message: `task "${dep}" depends on itself: ${dep} -> ${dep}` });
      } else if (!index.has(dep)) {
        issues.push({ path, message: `unknown task "${dep}" in dependsOn of "${t.taskId}"` });
      }
    });
  });

  const graph = buildGraph(doc.tasks);
  for (const cycle of findCycles(graph)) {
    // A self-dependency is already reported above, with a clearer message.
    if (cycle.length > 2) {
      // `cycle` follows dependsOn (each task depends on the next); print it in run order,
      // upstream first, the way `a -> b` reads in Airflow.
      const runOrder = [...cycle].reverse();
      const [from, to] = [cycle[0] as string, cycle[1] as string];
      const i = index.get(from) ?? 0;
      const k = doc.tasks[i]?.dependsOn.indexOf(to) ?? 0;
      issues.push({
        path: `$.tasks[${i}].dependsOn[${k}]`,
        message: `dependency cycle: ${runOrder.join(' -> ')}`,
      });
    }
  }

  const d = doc.defaults;
  // Explicit fields rather than a spread of zod's output: ten times faster on 10,000 tasks, and
  // every Task has the same shape.
  const tasks = doc.tasks.map(
    (t): Task => ({
      taskId: t.taskId,
      operator: t.operator,
      config: t.config,
      dependsOn: t.dependsOn,
      triggerRule: t.triggerRule,
      description: t.description,
      retries: t.retries ?? d.retries ?? TASK_SETTING_DEFAULTS.retries,
      retryDelaySeconds:
        t.retryDelaySeconds ?? d.retryDelaySeconds ?? TASK_SETTING_DEFAULTS.retryDelaySeconds,
      retryBackoff: t.retryBackoff ?? d.retryBackoff ?? TASK_SETTING_DEFAULTS.retryBackoff,
      maxRetryDelaySeconds:
        t.maxRetryDelaySeconds ??
        d.maxRetryDelaySeconds ??
        TASK_SETTING_DEFAULTS.maxRetryDelaySeconds,
      timeoutSeconds: t.timeoutSeconds ?? d.timeoutSeconds ?? TASK_SETTING_DEFAULTS.timeoutSeconds,
      executor: t.executor ?? d.executor ?? TASK_SETTING_DEFAULTS.executor,
      pool: t.pool ?? d.pool,
      ...(t.mapOver !== undefined
        ? { mapOver: t.mapOver, maxMapLength: t.maxMapLength ?? DEFAULT_MAX_MAP_LENGTH }
        : {}),
    }),
  );
  issues.push(...doc.tasks.flatMap((t, i) => mappingIssues(t, i, operators)));
  if (!options.stored) {
    tasks.forEach((t, i) => {
      if (t.executor !== 'lambda' || t.timeoutSeconds <= LAMBDA_MAX_TIMEOUT_SECONDS) return;
      if (operators.isDeferred(t.operator)) return; // its worker only starts the work
      issues.push({
        path:
          doc.tasks[i]?.timeoutSeconds !== undefined
            ? `$.tasks[${i}].timeoutSeconds`
            : '$.defaults.timeoutSeconds',
        message:
          `${t.timeoutSeconds} s does not fit one Lambda invocation: a lambda task may run at most ` +
          `${LAMBDA_MAX_TIMEOUT_SECONDS} s; set "executor": "fargate" on task "${t.taskId}" ` +
          '(or in defaults) for longer work',
      });
    });
  }

  // Templates: their syntax, their names, and outputs only of upstream tasks. Not for a stored
  // version: one registered before templates existed may hold a literal `{{`.
  if (!options.stored && issues.length === 0) {
    issues.push(...tasks.flatMap((t, i) => templateIssues(t, i, graph, index)));
    issues.push(...tasks.flatMap((t, i) => branchIssues(t, i, graph)));
  }

  if (doc.schedule) {
    const compiled = compileSchedule(doc.schedule.cron, doc.schedule.timezone);
    if (!compiled.ok) {
      for (const e of compiled.issues)
        issues.push({ path: `$.schedule.${e.path}`, message: e.message });
    }
  }

  if (issues.length > 0) return { ok: false, issues };

  const { $schema: _s, defaults: _d, tasks: _t, ...rest } = doc;
  return { ok: true, dag: { ...rest, tasks } as Dag, graph };
}

/** What a task's mapping settings may not be (core/mapping). */
function mappingIssues(
  t: { mapOver?: unknown; maxMapLength?: number | undefined; operator: string },
  i: number,
  operators: OperatorSchemas,
): Issue[] {
  const at = `$.tasks[${i}]`;
  if (t.mapOver === undefined) {
    return t.maxMapLength === undefined
      ? []
      : [{ path: `${at}.maxMapLength`, message: 'applies only to a mapped task: set mapOver too' }];
  }
  if (t.operator === 'branch') {
    return [{ path: `${at}.mapOver`, message: 'a branch cannot be mapped: it chooses once' }];
  }
  if (operators.isDeferred(t.operator)) {
    return [
      {
        path: `${at}.mapOver`,
        message: `"${t.operator}" cannot be mapped yet: map a lambda or http task that starts it`,
      },
    ];
  }
  const max = t.maxMapLength ?? DEFAULT_MAX_MAP_LENGTH;
  if (Array.isArray(t.mapOver)) {
    return t.mapOver.length > max
      ? [
          {
            path: `${at}.mapOver`,
            message: `${t.mapOver.length} items, more than maxMapLength ${max}`,
          },
        ]
      : [];
  }
  const s = String(t.mapOver);
  let whole = false;
  try {
    const parts = parseTemplate(s);
    whole = parts.length === 1 && 'placeholder' in (parts[0] as object);
  } catch {
    return []; // its syntax error is reported with the other templates'
  }
  return whole
    ? []
    : [
        {
          path: `${at}.mapOver`,
          message:
            'must be a list, or exactly one placeholder that renders to a list, such as "{{ tasks.list.output.files }}"',
        },
      ];
}

/** The template problems of one task's config and mapOver (core/template). */
function templateIssues(
  task: Task,
  i: number,
  graph: TaskGraph,
  index: ReadonlyMap<string, number>,
): Issue[] {
  const found = findPlaceholders(task.config, `$.tasks[${i}].config`);
  const over =
    typeof task.mapOver === 'string'
      ? findPlaceholders(task.mapOver, `$.tasks[${i}].mapOver`)
      : { placeholders: [], errors: [] };
  const placeholders = [...found.placeholders, ...over.placeholders];
  const issues: Issue[] = [...found.errors, ...over.errors].map((e) => ({
    path: e.at,
    message: `template: ${e.message}`,
  }));
  let upstream: Set<string> | undefined;
  for (const p of placeholders) {
    const [root] = p.steps;
    const where = { path: p.at };
    if (!TEMPLATE_ROOTS.includes(root as never)) {
      issues.push({
        ...where,
        message: `template: {{ ${p.text} }}: unknown name "${root}"; expected one of: ${TEMPLATE_ROOTS.join(', ')}`,
      });
    } else if (
      (root === 'item' || root === 'mapIndex') &&
      (task.mapOver === undefined || p.at.startsWith(`$.tasks[${i}].mapOver`))
    ) {
      issues.push({
        ...where,
        message:
          task.mapOver === undefined
            ? `template: {{ ${p.text} }}: "${root}" exists only in a mapped task (mapOver)`
            : `template: {{ ${p.text} }}: "${root}" is what mapOver gives: it cannot be used in mapOver itself`,
      });
    } else if (root === 'tasks') {
      // Task ids may hold dots: the id as the renderer reads it.
      const named = taskOfPath(p.steps, (candidate) => index.has(candidate));
      const id = named?.id;
      if (named === undefined || id === undefined) {
        issues.push({ ...where, message: `template: {{ ${p.text} }}: no such task` });
        continue;
      }
      upstream ??= ancestors(graph, task.taskId);
      if (!upstream.has(id)) {
        issues.push({
          ...where,
          message: `template: {{ ${p.text} }}: task "${id}" is not upstream of "${task.taskId}", so its output may not exist yet; add it to dependsOn`,
        });
      } else if (p.steps[named.names + 1] !== 'output') {
        issues.push({
          ...where,
          message: `template: {{ ${p.text} }}: a task offers only its output: tasks.${id}.output`,
        });
      }
    }
  }
  return issues;
}

/** A `branch` may only follow its direct downstream tasks: checked now where not templated. */
function branchIssues(task: Task, i: number, graph: TaskGraph): Issue[] {
  if (task.operator !== 'branch') return [];
  const follow = (task.config as { follow?: unknown }).follow;
  const direct = new Set(graph.downstream.get(task.taskId) ?? []);
  const named = typeof follow === 'string' ? [follow] : Array.isArray(follow) ? follow : [];
  const issues: Issue[] = [];
  named.forEach((t, k) => {
    if (typeof t !== 'string' || mayHoldTemplate(t) || direct.has(t)) return;
    issues.push({
      path:
        typeof follow === 'string'
          ? `$.tasks[${i}].config.follow`
          : `$.tasks[${i}].config.follow[${k}]`,
      message: `"${t}" is not directly downstream of "${task.taskId}"; expected one of: ${[...direct].join(', ') || '(none: add tasks that depend on it)'}`,
    });
  });
  return issues;
}

/** Every task that `taskId` depends on, directly or not. */
function ancestors(graph: TaskGraph, taskId: string): Set<string> {
  const seen = new Set<string>();
  const stack = [...(graph.upstream.get(taskId) ?? [])];
  while (stack.length > 0) {
    const t = stack.pop() as string;
    if (seen.has(t)) continue;
    seen.add(t);
    stack.push(...(graph.upstream.get(t) ?? []));
  }
  return seen;
}

function fail(path: string, message: string): ValidationResult {
  return { ok: false, issues: [{ path, message }] };
}

/** Renders a zod path as a JSON path: `['tasks', 2, 'config', 'url']` → `$.tasks[2].config.url`. */
export function jsonPath(path: readonly PropertyKey[]): string {
  let out = '$';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else if (typeof p === 'string' && /^[A-Za-z_$][\w$]*$/.test(p)) out += `.${p}`;
    else out += `[${JSON.stringify(String(p))}]`;
  }
  return out;
}

function zodIssues(issue: z.core.$ZodIssue, operators: OperatorSchemas): Issue[] {
  const path = jsonPath(issue.path);
  switch (issue.code) {
    case 'invalid_union':
      if (issue.path.at(-1) === 'operator') {
        const known = operators.names().join(', ');
        return [{ path, message: `missing or unknown operator; expected one of: ${known}` }];
      }
      break;
    case 'unrecognized_keys':
      // Point at the key itself, so an editor can jump to the typo.
      return issue.keys.map((k) => ({
        path: jsonPath([...issue.path, k]),
        message: 'unknown field',
      }));
    case 'invalid_type':
      if (issue.message.endsWith('received undefined')) {
        return [{ path, message: `required (${issue.expected})` }];
      }
      break;
  }
  return [{ path, message: issue.message }];
}
