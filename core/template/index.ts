/**
 * Templates in task configs (DESIGN.md section 10): `{{ path }}` placeholders in strings, where a
 * path is dotted names with `[index]`, and nothing else: no code runs. A string that is exactly
 * one placeholder becomes the value itself, with its JSON type; otherwise each placeholder is
 * replaced by its text. `\{{` is a literal `{{`. Pure: the worker renders, registration checks.
 */

/** The names a path may start with; `item` and `mapIndex` only in a mapped task. */
export const TEMPLATE_ROOTS = [
  'conf',
  'params',
  'dagId',
  'runId',
  'taskId',
  'attempt',
  'logicalDate',
  'ds',
  'tasks',
  'item',
  'mapIndex',
] as const;

/** One step of a path: a name, or an index into a list. */
export type PathStep = string | number;

export interface Placeholder {
  /** The path as written, trimmed: `tasks.list.output.files[0]`. */
  readonly text: string;
  readonly steps: readonly PathStep[];
}

type Part = { readonly literal: string } | { readonly placeholder: Placeholder };

export class TemplateError extends Error {
  override name = 'TemplateError';
}

const NAME = /^[A-Za-z0-9_-]+/;

/** The steps of a path, or an error that says what is wrong with it. */
function parsePath(text: string): readonly PathStep[] {
  const steps: PathStep[] = [];
  let rest = text;
  let first = true;
  while (rest.length > 0) {
    if (rest.startsWith('[')) {
      const m = /^\[(\d{1,9})\]/.exec(rest);
      if (!m || first)
        throw new TemplateError(`"${text}" is not a path: an index is [digits] after a name`);
      steps.push(Number(m[1]));
      rest = rest.slice(m[0].length);
      continue;
    }
    if (!first) {
      if (!rest.startsWith('.'))
        throw new TemplateError(`"${text}" is not a path: expected . or [ at "${rest}"`);
      rest = rest.slice(1);
    }
    const m = NAME.exec(rest);
    if (!m) throw new TemplateError(`"${text}" is not a path: names are letters, digits, _ and -`);
    steps.push(m[0]);
    rest = rest.slice(m[0].length);
    first = false;
  }
  if (steps.length === 0) throw new TemplateError('an empty placeholder {{ }}');
  return steps;
}

/** Splits a string into literal text and placeholders; throws TemplateError on bad syntax. */
export function parseTemplate(s: string): readonly Part[] {
  const parts: Part[] = [];
  let literal = '';
  let i = 0;
  while (i < s.length) {
    if (s.startsWith('\\{{', i)) {
      literal += '{{';
      i += 3;
      continue;
    }
    if (s.startsWith('{{', i)) {
      const end = s.indexOf('}}', i + 2);
      if (end < 0) throw new TemplateError(`"{{" at character ${i} has no closing "}}"`);
      const inner = s.slice(i + 2, end);
      if (inner.includes('{{'))
        throw new TemplateError(`"{{" at character ${i} has no closing "}}"`);
      const text = inner.trim();
      if (literal) parts.push({ literal });
      literal = '';
      parts.push({ placeholder: { text, steps: parsePath(text) } });
      i = end + 2;
      continue;
    }
    literal += s[i];
    i++;
  }
  if (literal || parts.length === 0) parts.push({ literal });
  return parts;
}

/** Whether a string holds a placeholder (or an escaped `{{`): cheap, before parsing. */
export function mayHoldTemplate(s: string): boolean {
  return s.includes('{{');
}

/** Every string in a JSON value, with its JSON path from `base`. */
function* strings(value: unknown, path: string): Generator<[string, string]> {
  if (typeof value === 'string') yield [path, value];
  else if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) yield* strings(value[i], `${path}[${i}]`);
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      yield* strings(
        v,
        /^[A-Za-z_$][\w$]*$/.test(k) ? `${path}.${k}` : `${path}[${JSON.stringify(k)}]`,
      );
    }
  }
}

export interface FoundPlaceholder extends Placeholder {
  /** The JSON path of the string that holds it. */
  readonly at: string;
}

/**
 * Every placeholder in a JSON value, with the JSON path of its string; and every syntax error,
 * the same way. For registration: it reports, it does not render.
 */
export function findPlaceholders(
  value: unknown,
  base: string,
): { placeholders: FoundPlaceholder[]; errors: { at: string; message: string }[] } {
  const placeholders: FoundPlaceholder[] = [];
  const errors: { at: string; message: string }[] = [];
  for (const [at, s] of strings(value, base)) {
    if (!mayHoldTemplate(s)) continue;
    try {
      for (const p of parseTemplate(s)) {
        if ('placeholder' in p) placeholders.push({ ...p.placeholder, at });
      }
    } catch (e) {
      if (!(e instanceof TemplateError)) throw e;
      errors.push({ at, message: e.message });
    }
  }
  return { placeholders, errors };
}

/** Whether a JSON value holds any placeholder. */
export function hasPlaceholders(value: unknown): boolean {
  for (const [, s] of strings(value, '$')) if (mayHoldTemplate(s)) return true;
  return false;
}

/**
 * The task id that a `tasks.…` path names, and how many of its names the id takes. Task ids may
 * hold dots, so `tasks.a.b.output` may name task `a.b`: the longest id followed by `output` is
 * taken, else the longest id at all (a path that then reads something else than the output).
 */
export function taskOfPath(
  steps: readonly PathStep[],
  isTask: (id: string) => boolean,
): { readonly id: string; readonly names: number } | undefined {
  const names = steps.slice(1);
  let longest: { id: string; names: number } | undefined;
  for (let n = names.length; n >= 1; n--) {
    const parts = names.slice(0, n);
    if (!parts.every((x) => typeof x === 'string')) continue;
    const id = parts.join('.');
    if (!isTask(id)) continue;
    if (names[n] === 'output') return { id, names: n };
    longest ??= { id, names: n };
  }
  return longest;
}

/**
 * What the steps lead to in `scope`, or a TemplateError naming the path. A `tasks.<id>` step
 * takes the task id as taskOfPath reads it, since a task id may hold dots.
 */
export function resolvePath(scope: Readonly<Record<string, unknown>>, p: Placeholder): unknown {
  let value: unknown = scope;
  const steps = [...p.steps];
  if (steps[0] === 'tasks' && scope.tasks && typeof scope.tasks === 'object') {
    const tasks = scope.tasks as Record<string, unknown>;
    const named = taskOfPath(steps, (id) => Object.hasOwn(tasks, id));
    if (named) {
      value = tasks[named.id];
      steps.splice(0, named.names + 1);
    }
  }
  for (const step of steps) {
    if (typeof step === 'number') {
      if (!Array.isArray(value) || step >= value.length) {
        throw new TemplateError(`{{ ${p.text} }} does not resolve: no item [${step}]`);
      }
      value = value[step];
    } else {
      if (
        !value ||
        typeof value !== 'object' ||
        Array.isArray(value) ||
        !Object.hasOwn(value, step)
      ) {
        throw new TemplateError(`{{ ${p.text} }} does not resolve: no "${step}"`);
      }
      value = (value as Record<string, unknown>)[step];
    }
  }
  if (value === undefined) throw new TemplateError(`{{ ${p.text} }} does not resolve`);
  return value;
}

function renderString(s: string, scope: Readonly<Record<string, unknown>>): unknown {
  if (!mayHoldTemplate(s)) return s;
  const parts = parseTemplate(s);
  const [only] = parts;
  // Exactly one placeholder: the value itself, with its JSON type.
  if (parts.length === 1 && only && 'placeholder' in only)
    return resolvePath(scope, only.placeholder);
  return parts
    .map((p) => {
      if ('literal' in p) return p.literal;
      const v = resolvePath(scope, p.placeholder);
      return typeof v === 'string' ? v : JSON.stringify(v);
    })
    .join('');
}

/** Renders every string of a JSON value against `scope`; throws TemplateError naming a path. */
export function render(value: unknown, scope: Readonly<Record<string, unknown>>): unknown {
  if (typeof value === 'string') return renderString(value, scope);
  if (Array.isArray(value)) return value.map((v) => render(v, scope));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, render(v, scope)]));
  }
  return value;
}

/** Keys whose values a log must not show, as Airflow's secrets masker reads them. */
const SECRET_KEY =
  /password|passwd|passphrase|token|secret|key|credential|authorization|cookie|private/i;
export const MASK = '***';

/**
 * The string values under secret-looking keys, at any depth of `value` (a run's `conf`, the DAG's
 * `params`): masked wherever they show up in a log, as Airflow's masker does. Values shorter
 * than 4 characters are left out, since masking them would mask half the log.
 */
export function secretValues(value: unknown, out: Set<string> = new Set()): Set<string> {
  if (Array.isArray(value)) for (const v of value) secretValues(v, out);
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (SECRET_KEY.test(k)) {
        for (const [, s] of strings(v, '$')) if (s.length >= 4) out.add(s);
        if (typeof v === 'number' && String(v).length >= 4) out.add(String(v));
      } else secretValues(v, out);
    }
  }
  return out;
}

/**
 * A copy of a JSON value for a log: the values of secret-looking keys masked at any depth, and
 * each of `secrets` masked wherever it shows up in a string.
 */
export function maskSecrets(value: unknown, secrets: ReadonlySet<string> = new Set()): unknown {
  if (typeof value === 'string') {
    let s = value;
    // Longest first: a secret that holds a shorter one is masked whole.
    for (const secret of [...secrets].sort((a, b) => b.length - a.length)) {
      s = s.split(secret).join(MASK);
    }
    return s;
  }
  if (typeof value === 'number' && secrets.has(String(value))) return MASK;
  if (Array.isArray(value)) return value.map((v) => maskSecrets(v, secrets));
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [
        k,
        SECRET_KEY.test(k) ? MASK : maskSecrets(v, secrets),
      ]),
    );
  }
  return value;
}

/** `ds`: the date of a logical date, `YYYY-MM-DD`, in a time zone (Airflow's `ds`). */
export function dateStamp(logicalDate: Date, timeZone: string): string {
  // en-CA writes dates as YYYY-MM-DD.
  return new Intl.DateTimeFormat('en-CA', {
    timeZone,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
  }).format(logicalDate);
}

/**
 * The task ids a config's placeholders read the outputs of, as taskOfPath reads each `tasks.…`
 * path (task ids may hold dots).
 */
export function referencedTasks(config: unknown, taskIds: ReadonlySet<string>): Set<string> {
  const out = new Set<string>();
  for (const p of findPlaceholders(config, '$').placeholders) {
    if (p.steps[0] !== 'tasks') continue;
    const named = taskOfPath(p.steps, (id) => taskIds.has(id));
    if (named) out.add(named.id);
  }
  return out;
}
