import { readdirSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  dagJsonSchemaText,
  ID_PATTERN,
  jsonPath,
  MAX_DAG_BYTES,
  MAX_TASKS,
  OperatorSchemas,
  utf8ByteLength,
  validateDag,
  validateDagText,
} from '../../core/dag/index.ts';

const noop = (taskId: string, dependsOn: string[] = [], extra: object = {}) => ({
  taskId,
  operator: 'noop',
  dependsOn,
  ...extra,
});
const dag = (tasks: unknown[], extra: object = {}) => ({ dagId: 'd', tasks, ...extra });

function issues(value: unknown) {
  const r = validateDag(value);
  if (r.ok) throw new Error('expected the DAG to be invalid');
  return r.issues;
}

describe('validateDag: shape', () => {
  it('accepts every example DAG', () => {
    for (const f of readdirSync('examples/dags')) {
      const r = validateDagText(readFileSync(`examples/dags/${f}`, 'utf8'));
      expect(r.ok ? [] : r.issues, f).toEqual([]);
    }
  });

  it('fills defaults: task settings from the task, then the DAG defaults, then ours', () => {
    const r = validateDag(
      dag([noop('a'), noop('b', ['a'], { retries: 5, timeoutSeconds: 60 })], {
        defaults: { retries: 2, retryBackoff: 'exponential' },
      }),
    );
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    const [a, b] = r.dag.tasks;
    expect(a).toMatchObject({
      retries: 2,
      retryBackoff: 'exponential',
      retryDelaySeconds: 60,
      maxRetryDelaySeconds: 3600,
      timeoutSeconds: 840,
      executor: 'lambda',
      triggerRule: 'all_success',
      config: {},
      dependsOn: [],
    });
    expect(b).toMatchObject({ retries: 5, timeoutSeconds: 60 });
    expect(r.dag.maxActiveRuns).toBe(16);
    expect(r.dag.schedule).toBeUndefined();
    expect(r.graph.downstream.get('a')).toEqual(['b']);
  });

  it('defaults the schedule time zone to UTC and catchup to false', () => {
    const r = validateDag(dag([noop('a')], { schedule: { cron: '@daily' } }));
    expect(r.ok && r.dag.schedule).toEqual({ cron: '@daily', timezone: 'UTC', catchup: false });
  });

  it('names the field of each shape error with a JSON path', () => {
    expect(
      issues({
        dagId: 'bad id!',
        maxActiveRuns: 0,
        tasks: [noop('ok', [], { triggerRule: 'sometimes' }), { operator: 'noop' }],
      }),
    ).toEqual([
      { path: '$.dagId', message: 'dagId must match ^(?!\\.+$)[A-Za-z0-9_.-]{1,128}$' },
      { path: '$.maxActiveRuns', message: expect.stringContaining('>=1') },
      { path: '$.tasks[0].triggerRule', message: expect.stringContaining('all_success') },
      { path: '$.tasks[1].taskId', message: 'required (string)' },
    ]);
  });

  it('refuses ids made only of dots, which are path segments in S3 keys and URLs', () => {
    const onlyDots = (what: string) =>
      `${what} must not be made only of dots ("." and ".." are path segments)`;
    for (const bad of ['.', '..', '...', '.'.repeat(128)]) {
      expect(issues(dag([noop(bad)], { dagId: bad }))).toEqual([
        { path: '$.dagId', message: onlyDots('dagId') },
        { path: '$.tasks[0].taskId', message: onlyDots('taskId') },
      ]);
    }
    // Dots beside other characters are fine: versions, file-like names.
    for (const good of ['.a', 'a.', '..a', 'v1.2', '_..', '-', 'a..b']) {
      expect(validateDag(dag([noop(good)], { dagId: good })).ok, good).toBe(true);
    }
    expect(ID_PATTERN.test('..')).toBe(false);
    expect(ID_PATTERN.test('a'.repeat(129))).toBe(false);
  });

  it('stores the canonical time zone name, and names the field when there is none', () => {
    const zone = (timezone: string) => {
      const r = validateDag(dag([noop('a')], { schedule: { cron: '@daily', timezone } }));
      return r.ok ? r.dag.schedule?.timezone : r.issues;
    };
    expect(zone('utc')).toBe('UTC');
    expect(zone('Etc/UTC')).toBe('UTC');
    expect(zone('america/new_york')).toBe('America/New_York');
    expect(zone('Europe/London')).toBe('Europe/London');
    expect(zone('Nowhere/City')).toEqual([
      {
        path: '$.schedule.timezone',
        message: 'unknown time zone "Nowhere/City" (use an IANA name)',
      },
    ]);
    expect(zone('EST')).toEqual([
      { path: '$.schedule.timezone', message: expect.stringContaining('legacy') },
    ]);
  });

  it('refuses unknown fields, so typos are not silently ignored', () => {
    expect(issues(dag([{ taskId: 'a', operator: 'noop', dependOn: ['b'] }]))).toEqual([
      { path: '$.tasks[0].dependOn', message: 'unknown field' },
    ]);
  });

  it('refuses an empty DAG and more than 10,000 tasks', () => {
    expect(issues(dag([]))).toEqual([
      { path: '$.tasks', message: 'a DAG needs at least one task' },
    ]);
    const many = Array.from({ length: MAX_TASKS + 1 }, (_, i) => noop(`t${i}`));
    expect(issues(dag(many))).toEqual([
      { path: '$.tasks', message: 'a DAG may have at most 10000 tasks' },
    ]);
    expect(validateDag(dag(many.slice(0, MAX_TASKS))).ok).toBe(true);
  });
});

describe('validateDag: executors', () => {
  it('refuses a lambda task that cannot fit one invocation, naming fargate, wherever the timeout comes from', () => {
    expect(issues(dag([noop('a', [], { timeoutSeconds: 3600 })]))).toEqual([
      {
        path: '$.tasks[0].timeoutSeconds',
        message: expect.stringMatching(/3600 s does not fit one Lambda.*"executor": "fargate"/),
      },
    ]);
    // From the defaults, and with lambda named explicitly.
    expect(
      issues(
        dag([noop('a'), noop('b', [], { executor: 'lambda' })], {
          defaults: { timeoutSeconds: 841 },
        }),
      ).map((i) => i.path),
    ).toEqual(['$.defaults.timeoutSeconds', '$.defaults.timeoutSeconds']);
  });

  it('accepts the limit itself, and any timeout on fargate (from the task or the defaults)', () => {
    expect(validateDag(dag([noop('a', [], { timeoutSeconds: 840 })])).ok).toBe(true);
    const r = validateDag(
      dag([noop('a', [], { timeoutSeconds: 86_400 }), noop('b', [], { executor: 'lambda' })], {
        defaults: { executor: 'fargate' },
      }),
    );
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    expect(r.dag.tasks.map((t) => [t.executor, t.timeoutSeconds])).toEqual([
      ['fargate', 86_400],
      ['lambda', 840],
    ]);
  });

  it('names a bad executor', () => {
    expect(issues(dag([noop('a', [], { executor: 'ec2' })])).map((i) => i.path)).toEqual([
      '$.tasks[0].executor',
    ]);
  });

  it('reads a stored version as it was registered, before the Lambda limit existed', () => {
    const old = JSON.stringify(dag([noop('a', [], { timeoutSeconds: 900 })]));
    expect(validateDagText(old).ok).toBe(false);
    expect(validateDagText(old, { stored: true }).ok).toBe(true);
  });
});

describe('validateDag: operator config', () => {
  it('checks each built-in operator config against its own schema', () => {
    expect(
      issues(
        dag([
          { taskId: 'h', operator: 'http', config: { url: 'ftp://x', method: 'GET' } },
          { taskId: 'l', operator: 'lambda', config: {} },
          { taskId: 's', operator: 'stepfunctions', config: { stateMachineArn: 'nope' } },
          {
            taskId: 'e',
            operator: 'ecs',
            config: { cluster: 'c', taskDefinition: 't', subnets: [] },
          },
          { taskId: 'n', operator: 'noop', config: { failAttempts: 1.5 } },
        ]),
      ),
    ).toEqual([
      { path: '$.tasks[0].config.url', message: 'must be an absolute http(s) URL' },
      { path: '$.tasks[1].config.functionName', message: 'required (string)' },
      { path: '$.tasks[2].config.stateMachineArn', message: expect.stringContaining('ARN') },
      { path: '$.tasks[3].config.subnets', message: expect.stringContaining('>=1') },
      { path: '$.tasks[4].config.failAttempts', message: expect.stringContaining('int') },
    ]);
  });

  it('leaves the network to the deployer: no DAG field opens one, and http URLs validate', () => {
    const http = (config: object) => dag([{ taskId: 'h', operator: 'http', config }]);
    expect(issues(http({ url: 'https://127.0.0.1:8080/', allowPrivateNetwork: true }))).toEqual([
      { path: '$.tasks[0].config.allowPrivateNetwork', message: 'unknown field' },
    ]);
    // Whether plain http may go out depends on the deployment (httpAllowedNetworks): checked at
    // run time by the operator.
    expect(validateDag(http({ url: 'http://10.0.0.7/hook' })).ok).toBe(true);
    expect(issues(http({ url: 'ftp://example.com/' }))).toEqual([
      { path: '$.tasks[0].config.url', message: 'must be an absolute http(s) URL' },
    ]);
  });

  it('names the unknown operator and the known ones', () => {
    expect(issues(dag([{ taskId: 'x', operator: 'spark' }]))).toEqual([
      {
        path: '$.tasks[0].operator',
        message:
          'missing or unknown operator; expected one of: noop, branch, http, lambda, stepfunctions, ecs',
      },
    ]);
  });

  it('accepts custom operators with their own config schema', () => {
    const operators = OperatorSchemas.builtIn().register(
      'spark_submit',
      z.strictObject({ jar: z.string().endsWith('.jar') }),
    );
    const custom = (config: object) => dag([{ taskId: 's', operator: 'spark_submit', config }]);
    expect(validateDag(custom({ jar: 'job.jar' }), { operators }).ok).toBe(true);
    const bad = validateDag(custom({ jar: 'job.py' }), { operators });
    expect(bad.ok ? [] : bad.issues.map((i) => i.path)).toEqual(['$.tasks[0].config.jar']);
    expect(validateDag(custom({ jar: 'job.jar' })).ok).toBe(false);
  });

  it('refuses bad operator names and registering one twice', () => {
    expect(() => OperatorSchemas.builtIn().register('Bad Name', z.object({}))).toThrow(
      /must match/,
    );
    expect(() => OperatorSchemas.builtIn().register('noop', z.object({}))).toThrow(/already/);
  });
});

describe('validateDag: references and cycles', () => {
  it('reports duplicate ids, unknown dependencies and self-dependencies by path', () => {
    expect(issues(dag([noop('a', ['ghost', 'a']), noop('a')]))).toEqual([
      { path: '$.tasks[1].taskId', message: 'duplicate task id "a" (first defined at $.tasks[0])' },
      { path: '$.tasks[0].dependsOn[0]', message: 'unknown task "ghost" in dependsOn of "a"' },
      { path: '$.tasks[0].dependsOn[1]', message: 'task "a" depends on itself: a -> a' },
    ]);
  });

  it('prints a cycle in run order, upstream first', () => {
    // b runs after a, c after b, and a after c.
    expect(
      issues(dag([noop('a', ['c']), noop('b', ['a']), noop('c', ['b']), noop('d', ['c'])])),
    ).toEqual([{ path: '$.tasks[0].dependsOn[0]', message: 'dependency cycle: a -> b -> c -> a' }]);
  });

  it('reports two separate cycles, and finds cycles in a 10,000-task chain without recursion', () => {
    const two = issues(
      dag([noop('a', ['b']), noop('b', ['a']), noop('x', ['y']), noop('y', ['x'])]),
    );
    expect(two.map((i) => i.message)).toEqual([
      'dependency cycle: a -> b -> a',
      'dependency cycle: x -> y -> x',
    ]);
    const chain = Array.from({ length: MAX_TASKS }, (_, i) =>
      noop(`t${i}`, i > 0 ? [`t${i - 1}`] : ['t9999']),
    );
    expect(issues(dag(chain))).toHaveLength(1);
  });
});

describe('validateDagText', () => {
  it('refuses a document over 1 MiB before parsing it', () => {
    // Not JSON at all: if it were parsed first, the error would be a JSON error.
    const big = `{${' '.repeat(MAX_DAG_BYTES)}`;
    expect(validateDagText(big)).toEqual({
      ok: false,
      issues: [{ path: '$', message: expect.stringContaining('1048576-byte limit') }],
    });
  });

  it('counts bytes, not characters', () => {
    expect(utf8ByteLength('aé€😀')).toBe(1 + 2 + 3 + 4);
    const justOver = 'é'.repeat(MAX_DAG_BYTES / 2 + 1); // 2 bytes each
    expect(utf8ByteLength(justOver)).toBe(MAX_DAG_BYTES + 2);
    expect(validateDagText(justOver).ok).toBe(false);
  });

  it('reports malformed JSON on one line', () => {
    const r = validateDagText('{ "dagId": "x",\n "tasks": [ }');
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.issues).toHaveLength(1);
      expect(r.issues[0]?.path).toBe('$');
      expect(r.issues[0]?.message).toMatch(/^invalid JSON: [^\n]+$/);
    }
  });
});

describe('jsonPath', () => {
  it('renders zod paths as JSON paths', () => {
    expect(jsonPath([])).toBe('$');
    expect(jsonPath(['tasks', 3, 'config', 'url'])).toBe('$.tasks[3].config.url');
    expect(jsonPath(['params', 'my key'])).toBe('$.params["my key"]');
  });
});

describe('schema/dag.schema.json', () => {
  it('is what the zod schema generates (run `npm run schema` after changing the schema)', () => {
    expect(readFileSync('schema/dag.schema.json', 'utf8')).toBe(dagJsonSchemaText());
  });

  it('describes each built-in operator config', () => {
    const schema = JSON.parse(dagJsonSchemaText());
    const variants = schema.properties.tasks.items.oneOf as {
      properties: { operator: { const: string } };
    }[];
    expect(variants.map((v) => v.properties.operator.const)).toEqual([
      'noop',
      'branch',
      'http',
      'lambda',
      'stepfunctions',
      'ecs',
    ]);
  });
});

/**
 * Random task graphs: n tasks, each depending on any others (so cycles happen), sometimes on a
 * task that does not exist. The oracle is Kahn's algorithm, written here independently.
 */
const randomGraph = fc.integer({ min: 1, max: 12 }).chain((n) =>
  fc.record({
    deps: fc.array(fc.uniqueArray(fc.integer({ min: 0, max: n - 1 }), { maxLength: 3 }), {
      minLength: n,
      maxLength: n,
    }),
    unknown: fc.option(fc.integer({ min: 0, max: n - 1 }), { nil: undefined }),
  }),
);

function acyclic(deps: number[][]): boolean {
  const indegree = deps.map((d) => d.length);
  const ready = indegree.flatMap((d, i) => (d === 0 ? [i] : []));
  let seen = 0;
  while (ready.length > 0) {
    const t = ready.pop() as number;
    seen++;
    deps.forEach((d, i) => {
      if (d.includes(t) && --(indegree[i] as number) === 0) ready.push(i);
    });
  }
  return seen === deps.length;
}

describe('validateDag: properties', () => {
  it('a random DAG validates exactly when it is acyclic and well-referenced', () => {
    fc.assert(
      fc.property(randomGraph, ({ deps, unknown }) => {
        const tasks = deps.map((d, i) =>
          noop(`t${i}`, [...d.map((j) => `t${j}`), ...(unknown === i ? ['missing'] : [])]),
        );
        const r = validateDag(dag(tasks));
        expect(r.ok).toBe(acyclic(deps) && unknown === undefined);
      }),
    );
  });

  it('every reported cycle is a real cycle of the graph', () => {
    fc.assert(
      fc.property(randomGraph, ({ deps }) => {
        const r = validateDag(
          dag(
            deps.map((d, i) =>
              noop(
                `t${i}`,
                d.map((j) => `t${j}`),
              ),
            ),
          ),
        );
        for (const issue of r.ok ? [] : r.issues) {
          const m = /^dependency cycle: (.*)$/.exec(issue.message);
          if (!m) continue;
          const path = (m[1] as string).split(' -> ').map((t) => Number(t.slice(1)));
          expect(path[0]).toBe(path.at(-1));
          for (let k = 0; k + 1 < path.length; k++) {
            // In run order, each task runs before the next, which depends on it.
            expect(deps[path[k + 1] as number]).toContain(path[k]);
          }
        }
      }),
    );
  });
});
