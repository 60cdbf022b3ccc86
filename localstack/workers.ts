// The Fargate workers of a local stack. The emulator has no container runtime, so the
// `fargate` executor's workers run here as plain Node processes: the same bundle the container
// image runs (dist/fargate-worker.mjs, from workers/fargate.ts), with the environment the
// stack gives the container (its WorkerEnvironment output), against the emulator.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { StackOutputs } from './deploy.ts';
import { awsEnv, type EmulatorConfig } from './emulator.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const bundle = join(root, 'dist', 'fargate-worker.mjs');

export interface LocalWorker {
  readonly index: number;
  readonly process: ChildProcess;
  /** Where its output goes: .airless/fargate-worker-N.log. */
  readonly logFile: string;
  /** Resolves with the exit code (or the signal's name) when the process ends. */
  readonly exited: Promise<number | string>;
}

export interface LocalWorkerOptions {
  /** Extra environment, e.g. a shorter WORKER_STOP_SECONDS for a test of the hand-back. */
  readonly env?: Record<string, string>;
  /** Numbering of the processes' log files. @default 0 */
  readonly firstIndex?: number;
}

let built = false;

/**
 * Builds the worker bundle from the current sources, once per process: a bundle left from an
 * earlier checkout would run old code.
 */
export function ensureWorkerBundle(): void {
  if (built && existsSync(bundle)) return;
  built = true;
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'build-worker.mjs')], {
    cwd: root,
    stdio: 'inherit',
  });
  if (r.status !== 0) throw new Error('could not build dist/fargate-worker.mjs');
}

/** Starts `count` worker processes for the deployed stack. */
export function startLocalWorkers(
  cfg: EmulatorConfig,
  outputs: StackOutputs,
  count: number,
  opts: LocalWorkerOptions = {},
): LocalWorker[] {
  const text = outputs.WorkerEnvironment;
  if (!text) throw new Error('the stack has no WorkerEnvironment output: deploy it again');
  const stackEnv = JSON.parse(text) as Record<string, string>;
  ensureWorkerBundle();
  mkdirSync(join(root, '.airless'), { recursive: true });
  const first = opts.firstIndex ?? 0;
  return Array.from({ length: count }, (_, i) => {
    const index = first + i;
    const logFile = join(root, '.airless', `fargate-worker-${index}.log`);
    const child = spawn(process.execPath, [bundle], {
      cwd: root,
      env: { ...process.env, ...stackEnv, ...awsEnv(cfg), ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const log = createWriteStream(logFile, { flags: 'a' });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    const exited = new Promise<number | string>((ok) =>
      child.on('exit', (code, signal) => ok(code ?? signal ?? -1)),
    );
    return { index, process: child, logFile, exited };
  });
}

/**
 * Stops workers as ECS stops a task: SIGTERM, then SIGKILL after `graceMs` (ECS's stop
 * timeout). A worker ends its current long poll (up to 10 s) before it stops. Resolves when
 * every process has ended.
 */
export async function stopLocalWorkers(workers: readonly LocalWorker[], graceMs = 30_000) {
  await Promise.all(
    workers.map(async (w) => {
      if (w.process.exitCode !== null || w.process.signalCode !== null) return;
      w.process.kill('SIGTERM');
      const timer = setTimeout(() => w.process.kill('SIGKILL'), graceMs);
      await w.exited;
      clearTimeout(timer);
    }),
  );
}
