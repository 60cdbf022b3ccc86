import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { App, type CfnElement } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import { beforeAll, describe, expect, it } from 'vitest';
import { METRIC_DIMENSIONS, METRIC_NAMESPACE, Metric } from '../../core/metric-names.ts';
import { AirlessStack } from '../../lib/airless-stack.ts';

/**
 * The dashboard may graph only metrics that exist: the ones the handlers emit
 * (core/metric-names.ts, each checked below against the sources that emit it) and AWS's own
 * service metrics of the stack's resources.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Names in core/metric-names.ts that no code emits yet: the run outcomes, which the lead adds
 * in app/advance.ts, app/runs.ts and lambdas/advance.ts. Once a name is emitted the test below
 * fails until it leaves this list, so the list never outlives the change.
 */
const PENDING_EMISSION: ReadonlySet<string> = new Set([]);

/** AWS service metrics the dashboard may graph, and the dimension that names our resource. */
const SERVICE_METRICS: Record<string, { names: string[]; resource: string }> = {
  'AWS/SQS': {
    names: [
      'ApproximateNumberOfMessagesVisible',
      'ApproximateNumberOfMessagesNotVisible',
      'ApproximateAgeOfOldestMessage',
    ],
    resource: 'QueueName',
  },
  'AWS/Lambda': {
    names: ['Errors', 'Throttles', 'Duration', 'Invocations'],
    resource: 'FunctionName',
  },
  'AWS/DynamoDB': {
    names: ['ThrottledRequests', 'ReadThrottleEvents', 'WriteThrottleEvents'],
    resource: 'TableName',
  },
};

interface MetricLine {
  widget: string;
  namespace: string;
  name: string;
  dimensions: Record<string, string>;
  options: Record<string, unknown>;
}
interface ExpressionLine {
  widget: string;
  expression: string;
  id?: string;
}
interface Widget {
  type: string;
  properties: { title?: string; metrics?: unknown[][]; alarms?: string[] };
}

/**
 * The dashboard body as JSON: CloudFormation references inside it become `REF(LogicalId)` and
 * `GETATT(LogicalId.Attr)` strings, so that dimension values can be checked.
 */
function dashboardBody(template: Template): { widgets: Widget[] } {
  const dashboards = Object.values(template.findResources('AWS::CloudWatch::Dashboard'));
  expect(dashboards).toHaveLength(1);
  const body = dashboards[0]?.Properties.DashboardBody as unknown;
  const parts =
    typeof body === 'string'
      ? [body]
      : (body as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1];
  const text = parts
    .map((p) => {
      if (typeof p === 'string') return p;
      const r = p as { Ref?: string; 'Fn::GetAtt'?: string[] };
      if (r.Ref) return `REF(${r.Ref})`;
      if (r['Fn::GetAtt']) return `GETATT(${r['Fn::GetAtt'].join('.')})`;
      throw new Error(`unexpected token in the dashboard body: ${JSON.stringify(p)}`);
    })
    .join('');
  return JSON.parse(text);
}

/** Every line of every graph: a metric `[namespace, name, k1, v1, ..., {options}]` or an expression. */
function linesOf(widgets: Widget[]): { metrics: MetricLine[]; expressions: ExpressionLine[] } {
  const metrics: MetricLine[] = [];
  const expressions: ExpressionLine[] = [];
  for (const w of widgets) {
    const title = w.properties.title ?? '';
    for (const line of w.properties.metrics ?? []) {
      const last = line[line.length - 1];
      const options =
        typeof last === 'object' && last !== null ? (last as Record<string, unknown>) : {};
      if (typeof options.expression === 'string') {
        expressions.push({
          widget: title,
          expression: options.expression,
          ...(typeof options.id === 'string' ? { id: options.id } : {}),
        });
        continue;
      }
      const parts = line.filter((p) => typeof p === 'string') as string[];
      // CloudWatch's shorthand "." (repeat the line above) would hide names from this check.
      expect(parts, `a shorthand metric line in "${title}"`).not.toContain('.');
      const [namespace = '', name = '', ...dims] = parts;
      const dimensions: Record<string, string> = {};
      for (let i = 0; i < dims.length; i += 2)
        dimensions[dims[i] as string] = dims[i + 1] as string;
      metrics.push({ widget: title, namespace, name, dimensions, options });
    }
  }
  return { metrics, expressions };
}

/** Every TypeScript source under a directory of the repository. */
function sources(dir: string): Array<{ file: string; text: string }> {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => ({ file: `${dir}/${f}`, text: readFileSync(join(ROOT, dir, f), 'utf8') }));
}

const stripComments = (text: string) =>
  text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|\s)\/\/.*$/gm, '$1');

/** The text of the call's arguments, from just after `(` to its matching `)`. */
function callArguments(text: string, open: number): string {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === '(') depth++;
    else if (text[i] === ')' && --depth === 0) return text.slice(open + 1, i);
  }
  throw new Error(`unbalanced call at ${open}`);
}

/** Splits at commas outside brackets (the arguments of a call). */
function topLevelSplit(args: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < args.length; i++) {
    const c = args[i];
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') depth--;
    else if (c === ',' && depth === 0) {
      out.push(args.slice(start, i));
      start = i + 1;
    }
  }
  out.push(args.slice(start));
  return out.map((a) => a.trim());
}

/**
 * The metric names that a source passes to `addMetric`. The name must be a string literal or a
 * member of `Metric` (or a ternary of those): anything else, a template literal above all, is a
 * name that this check and the dashboard cannot know, and is returned in `dynamic`.
 */
function emittedNames(text: string): { names: string[]; dynamic: string[] } {
  const names: string[] = [];
  const dynamic: string[] = [];
  const code = stripComments(text);
  const one = (arg: string): string | undefined => {
    const literal = /^(['"])([^'"`]*)\1$/.exec(arg);
    if (literal) return literal[2];
    const member = /^Metric\.(\w+)$/.exec(arg);
    if (member)
      return (Metric as Record<string, string>)[member[1] as string] ?? `Metric.${member[1]}`;
    return undefined;
  };
  for (const m of code.matchAll(/\.addMetric\s*\(/g)) {
    const first = topLevelSplit(callArguments(code, (m.index ?? 0) + m[0].length - 1))[0] ?? '';
    const ternary = /^[^?]+\?([^:]+):(.+)$/s.exec(first);
    const candidates = ternary ? [ternary[1]?.trim() ?? '', ternary[2]?.trim() ?? ''] : [first];
    for (const c of candidates) {
      const name = one(c);
      if (name === undefined) dynamic.push(first);
      else names.push(name);
    }
  }
  return { names, dynamic };
}

let stack: AirlessStack;
let template: Template;
let widgets: Widget[];
let lines: ReturnType<typeof linesOf>;
let id: (c: IConstruct) => string;

beforeAll(() => {
  const { context } = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8'));
  const app = new App({ context: { ...context, 'aws:cdk:bundling-stacks': [] } });
  stack = new AirlessStack(app, 'Airless', {
    env: { account: '123456789012', region: 'us-east-1' },
  });
  template = Template.fromStack(stack);
  id = (c) => stack.getLogicalId(c.node.defaultChild as CfnElement);
  widgets = dashboardBody(template).widgets;
  lines = linesOf(widgets);
});

describe('metric names', () => {
  const names = Object.values(Metric);

  it('are unique, keyed by themselves, and valid CloudWatch names', () => {
    for (const [key, name] of Object.entries(Metric)) expect(name).toBe(key);
    expect(new Set(names).size).toBe(names.length);
    for (const name of names) expect(name).toMatch(/^[A-Za-z][A-Za-z0-9]{0,254}$/);
  });

  it('are where Powertools emits them: every function has the namespace and service', () => {
    const fns = Object.values(template.findResources('AWS::Lambda::Function')).filter(
      (f) => f.Properties.Environment?.Variables?.POWERTOOLS_SERVICE_NAME !== undefined,
    );
    expect(fns.length).toBe(Object.keys(stack.scheduler.functions).length);
    for (const f of fns) {
      expect(f.Properties.Environment.Variables).toMatchObject({
        POWERTOOLS_METRICS_NAMESPACE: METRIC_NAMESPACE,
        POWERTOOLS_SERVICE_NAME: METRIC_DIMENSIONS.service,
      });
    }
    // Powertools' one default dimension is the service.
    expect(Object.keys(METRIC_DIMENSIONS)).toEqual(['service']);
  });

  describe('are emitted', () => {
    const emitted = new Map<string, string[]>();
    const dynamic: string[] = [];
    beforeAll(() => {
      for (const { file, text } of [...sources('lambdas'), ...sources('app')]) {
        if (file === 'core/metric-names.ts') continue;
        const found = emittedNames(text);
        for (const name of found.names) emitted.set(name, [...(emitted.get(name) ?? []), file]);
        dynamic.push(...found.dynamic.map((d) => `${file}: addMetric(${d}, ...)`));
      }
    });

    it('by handlers that name them with a literal or a Metric member, never a computed name', () => {
      expect(dynamic).toEqual([]);
    });

    it('only under the names listed in core/metric-names.ts', () => {
      expect([...emitted.keys()].filter((n) => !names.includes(n as never))).toEqual([]);
    });

    it.each(names.filter((n) => !PENDING_EMISSION.has(n)))(
      '%s is passed to addMetric in lambdas/ or app/',
      (name) => {
        expect(emitted.get(name), `no addMetric(${name}) in lambdas/ or app/`).toBeDefined();
      },
    );

    it.each([...PENDING_EMISSION])(
      '%s is pending (remove it from PENDING_EMISSION once emitted)',
      (name) => {
        expect(
          emitted.get(name),
          `${name} is emitted now: remove it from PENDING_EMISSION`,
        ).toBeUndefined();
      },
    );
  });

  it('the check finds names in calls, and refuses computed ones', () => {
    const computed = ['`Task_', '{outcome}`'].join('$');
    const src = [
      "metrics.addMetric('AwsRequests', MetricUnit.Count, total);",
      'metrics.addMetric(Metric.TaskFailed, MetricUnit.Count, 1);',
      'deps.metrics?.addMetric(ok ? Metric.RunSucceeded : Metric.RunFailed, "Count", 1);',
      `metrics.addMetric(${computed}, MetricUnit.Count, 1);`,
      'metrics.addMetric(name, MetricUnit.Count, 1);',
      "// metrics.addMetric('Commented', MetricUnit.Count, 1);",
    ].join('\n');
    expect(emittedNames(src)).toEqual({
      names: ['AwsRequests', 'TaskFailed', 'RunSucceeded', 'RunFailed'],
      dynamic: [computed, 'name'],
    });
  });
});

describe('dashboard', () => {
  it('has the widgets of DESIGN.md section 12', () => {
    const titles = widgets.map((w) => w.properties.title);
    expect(titles).toEqual(
      expect.arrayContaining([
        'Alarms',
        'Runs by outcome',
        'Task attempts by outcome',
        'Task lag from queued to started (ms)',
        'Task queue: depth and age of the oldest message',
        'Dead-letter queues: messages',
        'Function errors',
        'Function throttles',
        'Function duration (p99, ms)',
        'DynamoDB throttle events (table and indexes)',
        'DynamoDB throttled requests by operation',
        'AWS requests per task',
        'Reaper repairs',
      ]),
    );
  });

  it('graphs only Airless metrics that are listed, with no dimension but the service', () => {
    const airless = lines.metrics.filter((m) => m.namespace === METRIC_NAMESPACE);
    expect(airless.length).toBeGreaterThan(0);
    for (const m of airless) {
      expect(Object.values(Metric), `${m.name} in "${m.widget}"`).toContain(m.name);
      expect(m.dimensions, `${m.name} in "${m.widget}"`).toEqual(METRIC_DIMENSIONS);
    }
  });

  it('graphs every metric the handlers emit', () => {
    const shown = new Set(
      lines.metrics.filter((m) => m.namespace === METRIC_NAMESPACE).map((m) => m.name),
    );
    expect(Object.values(Metric).filter((n) => !shown.has(n))).toEqual([]);
  });

  it('graphs only known AWS service metrics, each of a resource of this stack', () => {
    const s = stack.scheduler;
    const ours = {
      QueueName: [
        s.taskQueue,
        s.taskDeadLetterQueue,
        s.schedules.deadLetterQueue,
        s.advanceFailureQueue,
        s.retryTimers.deadLetterQueue,
        s.fargateTaskQueue,
        s.fargateTaskDeadLetterQueue,
      ].map((q) => `GETATT(${id(q as IConstruct)}.QueueName)`),
      FunctionName: Object.values(s.functions).map((f) => `REF(${id(f)})`),
      TableName: [`REF(${id(s.table)})`],
    } as Record<string, string[]>;
    for (const m of lines.metrics.filter((l) => l.namespace !== METRIC_NAMESPACE)) {
      const service = SERVICE_METRICS[m.namespace];
      expect(service, `namespace ${m.namespace} in "${m.widget}"`).toBeDefined();
      expect(service?.names, `${m.namespace} ${m.name}`).toContain(m.name);
      const resource = service?.resource ?? '';
      expect(ours[resource], `${m.name} in "${m.widget}"`).toContain(m.dimensions[resource]);
    }
  });

  it('expressions use only metrics of their own graph', () => {
    for (const w of widgets) {
      const ids = new Set(
        (w.properties.metrics ?? []).flatMap((line) => {
          const last = line[line.length - 1] as { id?: string } | undefined;
          return typeof last === 'object' && last?.id ? [last.id] : [];
        }),
      );
      for (const e of linesOf([w]).expressions) {
        const refs = e.expression.match(/\b[a-z][A-Za-z0-9_]*\b/g) ?? [];
        for (const ref of refs.filter((r) => !['FILL', 'IF'].includes(r.toUpperCase()))) {
          expect(ids, `${ref} in "${e.expression}"`).toContain(ref);
        }
      }
    }
  });

  it('shows the task queue, its age of oldest message, and every dead-letter queue', () => {
    const s = stack.scheduler;
    const queue = (w: string) =>
      lines.metrics
        .filter((m) => m.widget.startsWith(w))
        .map((m) => [m.name, m.dimensions.QueueName]);
    const task = `GETATT(${id(s.taskQueue)}.QueueName)`;
    expect(queue('Task queue')).toEqual(
      expect.arrayContaining([
        ['ApproximateNumberOfMessagesVisible', task],
        ['ApproximateAgeOfOldestMessage', task],
      ]),
    );
    // The Fargate workers' queue beside the Lambda workers' one.
    const fargate = `GETATT(${id(s.fargateTaskQueue as IConstruct)}.QueueName)`;
    expect(queue('Task queue')).toEqual(
      expect.arrayContaining([
        ['ApproximateNumberOfMessagesVisible', fargate],
        ['ApproximateNumberOfMessagesNotVisible', fargate],
      ]),
    );
    expect(queue('Dead-letter queues').sort()).toEqual(
      [
        s.taskDeadLetterQueue,
        s.schedules.deadLetterQueue,
        s.advanceFailureQueue,
        s.retryTimers.deadLetterQueue,
        s.fargateTaskDeadLetterQueue as IConstruct,
      ]
        .map((q) => ['ApproximateNumberOfMessagesVisible', `GETATT(${id(q)}.QueueName)`])
        .sort(),
    );
  });

  it.each([
    ['Function errors', 'Errors'],
    ['Function throttles', 'Throttles'],
    ['Function duration (p99, ms)', 'Duration'],
  ])('"%s" has a line for each function', (title, metric) => {
    const shown = lines.metrics
      .filter((m) => m.widget === title && m.name === metric)
      .map((m) => m.dimensions.FunctionName);
    expect(shown.sort()).toEqual(
      Object.values(stack.scheduler.functions)
        .map((f) => `REF(${id(f)})`)
        .sort(),
    );
  });

  it('divides the AWS requests by the tasks finished', () => {
    const w = lines.expressions.filter((e) => e.widget === 'AWS requests per task');
    const byId = new Map(
      lines.metrics
        .filter((m) => m.widget === 'AWS requests per task')
        .map((m) => [m.options.id as string, m.name]),
    );
    expect(byId.get('requests')).toBe(Metric.AwsRequests);
    expect(byId.get('succeeded')).toBe(Metric.TaskSucceeded);
    expect(byId.get('failed')).toBe(Metric.TaskFailed);
    expect(w.map((e) => e.expression)).toEqual(
      expect.arrayContaining([
        'IF(finished > 0, requests / finished, 0)',
        'FILL(succeeded, 0) + FILL(failed, 0)',
      ]),
    );
  });

  it('shows the state of every alarm', () => {
    const alarms = widgets.find((w) => w.type === 'alarm')?.properties.alarms ?? [];
    expect(alarms.sort()).toEqual(
      stack.scheduler.alarms.alarms.map((a) => `GETATT(${id(a)}.Arn)`).sort(),
    );
  });

  it('is named in the outputs', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(outputs.DashboardName?.Value).toEqual({ Ref: id(stack.scheduler.dashboard.dashboard) });
  });
});
