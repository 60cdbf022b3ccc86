import { deployLocal } from '../../localstack/deploy.ts';
import { emulatorConfig, isHealthy } from '../../localstack/emulator.ts';

/**
 * Deploys the real stack to the emulator once per test run, as `npm start` does. `npm test` runs
 * vitest inside the emulator wrapper, which has already started the emulator.
 */
export default async function setup(): Promise<void> {
  const cfg = emulatorConfig();
  if (!(await isHealthy(cfg))) {
    throw new Error(
      `end-to-end tests need the emulator on ${cfg.endpoint}: run them with npm test`,
    );
  }
  const t0 = Date.now();
  // The test deploy: DAGs may inject faults (test/e2e/faults.test.ts), a 30-second lease lets
  // dead workers be recovered in seconds, the deferred operators get a state machine and an ECS
  // task definition to start (test/e2e/deferred.test.ts), and the Lambda worker stops at 60 s,
  // so that a task cut at the Lambda limit takes 45 s, not 15 minutes
  // (test/e2e/executors.test.ts). All are emulator-only switches.
  await deployLocal(cfg, {
    quiet: true,
    faultInjection: true,
    leaseSeconds: 30,
    testTargets: true,
    workerTimeoutSeconds: 60,
  });
  console.log(`e2e: stack deployed to the emulator in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
}
