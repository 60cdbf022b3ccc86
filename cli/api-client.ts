import { Sha256 } from '@aws-crypto/sha256-js';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentityProvider } from '@smithy/types';

/** One API answer: the status, the body (parsed when the API says it is JSON), the raw text. */
export interface ApiResponse<T = unknown> {
  readonly status: number;
  readonly body: T;
  readonly text: string;
  /** The answer's content-type header, when it had one (the UI server passes it on). */
  readonly contentType?: string;
}

/**
 * A client for the Airless REST API. The API uses IAM authorization, so every request is signed
 * with SigV4 for `execute-api`, with credentials from the usual AWS chain (environment, profile,
 * SSO, instance role).
 */
export class ApiClient {
  readonly #signer: SignatureV4;

  constructor(
    readonly baseUrl: string,
    region: string = process.env.AWS_REGION ?? 'us-east-1',
    credentials: AwsCredentialIdentityProvider = defaultProvider(),
  ) {
    this.#signer = new SignatureV4({
      service: 'execute-api',
      region,
      credentials,
      sha256: Sha256,
    });
  }

  async request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<ApiResponse<T>> {
    const url = new URL(this.baseUrl.replace(/\/$/, '') + path);
    const text =
      body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const query: Record<string, string> = {};
    url.searchParams.forEach((v, k) => {
      query[k] = v;
    });
    const signed = await this.#signer.sign({
      method,
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port ? { port: Number(url.port) } : {}),
      path: url.pathname,
      query,
      headers: {
        host: url.host,
        ...(text !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(text !== undefined ? { body: text } : {}),
    });
    const res = await fetch(url, {
      method,
      headers: signed.headers,
      ...(text !== undefined ? { body: text } : {}),
      signal: AbortSignal.timeout(60_000),
    });
    const raw = await res.text();
    const contentType = res.headers.get('content-type') ?? undefined;
    let parsed: unknown = raw;
    if (contentType?.includes('json')) {
      try {
        parsed = JSON.parse(raw);
      } catch {
        // keep the text
      }
    }
    return {
      status: res.status,
      body: parsed as T,
      text: raw,
      ...(contentType ? { contentType } : {}),
    };
  }
}
