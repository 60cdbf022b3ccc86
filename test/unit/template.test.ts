import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { validateDag } from '../../core/dag/validate.ts';
import {
  dateStamp,
  findPlaceholders,
  MASK,
  maskSecrets,
  parseTemplate,
  referencedTasks,
  render,
  secretValues,
  TemplateError,
} from '../../core/template/index.ts';

const scope = {
  conf: {
    n: 3,
    day: '2026-03-09',
    flags: [true, false],
    nested: { list: [{ id: 'a' }, { id: 'b' }] },
  },
  params: { region: 'eu', limit: null },
  dagId: 'd',
  runId: 'r1',
  taskId: 't',
  attempt: 2,
  logicalDate: '2026-03-09T00:00:00.000Z',
  ds: '2026-03-09',
  tasks: { list: { output: { files: ['x', 'y'] } }, 'a.b': { output: 7 } },
};

describe('render', () => {
  it('keeps the JSON type of a string that is exactly one placeholder', () => {
    expect(render('{{ conf.n }}', scope)).toBe(3);
    expect(render('{{conf.flags}}', scope)).toEqual([true, false]);
    expect(render('  {{ conf.n }}', scope)).toBe('  3');
    expect(render('{{ params.limit }}', scope)).toBeNull();
    expect(render('{{ tasks.list.output }}', scope)).toEqual({ files: ['x', 'y'] });
  });

  it('replaces each placeholder by its text inside a longer string', () => {
    expect(render('s3://b/{{ ds }}/{{ conf.n }}.csv', scope)).toBe('s3://b/2026-03-09/3.csv');
    expect(render('{{ conf.flags }}!', scope)).toBe('[true,false]!');
    expect(render('{{ params.limit }}-{{ attempt }}', scope)).toBe('null-2');
  });

  it('follows nested names and list indexes, at any depth of the config', () => {
    expect(
      render(
        { a: ['{{ conf.nested.list[1].id }}', { b: '{{ tasks.list.output.files[0] }}' }] },
        scope,
      ),
    ).toEqual({
      a: ['b', { b: 'x' }],
    });
  });

  it('takes a task id with dots as the longest id that matches', () => {
    expect(render('{{ tasks.a.b.output }}', scope)).toBe(7);
  });

  it('prefers the id followed by output when ids overlap (tasks a and a.output)', () => {
    const overlap = { tasks: { a: { output: 1 }, 'a.output': { output: 2 } } };
    expect(render('{{ tasks.a.output }}', overlap)).toBe(1);
    expect(render('{{ tasks.a.output.output }}', overlap)).toBe(2);
    expect([...referencedTasks({ x: '{{ tasks.a.output }}' }, new Set(['a', 'a.output']))]).toEqual(
      ['a'],
    );
  });

  it('fails with a message naming the path when it does not resolve', () => {
    expect(() => render('{{ conf.missing }}', scope)).toThrow(
      '{{ conf.missing }} does not resolve: no "missing"',
    );
    expect(() => render('{{ conf.flags[5] }}', scope)).toThrow('no item [5]');
    expect(() => render('x {{ conf.n.deeper }}', scope)).toThrow('{{ conf.n.deeper }}');
    expect(() => render('{{ tasks.other.output }}', scope)).toThrow(TemplateError);
  });

  it('reads \\{{ as a literal {{, and leaves strings without placeholders alone', () => {
    expect(render('\\{{ conf.n }}', scope)).toBe('{{ conf.n }}');
    expect(render('a } b { c }}', scope)).toBe('a } b { c }}');
  });

  it('refuses bad syntax: unclosed, empty, and anything that is not a path', () => {
    for (const bad of [
      '{{ conf.n',
      '{{ }}',
      '{{ conf.n + 1 }}',
      '{{ conf["n"] }}',
      '{{ f() }}',
      '{{ [0] }}',
      '{{ a..b }}',
    ]) {
      expect(() => parseTemplate(bad), bad).toThrow(TemplateError);
    }
  });

  it('renders any JSON value without placeholders to itself (property)', () => {
    const noBraces = fc.string().filter((s) => !s.includes('{{'));
    const json = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: 'small' },
        noBraces,
        fc.integer(),
        fc.boolean(),
        fc.constant(null),
        fc.array(tie('value'), { maxLength: 4 }),
        fc.dictionary(noBraces, tie('value'), { maxKeys: 4 }),
      ),
    })).value;
    fc.assert(
      fc.property(json, (v) => {
        expect(render(v, scope)).toEqual(v);
      }),
    );
  });

  it('gives back any value put in the scope, by its path, with its type (property)', () => {
    const name = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_-]{0,8}$/);
    const leaf = fc.oneof(
      fc.string(),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.array(fc.integer()),
    );
    fc.assert(
      fc.property(
        name,
        name,
        leaf,
        fc.string({ minLength: 1 }).filter((s) => !/[{}\\]/.test(s)),
        (a, b, value, text) => {
          const conf = { [a]: { [b]: value } };
          expect(render(`{{ conf.${a}.${b} }}`, { conf })).toEqual(value);
          const asText = typeof value === 'string' ? value : JSON.stringify(value);
          expect(render(`${text}{{ conf.${a}.${b} }}${text}`, { conf })).toBe(
            `${text}${asText}${text}`,
          );
        },
      ),
    );
  });
});

describe('masking', () => {
  it('masks values under secret-looking keys at any depth, and those values anywhere else', () => {
    const conf = { db: { password: 'hunter22' }, apiKey: 'k-12345', user: 'ann' };
    const secrets = secretValues({ conf });
    const logged = maskSecrets(
      {
        url: 'https://x/?u=ann&p=hunter22',
        headers: { Authorization: 'Bearer t' },
        body: { token: 5 },
        key: 'k-12345',
      },
      secrets,
    );
    expect(logged).toEqual({
      url: `https://x/?u=ann&p=${MASK}`,
      headers: { Authorization: MASK },
      body: { token: MASK },
      key: MASK,
    });
    expect(JSON.stringify(logged)).not.toContain('hunter22');
    // A secret that holds a shorter one is masked whole, whatever the order they were found in.
    expect(maskSecrets('k=abcdefgh', new Set(['abcd', 'abcdefgh']))).toBe(`k=${MASK}`);
  });
});

describe('dateStamp', () => {
  it('is the date in the DAG time zone', () => {
    const at = new Date('2026-03-09T03:00:00Z');
    expect(dateStamp(at, 'UTC')).toBe('2026-03-09');
    expect(dateStamp(at, 'America/New_York')).toBe('2026-03-08');
  });
});

describe('registration', () => {
  const dag = (tasks: object[]) => ({ dagId: 'tpl', tasks });
  const problems = (tasks: object[]) => {
    const r = validateDag(dag(tasks));
    return r.ok ? [] : r.issues;
  };

  it('accepts templates in any operator field, the rendered config being checked when it runs', () => {
    expect(
      problems([
        { taskId: 'list', operator: 'noop', config: { output: { n: 2 } } },
        {
          taskId: 'call',
          operator: 'http',
          dependsOn: ['list'],
          config: {
            url: '{{ params.base }}/{{ ds }}',
            timeoutSeconds: '{{ tasks.list.output.n }}',
          },
        },
      ]),
    ).toEqual([]);
  });

  it('refuses a config that is itself a placeholder: it is written as an object', () => {
    expect(problems([{ taskId: 'c', operator: 'http', config: '{{ conf.c }}' }])).toEqual([
      { path: '$.tasks[0].config', message: expect.any(String) },
    ]);
  });

  it('still checks what is not templated, and names the field', () => {
    expect(
      problems([
        { taskId: 'call', operator: 'http', config: { url: '{{ conf.u }}', method: 'FETCH' } },
      ]),
    ).toEqual([{ path: '$.tasks[0].config.method', message: expect.stringContaining('GET') }]);
  });

  it('refuses syntax errors, unknown names, and outputs of tasks that are not upstream, with the JSON path', () => {
    expect(
      problems([
        { taskId: 'a', operator: 'noop' },
        { taskId: 'b', operator: 'noop', dependsOn: ['a'] },
        {
          taskId: 'c',
          operator: 'noop',
          dependsOn: ['a'],
          config: {
            output: {
              bad: 'x {{ conf.n',
              name: '{{ env.HOME }}',
              side: ['{{ tasks.b.output }}'],
              self: '{{ tasks.c.output }}',
              nope: '{{ tasks.zz.output }}',
              field: '{{ tasks.a.status }}',
              mapped: '{{ item }}',
              ok: '{{ tasks.a.output.x }} {{ conf.n }} {{ ds }}',
            },
          },
        },
      ]).map((i) => i.path),
    ).toEqual([
      '$.tasks[2].config.output.bad',
      '$.tasks[2].config.output.name',
      '$.tasks[2].config.output.side[0]',
      '$.tasks[2].config.output.self',
      '$.tasks[2].config.output.nope',
      '$.tasks[2].config.output.field',
      '$.tasks[2].config.output.mapped',
    ]);
  });

  it('reads an upstream task two steps away as upstream', () => {
    expect(
      problems([
        { taskId: 'a', operator: 'noop' },
        { taskId: 'b', operator: 'noop', dependsOn: ['a'] },
        {
          taskId: 'c',
          operator: 'noop',
          dependsOn: ['b'],
          config: { output: '{{ tasks.a.output }}' },
        },
      ]),
    ).toEqual([]);
  });

  it('finds the placeholders and the tasks a config reads', () => {
    const config = { a: ['{{ tasks.x.y.output }}', 'k {{ conf.n }}'] };
    expect(findPlaceholders(config, '$').placeholders.map((p) => p.at)).toEqual([
      '$.a[0]',
      '$.a[1]',
    ]);
    expect([...referencedTasks(config, new Set(['x', 'x.y']))]).toEqual(['x.y']);
  });
});
