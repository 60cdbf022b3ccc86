// npm start: the whole of Airless on the local emulator, in the foreground.
//   1. bring up the emulator (MiniStack on 127.0.0.1);
//   2. cdk bootstrap and cdk deploy the real app to it, and write
//      .airless/local.json = { apiUrl, dagsBucket, endpoint, region } (localstack/deploy.ts);
//   3. upload examples/dags/*.json under dags/ (the registrar picks them up);
//   4. start the Fargate workers as local processes (AIRLESS_FARGATE_WORKERS, default 1): the
//      emulator runs no containers (localstack/workers.ts);
//   5. serve the web UI (cli/ui.ts) on 127.0.0.1:8080, or the next free port, and add its
//      uiUrl to .airless/local.json;
//   6. print the API and UI URLs;
//   7. stay up until Ctrl-C, then tear it all down.
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { createClients } from '../adapters/aws/clients.ts';
import { defaultUiDir, startUiServer, type UiServer } from '../cli/ui.ts';
import { deployLocal, localFile, writeLocalFile } from '../localstack/deploy.ts';
import { awsEnv, emulatorConfig, start, stop } from '../localstack/emulator.ts';
import { type LocalWorker, startLocalWorkers, stopLocalWorkers } from '../localstack/workers.ts';

const cfg = emulatorConfig();
const t0 = Date.now();
const step = (s: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${s}`);

step(`starting the emulator on ${cfg.endpoint}`);
const started = await start(cfg);
Object.assign(process.env, awsEnv(cfg));

let stopping = false;
let ui: UiServer | undefined;
let workers: LocalWorker[] = [];
async function teardown(signal: string) {
  if (stopping) return;
  stopping = true;
  console.log(`\n${signal}: tearing down`);
  rmSync(localFile, { force: true });
  await ui?.close();
  await stopLocalWorkers(workers);
  // The emulator keeps everything in memory: stopping it removes the stack and its data. One we
  // did not start (already running) is left as it was found.
  if (started) await stop(cfg);
  console.log('stopped');
  process.exit(0);
}
process.on('SIGINT', () => void teardown('SIGINT'));
process.on('SIGTERM', () => void teardown('SIGTERM'));

try {
  step('deploying the CDK app (cdk bootstrap, cdk deploy)');
  const { local, outputs } = await deployLocal(cfg);

  step('uploading examples/dags/*.json');
  // After awsEnv is applied: the factory then points at the emulator, addressing buckets by path.
  const { s3 } = createClients();
  for (const f of readdirSync('examples/dags').filter((n) => n.endsWith('.json'))) {
    await s3.send(
      new PutObjectCommand({
        Bucket: local.dagsBucket,
        Key: `dags/${f}`,
        Body: readFileSync(join('examples/dags', f)),
        ContentType: 'application/json',
      }),
    );
    console.log(`  dags/${f}`);
  }

  const count = Number(process.env.AIRLESS_FARGATE_WORKERS ?? '1');
  if (!Number.isInteger(count) || count < 0 || count > 16) {
    throw new Error('AIRLESS_FARGATE_WORKERS must be a whole number from 0 to 16');
  }
  step(`starting ${count} local Fargate worker process(es) (the emulator runs no containers)`);
  workers = startLocalWorkers(cfg, outputs, count);

  step('serving the web UI');
  if (!existsSync(join(defaultUiDir(), 'index.html'))) {
    console.warn('  the web UI is not built: run `npm run build:ui` (npm ci does it), then reload');
  }
  ui = await serveUi(local.apiUrl, local.region);
  writeLocalFile({ ...local, uiUrl: ui.url });

  step('ready');
  console.log(`
  UI         ${ui.url}
  API        ${local.apiUrl}/v1/health   (IAM auth: sign with SigV4, e.g. the airless CLI)
  DAGs       s3://${local.dagsBucket}/dags/
  fargate    ${workers.length} local worker process(es), logs in .airless/fargate-worker-N.log
  emulator   ${local.endpoint}  (region ${local.region}, credentials test/test)
  written    ${localFile}

Press Ctrl-C to stop and tear everything down.`);
} catch (e) {
  console.error(e instanceof Error ? e.message : e);
  await teardown('error');
}

/** The UI server on 8080, or on the next port that is free. */
async function serveUi(apiUrl: string, region: string): Promise<UiServer> {
  for (let port = 8080; port < 8100; port++) {
    try {
      return await startUiServer({ apiUrl, region, port });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw e;
    }
  }
  return startUiServer({ apiUrl, region, port: 0 });
}

// Stay in the foreground until a signal arrives.
setInterval(() => {}, 1 << 30);
