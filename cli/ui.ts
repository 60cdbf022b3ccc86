// `airless ui`: serves the web UI on loopback and forwards its API calls to the deployment,
// signed with the caller's AWS credentials, as `kubectl proxy` does: the browser holds no secret.
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import type { Command } from 'commander';
import { ApiClient } from './api-client.ts';
import { credentialsFor, isLoopbackUrl } from './config.ts';
import { CliError, type Session, wholeNumber } from './session.ts';

/** The largest request body the proxy forwards: the API's own limit on a DAG document. */
export const MAX_BODY_BYTES = 1024 * 1024;
const METHODS = new Set(['GET', 'POST', 'PATCH', 'PUT', 'DELETE']);
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.map': 'application/json',
};
// Nothing is loaded from elsewhere; Preact sets some style attributes itself.
const CSP =
  "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/**
 * The built web UI: dist/ui/ under the package root, which is the nearest folder above this
 * module with a package.json. That holds both for cli/ui.ts run from source and for the bundle
 * at dist/cli.mjs.
 */
export function defaultUiDir(from: string = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'dist', 'ui');
    const up = dirname(dir);
    if (up === dir) return join(from, '..', 'dist', 'ui');
    dir = up;
  }
}

export interface UiServerOptions {
  readonly apiUrl: string;
  readonly region: string;
  /** 0 picks a free port. @default 8080 */
  readonly port?: number;
  /** Loopback only, unless a caller knows better. @default '127.0.0.1' */
  readonly host?: string;
  /** @default the standard AWS chain, with test/test for a stack on this machine */
  readonly credentials?: AwsCredentialIdentityProvider;
  /** @default defaultUiDir() */
  readonly uiDir?: string;
}

export interface UiServer {
  /** `http://127.0.0.1:PORT/` */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.end(body);
}

const sendError = (res: ServerResponse, status: number, message: string) =>
  send(res, status, 'application/json', JSON.stringify({ error: message }));

/** The request body, refused past MAX_BODY_BYTES before it is read whole. */
async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) {
    throw new RequestError(413, `request body is over the ${MAX_BODY_BYTES}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new RequestError(413, `request body is over the ${MAX_BODY_BYTES}-byte limit`);
    }
    chunks.push(chunk);
  }
  return size === 0 ? undefined : Buffer.concat(chunks).toString('utf8');
}

/**
 * Only this page may spend the caller's credentials. The Host check stops DNS rebinding (a
 * hostile name that resolves to 127.0.0.1); the Origin check stops another site's page from
 * sending requests here, which a browser allows for simple POSTs without asking.
 */
function sameOrigin(req: IncomingMessage, port: number): boolean {
  const host = req.headers.host ?? '';
  if (host !== `127.0.0.1:${port}` && host !== `localhost:${port}`) return false;
  const origin = req.headers.origin;
  return origin === undefined || origin === `http://${host}`;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function serveStatic(res: ServerResponse, uiDir: string, pathname: string): Promise<void> {
  const index = join(uiDir, 'index.html');
  if (!existsSync(index)) {
    send(
      res,
      503,
      'text/plain; charset=utf-8',
      `The web UI is not built (no ${index}).\nRun \`npm run build:ui\` (npm ci does it), then reload.\n`,
    );
    return;
  }
  // A file of the build, else the page itself: every other path is one of the app's routes
  // (whose run ids may hold dots, so an extension says nothing).
  let file = index;
  let wanted: string | undefined;
  try {
    wanted = resolve(uiDir, `.${decodeURIComponent(pathname)}`);
  } catch {
    // A malformed escape: not a file of ours.
  }
  if (wanted?.startsWith(uiDir + sep) && (await isFile(wanted))) file = wanted;
  else if (pathname.startsWith('/assets/')) {
    send(res, 404, 'text/plain; charset=utf-8', `not found: ${pathname}\n`);
    return;
  }
  const body = await readFile(file);
  res.writeHead(200, {
    'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
    'content-length': body.length,
    // Vite names assets by their hash; the page itself must be read again each time.
    'cache-control': file === index ? 'no-cache' : 'public, max-age=31536000, immutable',
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  });
  res.end(body);
}

/** Starts the UI server and resolves once it listens. */
export function startUiServer(opts: UiServerOptions): Promise<UiServer> {
  const host = opts.host ?? '127.0.0.1';
  const uiDir = resolve(opts.uiDir ?? defaultUiDir());
  const client = new ApiClient(
    opts.apiUrl,
    opts.region,
    opts.credentials ??
      credentialsFor(
        {
          apiUrl: opts.apiUrl,
          region: opts.region,
          source: 'startUiServer',
          local: isLoopbackUrl(opts.apiUrl),
        },
        process.env,
      ),
  );
  let port = 0;

  async function forward(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = req.method ?? 'GET';
    if (!METHODS.has(method)) {
      throw new RequestError(405, `method ${method} is not forwarded to the API`);
    }
    if (!sameOrigin(req, port)) {
      throw new RequestError(403, 'only the web UI served here may call the API through it');
    }
    const body = await readBody(req);
    let answer: Awaited<ReturnType<ApiClient['request']>>;
    try {
      answer = await client.request(method, path, body);
    } catch (e) {
      const err = e as Error & { cause?: { code?: string; message?: string } };
      if (err.name === 'CredentialsProviderError') {
        throw new RequestError(500, `no AWS credentials to sign the request with: ${err.message}`);
      }
      const why = err.cause?.code ?? err.cause?.message ?? err.message;
      throw new RequestError(502, `cannot reach the API at ${opts.apiUrl}: ${why}`);
    }
    send(res, answer.status, answer.contentType || 'text/plain; charset=utf-8', answer.text);
  }

  const server = createServer((req, res) => {
    // Only a path is ours to read: a request line such as `GET //[` (which any web page can make
    // the browser send) must be a 400, not an exception that ends the process.
    const target = req.url?.startsWith('/') ? req.url : '/';
    let url: URL | undefined;
    try {
      url = new URL(
        `http://localhost${target.startsWith('//') ? target.replace(/^\/+/, '/') : target}`,
      );
    } catch {
      url = undefined;
    }
    const handle = !url
      ? Promise.reject(new RequestError(400, 'malformed request path'))
      : url.pathname === '/v1' || url.pathname.startsWith('/v1/')
        ? forward(req, res, url.pathname + url.search)
        : req.method === 'GET' || req.method === 'HEAD'
          ? serveStatic(res, uiDir, url.pathname)
          : Promise.reject(new RequestError(405, `method ${req.method} is not allowed here`));
    handle.catch((e: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (e instanceof RequestError) sendError(res, e.status, e.message);
      else sendError(res, 500, `the UI server failed: ${(e as Error).message}`);
      // A refused body may still be arriving; do not wait for it.
      req.resume();
    });
  });

  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(opts.port ?? 8080, host, () => {
      server.off('error', fail);
      port = (server.address() as AddressInfo).port;
      const shown = host.includes(':') ? `[${host}]` : host;
      ok({
        url: `http://${shown}:${port}/`,
        port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

export function registerUi(cli: Command, s: Session): void {
  cli
    .command('ui')
    .description(
      'Serve the web UI on 127.0.0.1 and forward its API calls to the deployment, signed with ' +
        'your AWS credentials. Runs until Ctrl-C.',
    )
    .option(
      '--port <port>',
      'the port to listen on (0 picks a free one)',
      wholeNumber(0, 65535),
      8080,
    )
    .action(async (opts: { port: number }) => {
      const target = s.target;
      let server: UiServer;
      try {
        server = await startUiServer({
          apiUrl: target.apiUrl,
          region: target.region,
          port: opts.port,
          credentials: credentialsFor(target, s.env),
        });
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code === 'EADDRINUSE') {
          throw new CliError(`port ${opts.port} is in use: pass --port with another one`, 2);
        }
        throw e;
      }
      s.io.out(`UI  ${server.url}   (API ${target.apiUrl}, from ${target.source})`);
      s.io.err('Press Ctrl-C to stop.');
      await new Promise<void>((done) => {
        const stop = () => void server.close().then(done);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
