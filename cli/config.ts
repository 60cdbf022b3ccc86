// Which deployment the CLI talks to, and as whom (DESIGN.md section 6).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import type { AwsCredentialIdentityProvider } from '@smithy/types';

/** Where the API is and how to sign for it. */
export interface Target {
  readonly apiUrl: string;
  readonly region: string;
  /** Where the URL came from, for error messages. */
  readonly source: string;
  /** A stack on this machine (a loopback address), where the emulator takes any signature. */
  readonly local: boolean;
}

/** A usage problem: the CLI cannot tell which deployment to call. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** The nearest `.airless/local.json` from `cwd` upwards, as `npm start` writes it. */
export function findLocalFile(cwd: string): string | undefined {
  let dir = resolve(cwd);
  for (;;) {
    const file = join(dir, '.airless', 'local.json');
    if (existsSync(file)) return file;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

function readLocal(file: string): { apiUrl?: unknown; region?: unknown } {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as { apiUrl?: unknown; region?: unknown };
  } catch (e) {
    throw new ConfigError(`cannot read ${file}: ${(e as Error).message}`);
  }
}

/** `https://abc123.execute-api.eu-west-1.amazonaws.com/` → `eu-west-1`. */
export function regionOfApiUrl(url: string): string | undefined {
  try {
    return /\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$/.exec(new URL(url).hostname)?.[1];
  } catch {
    return undefined;
  }
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

/** Whether the URL names this machine, where a local stack (the emulator) would be. */
export function isLoopbackUrl(url: string): boolean {
  try {
    return LOOPBACK.has(new URL(url).hostname);
  } catch {
    return false;
  }
}

/**
 * The API URL from `--api`, else `AIRLESS_API_URL`, else `apiUrl` in the nearest
 * `.airless/local.json`; the region from `--region`, `AWS_REGION`, the API's own host name,
 * local.json, else us-east-1.
 */
export function resolveTarget(
  flags: { api?: string | undefined; region?: string | undefined },
  env: NodeJS.ProcessEnv,
  cwd: string,
): Target {
  const localFile = findLocalFile(cwd);
  let local: ReturnType<typeof readLocal> | undefined;
  const fromLocal = () => {
    local ??= localFile ? readLocal(localFile) : {};
    return local;
  };
  let apiUrl: string;
  let source: string;
  if (flags.api) {
    apiUrl = flags.api;
    source = '--api';
  } else if (env.AIRLESS_API_URL) {
    apiUrl = env.AIRLESS_API_URL;
    source = 'AIRLESS_API_URL';
  } else if (localFile && typeof fromLocal().apiUrl === 'string') {
    apiUrl = fromLocal().apiUrl as string;
    source = localFile;
  } else {
    throw new ConfigError(
      'no API URL: pass --api URL, set AIRLESS_API_URL, or run `npm start` for a local stack ' +
        '(it writes .airless/local.json)',
    );
  }
  let url: URL;
  try {
    url = new URL(apiUrl);
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error('not http(s)');
  } catch {
    throw new ConfigError(`the API URL from ${source} is not an http(s) URL: ${apiUrl}`);
  }
  const localRegion = localFile ? fromLocal().region : undefined;
  const region =
    flags.region ||
    env.AWS_REGION ||
    regionOfApiUrl(apiUrl) ||
    (typeof localRegion === 'string' ? localRegion : undefined) ||
    'us-east-1';
  return { apiUrl, region, source, local: isLoopbackUrl(apiUrl) };
}

/**
 * Credentials from the standard AWS chain (environment, profile, SSO, process, web identity,
 * container or instance role). The local emulator does not check signatures, so a local stack
 * falls back to `test`/`test` when the chain finds none.
 */
export function credentialsFor(
  target: Target,
  env: NodeJS.ProcessEnv,
): AwsCredentialIdentityProvider {
  if (!target.local) return defaultProvider();
  // No instance role signs for a stack on this machine: skip the chain's last step, the EC2
  // metadata service, whose timeouts would add seconds to every command off EC2.
  env.AWS_EC2_METADATA_DISABLED ??= 'true';
  const chain = defaultProvider();
  return async () => {
    try {
      return await chain();
    } catch {
      return { accessKeyId: 'test', secretAccessKey: 'test' };
    }
  };
}
