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
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          // Calls to the emulator: slower than unit tests, and some wait for SQS visibility.
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
