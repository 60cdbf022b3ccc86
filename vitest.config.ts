import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    reporters: ['default', './test/summary-reporter.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          globalSetup: ['test/unit/build-cli.setup.ts'],
        },
      },
      {
        test: {
          name: 'infra',
          include: ['test/infra/**/*.test.ts'],
          // Synthesizing the stack (and running cdk-nag) takes seconds, not milliseconds.
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          // Calls to the emulator: slower than unit tests, and some wait for SQS visibility.
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          globalSetup: ['test/e2e/stack.setup.ts'],
          // Over HTTP against the deployed stack, waiting for runs to finish.
          testTimeout: 300_000,
          hookTimeout: 300_000,
          // These files mostly wait (leases, schedule ticks, runs), on the emulator's CPU rather
          // than their own: run three at once instead of the default of one per spare core
          // (one, on 2 cores). Each uses its own DAGs, so they do not see each other's work.
          maxWorkers: 3,
          // A project with its own worker count runs as its own group: after the others.
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
