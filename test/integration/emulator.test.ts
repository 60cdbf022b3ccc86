import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { emulatorConfig, isHealthy, runningGroup, start, stop } from '../../localstack/emulator.ts';

/**
 * A loopback port free right now. A fixed second port would collide with a second test run on
 * the same machine (another AIRLESS_EMULATOR_PORT), whose emulator this test would then "reuse".
 */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => ok());
  });
  const address = server.address();
  await new Promise<void>((ok) => server.close(() => ok()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/**
 * The emulator's own lifecycle, on a second port so the run's emulator is untouched: it binds
 * loopback only, starts once, is reused when already up, and stops with its whole process group.
 */
describe('localstack/emulator.ts', () => {
  it('starts on 127.0.0.1, is reused while up, and stops with nothing left running', async () => {
    const port = await freePort();
    const cfg = emulatorConfig({ AIRLESS_EMULATOR_PORT: String(port) });
    expect(cfg.endpoint).toBe(`http://127.0.0.1:${port}`);
    try {
      expect(await start(cfg)).toBe(true);
      expect(await isHealthy(cfg)).toBe(true);
      const group = runningGroup(cfg);
      expect(group).toBeGreaterThan(1);
      // A second start finds it healthy and starts nothing.
      expect(await start(cfg)).toBe(false);
      expect(runningGroup(cfg)).toBe(group);
    } finally {
      await stop(cfg);
    }
    expect(runningGroup(cfg)).toBeUndefined();
    expect(await isHealthy(cfg)).toBe(false);
  });

  it('refuses a port that is not a port', () => {
    expect(() => emulatorConfig({ AIRLESS_EMULATOR_PORT: 'http' })).toThrow(
      /must be a port number/,
    );
  });
});
