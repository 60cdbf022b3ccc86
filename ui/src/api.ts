// The REST API (DESIGN.md section 5), called with relative URLs: the page is served by the
// same proxy that signs and forwards /v1/* (cli/ui.ts).

export interface DagTask {
  taskId: string;
  operator: string;
  dependsOn: string[];
  triggerRule: string;
  description?: string;
}

export interface Dag {
  dagId: string;
  latestVersion: number;
  paused: boolean;
  description: string | null;
  owner: string | null;
  schedule: { cron: string; timezone: string } | null;
  nextRunTimes: string[];
  updatedAt: string;
  /** Only in the answer for one DAG. */
  tasks?: DagTask[];
}

export interface RunSummary {
  runId: string;
  status: string;
  logicalDate: string;
  startTime: string | null;
  endTime: string | null;
}

export interface TaskInstance {
  taskId: string;
  /** An instance of a mapped task (DESIGN.md section 10), listed after its task. */
  mapIndex?: number;
  /** On a mapped task: how many instances it expanded into. */
  mapLength?: number;
  status: string;
  attempt: number;
  startTime: string | null;
  endTime: string | null;
  error?: string;
}

export interface Run extends RunSummary {
  dagId: string;
  dagVersion: number;
  conf: Record<string, unknown>;
  error?: string;
  tasks: TaskInstance[];
}

export interface ImportError {
  key: string;
  dagId?: string;
  errors: { path: string; message: string }[];
  time: string;
}

/** A refusal of the API (or of the proxy), with its message in words. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const enc = encodeURIComponent;
export const dagPath = (dag: string) => `/v1/dags/${enc(dag)}`;
export const runPath = (dag: string, run: string) => `${dagPath(dag)}/runs/${enc(run)}`;
export const taskPath = (dag: string, run: string, task: string) =>
  `${runPath(dag, run)}/tasks/${enc(task)}`;

/** `{error, details?}`, or API Gateway's own `{message}`, as one sentence. */
function messageOf(status: number, text: string): string {
  let said = text.trim().slice(0, 300);
  try {
    const body = JSON.parse(text) as {
      error?: unknown;
      message?: unknown;
      details?: { path?: string; message?: string }[];
    };
    const main = typeof body.error === 'string' ? body.error : body.message;
    if (typeof main === 'string') said = main;
    if (Array.isArray(body.details) && body.details.length > 0) {
      said += `: ${body.details.map((d) => (d.path ? `${d.path}: ${d.message}` : d.message)).join('; ')}`;
    }
  } catch {
    // Not JSON: keep the text.
  }
  return `${said || 'no message'} (HTTP ${status})`;
}

async function call(method: string, path: string, body?: unknown): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach the UI server: ${(e as Error).message}`);
  }
  if (!res.ok) throw new ApiError(res.status, messageOf(res.status, await res.text()));
  return res;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  return (await (await call(method, path, body)).json()) as T;
}

/** A text answer (a log); undefined when the API has none (404). */
export async function apiText(path: string): Promise<string | undefined> {
  try {
    return await (await call('GET', path)).text();
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return undefined;
    throw e;
  }
}

export const FINISHED_RUN = new Set(['success', 'failed', 'cancelled']);
