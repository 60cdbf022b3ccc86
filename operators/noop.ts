import { noopConfig } from '../core/dag/operators.ts';
import type { RunOperator } from './registry.ts';

/** Waits `sleepSeconds`, fails attempts 1..`failAttempts`, and returns `output`. */
export const noop: RunOperator<typeof noopConfig._output> = {
  name: 'noop',
  config: noopConfig,
  async run(config, ctx) {
    const seconds = config.sleepSeconds ?? 0;
    if (seconds > 0) {
      ctx.log(`sleeping ${seconds}s`);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, seconds * 1000);
        ctx.signal.addEventListener('abort', () => {
          clearTimeout(timer);
          reject(ctx.signal.reason);
        });
      });
    }
    if (ctx.attempt <= (config.failAttempts ?? 0)) {
      throw new Error(
        `failing attempt ${ctx.attempt} of ${config.failAttempts} on purpose (failAttempts)`,
      );
    }
    ctx.log('done');
    return config.output ?? null;
  },
};
