// npm run bench:peers: Airless on the deployed local stack beside Prefect 3 in local server
// mode, in the same run on the same machine, on two DAG shapes of noop tasks:
//   - chain: 40 tasks, each waiting on the one before;
//   - fanout: root → 200 parallel tasks → sink.
// After a warm-up run of each shape on each system, 5 rounds, each running the chain on both
// systems, then the fan-out on both: the systems alternate, so a neighbour's load falls on both.
//
// Two clocks per run:
//   - run timestamps: the run's own start → end, as each system's API reports it (Airless: the
//     run's startTime → endTime; Prefect: the flow run's start_time → end_time);
//   - client clock: what the caller waits. Airless: the trigger POST until a GET of the run sees
//     it ended (polled every POLL_MS after each answer: the figure is late by up to one poll and
//     one GET, and the GETs are API Lambda invocations on the same 2 cores). The poll asks for the
//     run without its tasks (`?tasks=false`, one read): the whole view queries every task
//     instance, which cost the emulator about 20 ms of CPU a poll on the fan-out, a third of its
//     time at this rate, taken from the run being measured. Prefect: the flow call until it
//     returns, in the calling process.
// It prints min/median/max per shape, system and clock, the ratios Prefect / Airless, Airless's
// per-edge breakdown (an upstream outcome → the downstream task queued → claimed → running), the
// emulator's floor for one state write (what bounds a chain edge here), the
// load average at start and end, and last `peers: chain Xx, fanout Yx`: Prefect's median
// client-clock time over Airless's (above 1, Airless is faster).
//
// Prefect runs from scripts/peers/.venv, installed here from scripts/peers/requirements.txt
// (pinned) as localstack/emulator.ts installs the emulator; its server keeps SQLite state in a
// temporary PREFECT_HOME, listens on 127.0.0.1 only, and has analytics and the UI off.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { DeleteTableCommand, DynamoDBClient, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { clientConfig } from '../adapters/aws/clients.ts';
import { ApiClient } from '../cli/api-client.ts';
import { deployLocal } from '../localstack/deploy.ts';
import { awsEnv, emulatorConfig, stopProcessGroup } from '../localstack/emulator.ts';
import { createTable } from '../localstack/resources.ts';

const CHAIN = 40;
const FANOUT = 200;
const ROUNDS = 5;
/** Between the answer to one GET of an Airless run and the next: loopback, so short. */
const POLL_MS = 25;
/** The longest any one run may take on either system before the benchmark gives up. */
const RUN_LIMIT_MS = 180_000;

const here = dirname(fileURLToPath(import.meta.url));
const peersDir = join(here, 'peers');
const venv = join(peersDir, '.venv');
const requirements = join(peersDir, 'requirements.txt');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const seconds = (ms: number) => (ms / 1000).toFixed(2);
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

// ---------------------------------------------------------------------------------------------
// Prefect: the venv, the server, the flows

/** Creates the venv and installs the pinned Prefect, unless the same pins are installed. */
function installPrefect(): string {
  const want = createHash('sha256').update(readFileSync(requirements)).digest('hex');
  const marker = join(venv, '.airless-requirements');
  if (existsSync(marker) && readFileSync(marker, 'utf8') === want) return 'already installed';
  const started = Date.now();
  const python = process.env.PYTHON ?? 'python3';
  const ok = execFileSync(python, ['-c', 'import sys; print(sys.version_info >= (3, 11))'])
    .toString()
    .trim();
  // Prefect 3.9 declares Requires-Python >= 3.11 (the emulator needs only 3.10).
  if (ok !== 'True') throw new Error(`${python} must be Python 3.11 or newer for Prefect 3`);
  console.log(`installing Prefect into ${venv} from ${requirements}…`);
  rmSync(venv, { recursive: true, force: true });
  const quiet = (cmd: string, args: string[]) => {
    try {
      execFileSync(cmd, args, { stdio: 'pipe', maxBuffer: 64 * 1024 * 1024, timeout: 900_000 });
    } catch (e) {
      const err = e as { stdout?: Buffer; stderr?: Buffer };
      console.error(`${err.stdout?.toString() ?? ''}${err.stderr?.toString() ?? ''}`.slice(-4000));
      throw e;
    }
  };
  quiet(python, ['-m', 'venv', venv]);
  quiet(join(venv, 'bin', 'pip'), [
    'install',
    '--quiet',
    '--disable-pip-version-check',
    '-r',
    requirements,
  ]);
  writeFileSync(marker, want);
  return `installed in ${seconds(Date.now() - started)} s`;
}

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? ok(addr.port) : fail(new Error('port'))));
    });
  });
}

/** Stops a process group that this script started. */
async function stopGroup(child: ChildProcess | undefined): Promise<void> {
  if (child?.pid !== undefined) await stopProcessGroup(child.pid, 10_000);
}

interface PrefectAnswer {
  shape: string;
  tasks: number;
  clientS: number;
  runS: number | null;
  persistedS: number | null;
  state: string;
  taskRuns: number;
  error?: string;
}

class Prefect {
  server: ChildProcess | undefined;
  bench: ChildProcess | undefined;
  version = '';
  readonly #lines: string[] = [];
  #wake: (() => void) | undefined;

  constructor(readonly dir: string) {}

  /** The environment of both the server and the flows: nothing inherited from the caller's. */
  env(apiUrl: string): NodeJS.ProcessEnv {
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith('PREFECT_')),
    );
    return {
      ...env,
      PREFECT_HOME: join(this.dir, 'home'),
      PREFECT_API_URL: apiUrl,
      // Nothing phones home: the server's telemetry service, the SDK's analytics (DO_NOT_TRACK
      // is the switch prefect/_internal/analytics reads), and no UI to serve.
      PREFECT_SERVER_ANALYTICS_ENABLED: 'false',
      DO_NOT_TRACK: '1',
      PREFECT_SERVER_UI_ENABLED: 'false',
    };
  }

  async start(): Promise<{ port: number; ms: number }> {
    const started = Date.now();
    const port = await freePort();
    const apiUrl = `http://127.0.0.1:${port}/api`;
    const log = openSync(join(this.dir, 'server.log'), 'a');
    // Its own process group, so that stopGroup() leaves nothing behind.
    this.server = spawn(
      join(venv, 'bin', 'prefect'),
      ['server', 'start', '--host', '127.0.0.1', '--port', String(port), '--no-ui'],
      { detached: true, stdio: ['ignore', log, log], env: this.env(apiUrl) },
    );
    let exited = false;
    this.server.on('exit', () => {
      exited = true;
    });
    let healthy = false;
    for (let i = 0; i < 1200 && !exited && !healthy; i++) {
      try {
        const res = await fetch(`${apiUrl}/health`, { signal: AbortSignal.timeout(2000) });
        healthy = res.ok;
      } catch {
        await sleep(100);
      }
    }
    if (!healthy) {
      const tail = readFileSync(join(this.dir, 'server.log'), 'utf8').split('\n').slice(-20);
      throw new Error(`the Prefect server did not become healthy on ${apiUrl}\n${tail.join('\n')}`);
    }
    const benchLog = openSync(join(this.dir, 'flows.log'), 'a');
    this.bench = spawn(join(venv, 'bin', 'python'), [join(peersDir, 'prefect_bench.py')], {
      detached: true,
      stdio: ['pipe', 'pipe', benchLog],
      env: this.env(apiUrl),
    });
    if (!this.bench.stdout) throw new Error('no stdout from prefect_bench.py');
    createInterface({ input: this.bench.stdout }).on('line', (line) => {
      this.#lines.push(line);
      this.#wake?.();
    });
    const ready = JSON.parse(await this.#next(120_000)) as { prefect: string };
    this.version = ready.prefect;
    return { port, ms: Date.now() - started };
  }

  async #next(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.#lines.length === 0) {
      if (Date.now() > deadline || this.bench?.exitCode !== null) {
        const tail = readFileSync(join(this.dir, 'flows.log'), 'utf8').split('\n').slice(-20);
        throw new Error(`prefect_bench.py did not answer\n${tail.join('\n')}`);
      }
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 500);
      });
    }
    return this.#lines.shift() as string;
  }

  async run(shape: 'chain' | 'fanout', n: number): Promise<PrefectAnswer> {
    this.bench?.stdin?.write(`${shape} ${n}\n`);
    const answer = JSON.parse(await this.#next(RUN_LIMIT_MS)) as PrefectAnswer;
    if (answer.error) throw new Error(`Prefect ${shape}: ${answer.error}`);
    if (answer.state !== 'COMPLETED') throw new Error(`Prefect ${shape} ended ${answer.state}`);
    return answer;
  }

  async stop(): Promise<void> {
    this.bench?.stdin?.end('quit\n');
    for (let i = 0; i < 50 && this.bench && this.bench.exitCode === null; i++) await sleep(100);
    await stopGroup(this.bench);
    await stopGroup(this.server);
  }
}

// ---------------------------------------------------------------------------------------------
// Airless: the stack, the DAGs, the runs and their edges

interface TaskView {
  taskId: string;
  status: string;
  queuedAt: string | null;
  startTime: string | null;
  endTime: string | null;
}
interface RunView {
  status: string;
  startTime: string | null;
  endTime: string | null;
  tasks: TaskView[];
}

const pad = (i: number, w: number) => String(i).padStart(w, '0');
const chainDag = (dagId: string) => ({
  dagId,
  tasks: Array.from({ length: CHAIN }, (_, i) => ({
    taskId: `t${pad(i, 2)}`,
    operator: 'noop',
    ...(i > 0 ? { dependsOn: [`t${pad(i - 1, 2)}`] } : {}),
  })),
});
const middle = Array.from({ length: FANOUT }, (_, i) => `m${pad(i, 3)}`);
const fanoutDag = (dagId: string) => ({
  dagId,
  tasks: [
    { taskId: 'root', operator: 'noop' },
    ...middle.map((taskId) => ({ taskId, operator: 'noop', dependsOn: ['root'] })),
    { taskId: 'sink', operator: 'noop', dependsOn: middle },
  ],
});

/** One downstream task's way from its upstream's outcome to running, as epoch milliseconds. */
interface Edge {
  outcome: number;
  queued: number;
  claimed: number;
  running: number;
}

const cfg = emulatorConfig();
Object.assign(process.env, awsEnv(cfg));

/**
 * The emulator's floor for one state write: the median time of one DynamoDB UpdateItem on a
 * scratch table defined as the state table (same keys, indexes and stream), one at a time from
 * this process, after a warm-up. Each edge of a chain waits for one request (the outcome and the
 * next task's count, queue and claim, as one BatchExecuteStatement of two statements), so this
 * bounds how fast a chain can go here.
 */
async function writeFloorMs(): Promise<number> {
  const ddb = new DynamoDBClient(clientConfig());
  const table = await createTable();
  try {
    const times: number[] = [];
    for (let i = 0; i < 220; i++) {
      const t0 = performance.now();
      await ddb.send(
        new UpdateItemCommand({
          TableName: table,
          Key: { pk: { S: `FLOOR#${i % 20}` }, sk: { S: 'TI' } },
          UpdateExpression: 'SET #s = :s, #n = :n',
          ExpressionAttributeNames: { '#s': 'status', '#n': 'attempt' },
          ExpressionAttributeValues: { ':s': { S: 'running' }, ':n': { N: String(i) } },
        }),
      );
      if (i >= 20) times.push(performance.now() - t0);
    }
    return median(times);
  } finally {
    await ddb.send(new DeleteTableCommand({ TableName: table }));
    ddb.destroy();
  }
}

async function airlessRun(
  api: ApiClient,
  dagId: string,
): Promise<{ clientMs: number; runMs: number; runId: string; view: RunView }> {
  const t0 = performance.now();
  const trig = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {});
  if (trig.status !== 201) throw new Error(`trigger ${dagId}: ${trig.status} ${trig.text}`);
  const path = `/v1/dags/${dagId}/runs/${encodeURIComponent(trig.body.runId)}`;
  for (let i = 0; i < RUN_LIMIT_MS / POLL_MS && performance.now() - t0 < RUN_LIMIT_MS; i++) {
    // The run alone: a poll that read every task instance would load the table the run writes.
    const r = await api.request<Omit<RunView, 'tasks'>>('GET', `${path}?tasks=false`);
    if (['success', 'failed', 'cancelled'].includes(r.body.status)) {
      const clientMs = performance.now() - t0;
      if (r.body.status !== 'success') throw new Error(`${dagId} run ended ${r.body.status}`);
      const { startTime, endTime } = r.body;
      if (!startTime || !endTime) throw new Error(`${dagId} run has no start or end time`);
      const view = await api.request<RunView>('GET', path);
      if (view.status !== 200) throw new Error(`${dagId} run view: ${view.status} ${view.text}`);
      return {
        clientMs,
        runMs: Date.parse(endTime) - Date.parse(startTime),
        runId: trig.body.runId,
        view: view.body,
      };
    }
    await sleep(POLL_MS);
  }
  throw new Error(`${dagId} did not finish within ${RUN_LIMIT_MS / 1000} s`);
}

/** Runs `fn` over `items`, `width` at a time. */
async function pool<T, R>(items: T[], width: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i] as T);
    }),
  );
  return out;
}

/**
 * Each task's four moments, from the API: the outcome (the upstream's endTime: the stamp of its
 * outcome, taken just before the worker writes it), the downstream's queuedAt and its claim
 * (startTime, written by the claim, which sets it `running`). The operator's start is the first
 * line of the attempt's log (app/tasks.ts stamps it after loading the DAG).
 */
async function moments(
  api: ApiClient,
  dagId: string,
  runId: string,
  view: RunView,
): Promise<Map<string, { end: number; queued: number; claimed: number; running: number }>> {
  const runPath = `/v1/dags/${dagId}/runs/${encodeURIComponent(runId)}`;
  const running = await pool(view.tasks, 4, async (t) => {
    const log = await api.request('GET', `${runPath}/tasks/${t.taskId}/logs`);
    return Date.parse(log.text.slice(0, 24));
  });
  const at = (s: string | null | undefined) => (s ? Date.parse(s) : Number.NaN);
  return new Map(
    view.tasks.map((t, i) => [
      t.taskId,
      {
        end: at(t.endTime),
        queued: at(t.queuedAt),
        claimed: at(t.startTime),
        running: running[i] as number,
      },
    ]),
  );
}

// ---------------------------------------------------------------------------------------------
// Figures

const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const median = (xs: number[]) => {
  const s = sorted(xs);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const stats = (xs: number[]) => ({
  min: Math.min(...xs),
  median: median(xs),
  max: Math.max(...xs),
});

// ---------------------------------------------------------------------------------------------

const wallStart = Date.now();
const loadStart = load();
const tmp = mkdtempSync(join(tmpdir(), 'airless-peers-'));
const prefect = new Prefect(tmp);
let stopping = false;
const cleanUp = async () => {
  if (stopping) return;
  stopping = true;
  await prefect.stop();
  rmSync(tmp, { recursive: true, force: true });
};
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    void cleanUp().then(() => process.exit(130));
  });
}

try {
  console.log(
    `bench:peers on ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), load average ${loadStart}`,
  );
  const installed = installPrefect();
  console.log(`Prefect venv: ${installed}`);
  let t = Date.now();
  console.log('deploying the stack to the emulator…');
  const { local } = await deployLocal(cfg, { quiet: true });
  console.log(`  deployed in ${seconds(Date.now() - t)} s`);
  const api = new ApiClient(local.apiUrl, local.region);
  const { port, ms: prefectStartMs } = await prefect.start();
  console.log(
    `Prefect ${prefect.version} server on 127.0.0.1:${port} (SQLite in ${tmp}), up in ${seconds(prefectStartMs)} s`,
  );

  const suffix = Date.now().toString(36);
  const dags = { chain: `peers_chain_${suffix}`, fanout: `peers_fanout_${suffix}` };
  for (const doc of [chainDag(dags.chain), fanoutDag(dags.fanout)]) {
    const r = await api.request('POST', '/v1/dags', doc);
    if (r.status !== 201) throw new Error(`create ${doc.dagId}: ${r.status} ${r.text}`);
  }
  const size = { chain: CHAIN, fanout: FANOUT } as const;

  // The first run of each shape pays cold starts (Lambda workers, Prefect's flow registration).
  t = Date.now();
  for (const shape of ['chain', 'fanout'] as const) {
    await airlessRun(api, dags[shape]);
    await prefect.run(shape, size[shape]);
  }
  console.log(`warm-up: one run of each shape on each system, ${seconds(Date.now() - t)} s`);

  type Shape = 'chain' | 'fanout';
  const airless: Record<Shape, { clientMs: number[]; runMs: number[] }> = {
    chain: { clientMs: [], runMs: [] },
    fanout: { clientMs: [], runMs: [] },
  };
  const peer: Record<Shape, { clientMs: number[]; runMs: number[]; persistedMs: number[] }> = {
    chain: { clientMs: [], runMs: [], persistedMs: [] },
    fanout: { clientMs: [], runMs: [], persistedMs: [] },
  };
  const edges: Record<'chain' | 'fanoutRoot' | 'fanoutSink', Edge[]> = {
    chain: [],
    fanoutRoot: [],
    fanoutSink: [],
  };
  const ends: { startToFirstClaim: number[]; lastEndToRunEnd: number[] } = {
    startToFirstClaim: [],
    lastEndToRunEnd: [],
  };

  for (let round = 1; round <= ROUNDS; round++) {
    const parts: string[] = [];
    for (const shape of ['chain', 'fanout'] as const) {
      const a = await airlessRun(api, dags[shape]);
      airless[shape].clientMs.push(a.clientMs);
      airless[shape].runMs.push(a.runMs);
      // Read between runs: the next run starts only after these reads.
      const m = await moments(api, dags[shape], a.runId, a.view);
      const get = (id: string) => m.get(id) as NonNullable<ReturnType<typeof m.get>>;
      const edge = (up: string, down: string): Edge => ({
        outcome: get(up).end,
        queued: get(down).queued,
        claimed: get(down).claimed,
        running: get(down).running,
      });
      const runStart = Date.parse(a.view.startTime as string);
      const runEnd = Date.parse(a.view.endTime as string);
      if (shape === 'chain') {
        for (let i = 1; i < CHAIN; i++)
          edges.chain.push(edge(`t${pad(i - 1, 2)}`, `t${pad(i, 2)}`));
        ends.startToFirstClaim.push(get('t00').claimed - runStart);
        ends.lastEndToRunEnd.push(runEnd - get(`t${pad(CHAIN - 1, 2)}`).end);
      } else {
        for (const id of middle) edges.fanoutRoot.push(edge('root', id));
        // The sink became ready when the last middle task finished.
        const last = middle.reduce((x, y) => (get(y).end > get(x).end ? y : x));
        edges.fanoutSink.push(edge(last, 'sink'));
      }
      const p = await prefect.run(shape, size[shape]);
      peer[shape].clientMs.push(p.clientS * 1000);
      if (p.runS !== null) peer[shape].runMs.push(p.runS * 1000);
      if (p.persistedS !== null) peer[shape].persistedMs.push(p.persistedS * 1000);
      parts.push(`${shape} airless ${seconds(a.clientMs)} s / prefect ${p.clientS.toFixed(2)} s`);
    }
    console.log(`round ${round}/${ROUNDS} (client clock): ${parts.join('; ')}; load ${load()}`);
  }

  for (const dagId of Object.values(dags)) await api.request('DELETE', `/v1/dags/${dagId}`);
  const floor = await writeFloorMs();

  // -------------------------------------------------------------------------------------------
  const row = (cols: string[], widths: number[]) =>
    cols.map((c, i) => (i < 3 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  const widths = [7, 8, 36, 7, 7, 7];
  console.log(
    `\n${CHAIN}-task chain and root → ${FANOUT} → sink fan-out of noop tasks, ${ROUNDS} runs each after a warm-up (seconds)`,
  );
  console.log(row(['shape', 'system', 'clock', 'min', 'median', 'max'], widths));
  const line = (shape: string, system: string, clock: string, xs: number[]) => {
    if (xs.length === 0) return console.log(row([shape, system, clock, '-', '-', '-'], widths));
    const s = stats(xs);
    console.log(
      row([shape, system, clock, seconds(s.min), seconds(s.median), seconds(s.max)], widths),
    );
  };
  for (const shape of ['chain', 'fanout'] as const) {
    line(shape, 'airless', 'run timestamps', airless[shape].runMs);
    line(shape, 'airless', `client clock (poll every ${POLL_MS} ms)`, airless[shape].clientMs);
    line(shape, 'prefect', 'run timestamps', peer[shape].runMs);
    line(shape, 'prefect', 'client clock (flow call → return)', peer[shape].clientMs);
    line(shape, 'prefect', 'client clock → all task runs stored', peer[shape].persistedMs);
  }

  const ratio = (p: number[], a: number[]) => (median(p) / median(a)).toFixed(2);
  console.log('\nratios Prefect / Airless, of the medians (above 1: Airless is faster)');
  for (const shape of ['chain', 'fanout'] as const) {
    console.log(
      `  ${shape.padEnd(7)} run timestamps ${ratio(peer[shape].runMs, airless[shape].runMs)}x` +
        `   client clock ${ratio(peer[shape].clientMs, airless[shape].clientMs)}x`,
    );
  }

  const ms = (x: number) => `${Math.round(x)}`.padStart(8);
  console.log(
    '\nAirless per edge, median ms over every edge of the 5 runs: upstream outcome (its endTime)' +
      '\n→ downstream queued (queuedAt) → claimed (startTime) → running (first log line)',
  );
  console.log(
    `  ${'edge'.padEnd(28)}${'n'.padStart(5)}${'→queued'.padStart(8)}${'→claimed'.padStart(9)}${'→running'.padStart(9)}${'total'.padStart(8)}`,
  );
  const edgeLine = (name: string, es: Edge[]) => {
    const med = (f: (e: Edge) => number) => median(es.map(f).filter(Number.isFinite));
    console.log(
      `  ${name.padEnd(28)}${String(es.length).padStart(5)}` +
        `${ms(med((e) => e.queued - e.outcome))}${ms(med((e) => e.claimed - e.queued)).padStart(9)}` +
        `${ms(med((e) => e.running - e.claimed)).padStart(9)}${ms(med((e) => e.running - e.outcome))}`,
    );
  };
  edgeLine('chain t(i-1) → t(i)', edges.chain);
  edgeLine('fanout root → middle', edges.fanoutRoot);
  edgeLine('fanout last middle → sink', edges.fanoutSink);
  console.log(
    `  chain run start → t00 claimed ${Math.round(median(ends.startToFirstClaim))} ms;` +
      ` t${CHAIN - 1} endTime → run end ${Math.round(median(ends.lastEndToRunEnd))} ms (medians)`,
  );
  console.log(
    '  (endTime is stamped just before the outcome write. On a chain, queuedAt and startTime are' +
      '\n  stamped as the outcome and the claim go out together, in one request: →running includes it.)',
  );
  console.log(
    `  emulator floor: one DynamoDB UpdateItem on a table defined as the state table, one at a` +
      `\n  time from this process, takes ${floor.toFixed(2)} ms (median of 200); a chain edge waits for` +
      ` one request of two writes.`,
  );

  console.log(`\nload average: start ${loadStart}, end ${load()} (1, 5, 15 min)`);
  console.log(`total ${seconds(Date.now() - wallStart)} s`);
  console.log(
    `peers: chain ${ratio(peer.chain.clientMs, airless.chain.clientMs)}x, fanout ${ratio(peer.fanout.clientMs, airless.fanout.clientMs)}x`,
  );
} finally {
  await cleanUp();
}
