import { createServer, type Server, type Socket } from 'node:net';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createClients } from '../../adapters/aws/clients.ts';

/**
 * A DynamoDB endpoint that accepts connections and never answers: a dead connection, which the
 * emulator cannot produce. Each attempt must be cut off by the request timeout and retried, and
 * the last failure must reach the caller, rather than the request waiting for ever.
 */
describe('a DynamoDB request that is never answered', () => {
  let server: Server;
  let port = 0;
  let connections = 0;
  const sockets = new Set<Socket>();

  beforeEach(async () => {
    connections = 0;
    server = createServer((socket) => {
      connections++;
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.resume(); // read the request, answer nothing
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'test');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'test');
  });

  afterEach(async () => {
    vi.unstubAllEnvs();
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('times out each attempt, retries it, and then fails', async () => {
    const clients = createClients(
      { AWS_ENDPOINT_URL: `http://127.0.0.1:${port}`, AWS_REGION: 'us-east-1' },
      { connectionTimeout: 1_000, requestTimeout: 100 },
    );
    try {
      await expect(
        clients.dynamodb.send(new GetCommand({ TableName: 'state', Key: { pk: 'a', sk: 'b' } })),
      ).rejects.toMatchObject({ name: 'TimeoutError' });
      // maxAttempts (clientConfig): each attempt on a connection of its own, the last one cut off.
      expect(connections).toBe(5);
    } finally {
      clients.dynamodb.destroy();
    }
  }, 30_000);
});
