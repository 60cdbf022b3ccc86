// The local AWS emulator, MiniStack, for tests and `npm start`: install it into a project-local
// Python venv, start it on 127.0.0.1, wait for health, and stop it with everything it started.
//
//   tsx localstack/emulator.ts install|start|stop|status
//   tsx localstack/emulator.ts exec -- CMD ARGS...   start (or reuse), run CMD, stop if we started
//
// AIRLESS_EMULATOR_PORT picks the port (default 4566).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const venv = join(here, '.venv');
const requirements = join(here, 'requirements.txt');
const stateDir = join(root, '.airless');

export interface EmulatorConfig {
  readonly port: number;
  readonly endpoint: string;
  readonly region: string;
}

export function emulatorConfig(env: NodeJS.ProcessEnv = process.env): EmulatorConfig {
  const port = Number(env.AIRLESS_EMULATOR_PORT ?? 4566);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(
      `AIRLESS_EMULATOR_PORT must be a port number, not "${env.AIRLESS_EMULATOR_PORT}"`,
    );
  }
  return { port, endpoint: `http://127.0.0.1:${port}`, region: env.AWS_REGION ?? 'us-east-1' };
}

/** The environment that points the AWS SDK, the CDK CLI and tests at the emulator. */
export function awsEnv(cfg: EmulatorConfig): Record<string, string> {
  return {
    AWS_ENDPOINT_URL: cfg.endpoint,
    AWS_REGION: cfg.region,
    AWS_DEFAULT_REGION: cfg.region,
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
  };
}

const pidFile = (cfg: EmulatorConfig) => join(stateDir, `emulator-${cfg.port}.pid`);
const logFile = (cfg: EmulatorConfig) => join(stateDir, `emulator-${cfg.port}.log`);
/**
 * MiniStack unpacks each Lambda under its temp folder and leaves it there: give it its own. It
 * must be outside this project, whose package.json says "type": "module": Node would read the
 * CommonJS worker script MiniStack writes there, and our CommonJS bundles, as ES modules.
 */
const tempDir = (cfg: EmulatorConfig) => join(tmpdir(), `airless-emulator-${cfg.port}`);

/** Creates the venv and installs the pinned MiniStack, unless the same pins are installed. */
export function install(log: (s: string) => void = console.error): void {
  const want = createHash('sha256').update(readFileSync(requirements)).digest('hex');
  const marker = join(venv, '.airless-requirements');
  if (existsSync(marker) && readFileSync(marker, 'utf8') === want) return;
  const python = process.env.PYTHON ?? 'python3';
  const version = execFileSync(python, ['-c', 'import sys; print(sys.version_info >= (3, 10))'])
    .toString()
    .trim();
  if (version !== 'True') throw new Error(`${python} must be Python 3.10 or newer`);
  log(`emulator: creating ${venv} and installing ${requirements}`);
  execFileSync(python, ['-m', 'venv', venv], { stdio: 'inherit' });
  execFileSync(
    join(venv, 'bin', 'pip'),
    ['install', '--quiet', '--disable-pip-version-check', '-r', requirements],
    { stdio: 'inherit' },
  );
  writeFileSync(marker, want);
}

export async function isHealthy(cfg: EmulatorConfig): Promise<boolean> {
  try {
    const res = await fetch(`${cfg.endpoint}/_ministack/health`, {
      signal: AbortSignal.timeout(2000),
    });
    return res.ok && typeof ((await res.json()) as { version?: unknown }).version === 'string';
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts MiniStack in its own process group, unless one already answers on the port. Returns
 * whether this call started it (and so should stop it).
 */
export async function start(cfg: EmulatorConfig = emulatorConfig()): Promise<boolean> {
  if (await isHealthy(cfg)) return false;
  install();
  mkdirSync(stateDir, { recursive: true });
  mkdirSync(tempDir(cfg), { recursive: true });
  const out = openSync(logFile(cfg), 'a');
  const child: ChildProcess = spawn(join(venv, 'bin', 'ministack'), [], {
    // A new process group (setsid): MiniStack runs Lambdas as child processes in its own group,
    // and stop() signals the whole group so none is orphaned.
    detached: true,
    stdio: ['ignore', out, out],
    env: {
      ...process.env,
      ...awsEnv(cfg),
      // Loopback only: BIND_HOST is MiniStack's bind address (its default is 0.0.0.0), and
      // MINISTACK_HOST the host it writes into queue URLs and API endpoints.
      BIND_HOST: '127.0.0.1',
      MINISTACK_HOST: '127.0.0.1',
      GATEWAY_PORT: String(cfg.port),
      TMPDIR: tempDir(cfg),
      // Listeners that would bind other interfaces or ports; nothing here uses them.
      IOT_MTLS_ENABLED: '0',
      SFTP_ENABLED: '0',
    },
  });
  if (child.pid === undefined) throw new Error('emulator: could not start MiniStack');
  writeFileSync(pidFile(cfg), String(child.pid));
  let exited: number | null = null;
  child.on('exit', (code) => {
    exited = code ?? -1;
  });
  child.unref();
  for (let i = 0; i < 300; i++) {
    if (await isHealthy(cfg)) return true;
    if (exited !== null) break;
    await sleep(100);
  }
  const tail = readFileSync(logFile(cfg), 'utf8').split('\n').slice(-20).join('\n');
  await stop(cfg);
  throw new Error(`emulator: MiniStack did not become healthy on ${cfg.endpoint}\n${tail}`);
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Stops a process group that this project started: SIGTERM, up to `graceMs` for it to end,
 * then SIGKILL; every wait bounded.
 */
export async function stopProcessGroup(pid: number, graceMs: number): Promise<void> {
  if (!groupAlive(pid)) return;
  process.kill(-pid, 'SIGTERM');
  for (let i = 0; i < graceMs / 100 && groupAlive(pid); i++) await sleep(100);
  if (groupAlive(pid)) process.kill(-pid, 'SIGKILL');
  for (let i = 0; i < 20 && groupAlive(pid); i++) await sleep(100);
}

/** Stops the MiniStack this project started on the port, with every process in its group. */
export async function stop(cfg: EmulatorConfig = emulatorConfig()): Promise<void> {
  const file = pidFile(cfg);
  if (!existsSync(file)) return;
  const pid = Number(readFileSync(file, 'utf8'));
  if (Number.isInteger(pid) && pid > 1) await stopProcessGroup(pid, 5000);
  rmSync(file, { force: true });
  rmSync(tempDir(cfg), { recursive: true, force: true });
}

/** The process group of the emulator this project started on the port, if it is running. */
export function runningGroup(cfg: EmulatorConfig = emulatorConfig()): number | undefined {
  const file = pidFile(cfg);
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8'));
  return Number.isInteger(pid) && pid > 1 && groupAlive(pid) ? pid : undefined;
}

/** Starts the emulator (or reuses a running one), runs `cmd`, and stops it if it started it. */
async function exec(cmd: string[]): Promise<number> {
  const cfg = emulatorConfig();
  const started = await start(cfg);
  console.error(`emulator: ${started ? 'started' : 'reusing'} MiniStack on ${cfg.endpoint}`);
  const [bin, ...args] = cmd;
  if (!bin) throw new Error('exec needs a command after --');
  const child = spawn(bin, args, { stdio: 'inherit', env: { ...process.env, ...awsEnv(cfg) } });
  const forward = (sig: NodeJS.Signals) => child.kill(sig);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  const code = await new Promise<number>((r) => child.on('exit', (c, s) => r(c ?? (s ? 1 : 0))));
  if (started) await stop(cfg);
  return code;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const cfg = emulatorConfig();
  switch (command) {
    case 'install':
      install();
      return 0;
    case 'start':
      console.error(
        `emulator: ${(await start(cfg)) ? 'started' : 'already running'} on ${cfg.endpoint}`,
      );
      return 0;
    case 'stop':
      await stop(cfg);
      return 0;
    case 'status': {
      const up = await isHealthy(cfg);
      console.log(up ? `running on ${cfg.endpoint}` : `not running on ${cfg.endpoint}`);
      return up ? 0 : 1;
    }
    case 'exec':
      return exec(rest[0] === '--' ? rest.slice(1) : rest);
    default:
      console.error('usage: emulator.ts install|start|stop|status|exec -- CMD...');
      return 2;
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}
