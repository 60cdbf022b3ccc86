// Deploys the real CDK app to the local emulator, the same template and bundles as on AWS:
// `cdk bootstrap`, `cdk deploy`, then writes .airless/local.json for scripts and tests.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { awsEnv, type EmulatorConfig } from './emulator.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const STACK = 'Airless';
export const localFile = join(root, '.airless', 'local.json');
const outputsFile = join(root, '.airless', 'outputs.json');

/** What `npm start` writes to .airless/local.json, so that scripts and tests find the stack. */
export interface LocalStack {
  readonly apiUrl: string;
  readonly dagsBucket: string;
  readonly endpoint: string;
  readonly region: string;
  /** The web UI that `npm start` serves (cli/ui.ts); absent when nothing serves it. */
  readonly uiUrl?: string;
}

/** Every stack output, for tests that need more than local.json (table name, queue URL). */
export type StackOutputs = Record<string, string>;

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, quiet: boolean): Promise<void> {
  return new Promise((ok, fail) => {
    const child = spawn(cmd, args, {
      cwd: root,
      env,
      stdio: quiet ? ['ignore', 'pipe', 'pipe'] : 'inherit',
    });
    let output = '';
    child.stdout?.on('data', (d: Buffer) => {
      output += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      output += d.toString();
    });
    child.on('error', fail);
    child.on('exit', (code) =>
      code === 0
        ? ok()
        : fail(new Error(`${cmd} ${args.join(' ')} exited ${code}\n${output.slice(-4000)}`)),
    );
  });
}

/**
 * The HTTP API's local address. On AWS the stack's ApiUrl output is
 * `https://{apiId}.execute-api.{region}.amazonaws.com/`; the emulator serves the same API by
 * path on its own port, since `*.localhost` names do not resolve everywhere.
 */
export const localApiUrl = (cfg: EmulatorConfig, apiId: string) =>
  `${cfg.endpoint}/_aws/execute-api/${apiId}`;

export async function deployLocal(
  cfg: EmulatorConfig,
  opts: {
    quiet?: boolean;
    /**
     * Networks the http operator may reach (bin/app.ts reads them from the context), for tests
     * that call a server on this machine. Empty by default, as on AWS.
     */
    httpAllowedNetworks?: readonly string[];
    /**
     * The test deploy's switches (lib/airless-function.ts): DAGs may inject faults, and the task
     * lease is this many seconds. Off for `npm start`.
     */
    faultInjection?: boolean;
    leaseSeconds?: number;
    /**
     * The end-to-end tests' switches: deploy a state machine and an ECS task definition for the
     * deferred operators to start (lib/emulator-test-targets.ts), and shorten the Lambda
     * worker's timeout to this many seconds.
     */
    testTargets?: boolean;
    workerTimeoutSeconds?: number;
  } = {},
): Promise<{ local: LocalStack; outputs: StackOutputs }> {
  const env = {
    ...process.env,
    ...awsEnv(cfg),
    CDK_DEFAULT_ACCOUNT: '000000000000',
    CDK_DEFAULT_REGION: cfg.region,
  };
  const quiet = opts.quiet ?? false;
  const cdk = join(root, 'node_modules', '.bin', 'cdk');
  await run(cdk, ['bootstrap', `aws://000000000000/${cfg.region}`], env, quiet);
  await run(
    cdk,
    [
      'deploy',
      STACK,
      '--require-approval',
      'never',
      '--outputs-file',
      outputsFile,
      '--progress',
      'events',
      // The emulator's Scheduler passes <aws.scheduler.scheduled-time> through unsubstituted:
      // turn on the trigger's fallback (lib/airless-scheduler.ts), for this deploy only.
      '--context',
      'airless:emulator=true',
      ...(opts.httpAllowedNetworks?.length
        ? ['--context', `airless:httpAllowedNetworks=${opts.httpAllowedNetworks.join(',')}`]
        : []),
      ...(opts.faultInjection ? ['--context', 'airless:faultInjection=true'] : []),
      ...(opts.leaseSeconds ? ['--context', `airless:leaseSeconds=${opts.leaseSeconds}`] : []),
      ...(opts.testTargets ? ['--context', 'airless:testTargets=true'] : []),
      ...(opts.workerTimeoutSeconds
        ? ['--context', `airless:workerTimeoutSeconds=${opts.workerTimeoutSeconds}`]
        : []),
    ],
    env,
    quiet,
  );
  const outputs =
    (JSON.parse(readFileSync(outputsFile, 'utf8')) as Record<string, StackOutputs>)[STACK] ?? {};
  const need = (k: string) => {
    const v = outputs[k];
    if (!v) throw new Error(`stack output ${k} is missing from ${outputsFile}`);
    return v;
  };
  const local: LocalStack = {
    apiUrl: localApiUrl(cfg, need('ApiId')),
    dagsBucket: need('DagsBucketName'),
    endpoint: cfg.endpoint,
    region: cfg.region,
  };
  writeLocalFile(local);
  return { local, outputs };
}

/** Writes .airless/local.json, for scripts, tests and the CLI to find the stack. */
export function writeLocalFile(local: LocalStack): void {
  mkdirSync(dirname(localFile), { recursive: true });
  writeFileSync(localFile, `${JSON.stringify(local, null, 2)}\n`);
}

export function readOutputs(): StackOutputs {
  return (
    (JSON.parse(readFileSync(outputsFile, 'utf8')) as Record<string, StackOutputs>)[STACK] ?? {}
  );
}
