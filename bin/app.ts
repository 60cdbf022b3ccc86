import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { AirlessStack } from '../lib/airless-stack.ts';

const app = new App();
// The account and region of the CLI's credentials; without them the stack is
// environment-agnostic.
const { CDK_DEFAULT_ACCOUNT: account, CDK_DEFAULT_REGION: region } = process.env;
new AirlessStack(app, 'Airless', {
  ...(account && region ? { env: { account, region } } : {}),
  // Set by the local deploy only (localstack/deploy.ts): the emulator's Scheduler does not
  // substitute the scheduled time.
  emulatorScheduledTimeFallback: app.node.tryGetContext('airless:emulator') === 'true',
  // The emulator runs no containers (and has no Application Auto Scaling): its Fargate workers
  // are local processes that `npm start` runs (localstack/workers.ts).
  ...(app.node.tryGetContext('airless:emulator') === 'true'
    ? { fargateWorkers: 'external' as const }
    : {}),
  // Networks the http operator may reach despite its SSRF guard: none unless the deployer says
  // so, e.g. `cdk deploy --context airless:httpAllowedNetworks=10.0.0.0/8,fd00::/8`.
  httpAllowedNetworks: String(app.node.tryGetContext('airless:httpAllowedNetworks') ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== ''),
});
// cdk-nag 3 is a policy validation plugin: any finding, error or warning, fails synthesis.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
