// What every deployment command shares: where it writes, the API it calls, and its errors.
import { InvalidArgumentError } from 'commander';
import { ApiClient, type ApiResponse } from './api-client.ts';
import { ConfigError, credentialsFor, resolveTarget, type Target } from './config.ts';
import { DEFAULT_WIDTH, type Style, useColor } from './format.ts';

/** Where the CLI writes; tests pass their own. */
export interface Io {
  /** A line on stdout. */
  out(line: string): void;
  /** A line on stderr. */
  err(line: string): void;
  /** Text on stdout as it is (a log). */
  write(text: string): void;
  /** Text on stderr as it is (a progress line redrawn in place). */
  writeErr(text: string): void;
  readonly stdoutTty: boolean;
  readonly stderrTty: boolean;
  /** The terminal's width, when there is one. */
  readonly columns: number | undefined;
}

/**
 * An error the CLI reports and exits with: `airless: MESSAGE`, then one indented line per
 * detail. 1 when the API refused or a run did not succeed, 2 for a usage error.
 */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
    readonly details: readonly string[] = [],
  ) {
    super(message);
  }
}

/** The `{error, details?}` body of a refusal as a message and `PATH: MESSAGE` lines. */
export function apiError(res: ApiResponse): { message: string; details: string[] } {
  const body = (typeof res.body === 'object' && res.body !== null ? res.body : {}) as {
    error?: unknown;
    message?: unknown;
    details?: unknown;
  };
  // API Gateway's own refusals (IAM auth, throttling) say `message`, not `error`.
  const said =
    typeof body.error === 'string'
      ? body.error
      : typeof body.message === 'string'
        ? body.message
        : res.text.trim().slice(0, 500) || 'no message';
  const details = Array.isArray(body.details)
    ? body.details.map((d: { path?: unknown; message?: unknown }) =>
        typeof d?.path === 'string' ? `${d.path}: ${String(d.message)}` : String(d?.message ?? d),
      )
    : [];
  return { message: `${said} (HTTP ${res.status})`, details };
}

export const dagPath = (dag: string) => `/v1/dags/${encodeURIComponent(dag)}`;
export const runPath = (dag: string, run: string) =>
  `${dagPath(dag)}/runs/${encodeURIComponent(run)}`;
export const taskPath = (dag: string, run: string, task: string) =>
  `${runPath(dag, run)}/tasks/${encodeURIComponent(task)}`;

/** Parses a whole number from `min` to `max` for commander, naming the range when it is not. */
export const wholeNumber = (min: number, max: number) => (value: string) => {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
  }
  return n;
};

export class Session {
  #client: ApiClient | undefined;
  #target: Target | undefined;
  /** What the command exits with when it ends without throwing a CliError. */
  exitCode = 0;

  constructor(
    readonly io: Io,
    private readonly flags: () => { api?: string; region?: string },
    readonly env: NodeJS.ProcessEnv = process.env,
    private readonly cwd: string = process.cwd(),
  ) {}

  get target(): Target {
    if (!this.#target) {
      try {
        this.#target = resolveTarget(this.flags(), this.env, this.cwd);
      } catch (e) {
        if (e instanceof ConfigError) throw new CliError(e.message, 2);
        throw e;
      }
    }
    return this.#target;
  }

  get client(): ApiClient {
    this.#client ??= new ApiClient(
      this.target.apiUrl,
      this.target.region,
      credentialsFor(this.target, this.env),
    );
    return this.#client;
  }

  /** How stdout (or stderr) is drawn: as wide as the terminal, else 80; coloured on a terminal. */
  style(stream: 'out' | 'err' = 'out'): Style {
    const tty = stream === 'out' ? this.io.stdoutTty : this.io.stderrTty;
    return {
      width: tty && this.io.columns ? this.io.columns : DEFAULT_WIDTH,
      color: useColor(tty, this.env),
    };
  }

  /** Sends a request. The network failing or the API refusing (not 2xx) is a CliError. */
  async call<T>(method: string, path: string, body?: unknown): Promise<ApiResponse<T>> {
    const res = await this.send<T>(method, path, body);
    if (res.status < 200 || res.status > 299) {
      const { message, details } = apiError(res);
      throw new CliError(message, 1, details);
    }
    return res;
  }

  /** Sends a request and returns whatever the API answered; only the network failing throws. */
  async send<T>(method: string, path: string, body?: unknown): Promise<ApiResponse<T>> {
    try {
      return await this.client.request<T>(method, path, body);
    } catch (e) {
      if (e instanceof CliError) throw e;
      if ((e as Error).name === 'CredentialsProviderError') {
        throw new CliError(`no AWS credentials to sign the request with: ${(e as Error).message}`);
      }
      const err = e as Error & { cause?: { code?: string; message?: string } };
      const why = err.cause?.code ?? err.cause?.message ?? err.message;
      throw new CliError(
        `cannot reach the API at ${this.target.apiUrl} (from ${this.target.source}): ${why}`,
      );
    }
  }

  /** Prints the API's JSON as it came. */
  printJson(res: ApiResponse): void {
    this.io.out(res.text.trimEnd());
  }
}
