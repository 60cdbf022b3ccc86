import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

/**
 * The emulator-only test switches, read from the CDK context: honoured only when the app is
 * synthesized for the emulator (`airless:emulator=true`, which only localstack/deploy.ts sets),
 * never from one flag alone, so a production synth cannot turn them on.
 * - `airless:faultInjection=true`: DAGs may inject faults (core/faults.ts);
 * - `airless:leaseSeconds=N`: a shorter task lease (default 120 s), so that tests of dead
 *   workers recover in seconds rather than minutes.
 * Every emulator synth also works around the emulator's stream event source (below).
 */
export function emulatorTestSettings(scope: Construct): Record<string, string> {
  const ctx = (k: string) => String(scope.node.tryGetContext(k) ?? '');
  if (ctx('airless:emulator') !== 'true') return {};
  const lease = Number(ctx('airless:leaseSeconds'));
  return {
    // MiniStack's DynamoDB-stream event source mapping ignores a partial batch response and
    // moves past the failed records (AWS retries from the first failed one:
    // https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-batchfailurereporting.html).
    // On the emulator the advance handler fails the whole batch instead; its records are safe
    // to handle twice.
    STREAM_PARTIAL_FAILURES: 'fail-batch',
    ...(ctx('airless:faultInjection') === 'true' ? { AIRLESS_FAULTS: 'on' } : {}),
    ...(Number.isInteger(lease) && lease >= 10
      ? {
          LEASE_SECONDS: String(lease),
          HEARTBEAT_SECONDS: String(Math.max(1, Math.floor(lease / 4))),
          // Deferred attempts are checked by the reaper as often as leases expire.
          DEFERRED_CHECK_SECONDS: String(lease),
        }
      : {}),
  };
}

/**
 * The emulator-only `airless:workerTimeoutSeconds=N` switch: the Lambda worker's timeout, for a
 * test of a task cut at the Lambda limit. Undefined (the 15-minute default) elsewhere.
 */
export function emulatorWorkerTimeout(scope: Construct): Duration | undefined {
  const ctx = (k: string) => String(scope.node.tryGetContext(k) ?? '');
  if (ctx('airless:emulator') !== 'true') return undefined;
  const seconds = Number(ctx('airless:workerTimeoutSeconds'));
  return Number.isInteger(seconds) && seconds >= 30 && seconds <= 900
    ? Duration.seconds(seconds)
    : undefined;
}

/** The repository root: esbuild resolves dependencies from its package-lock.json. */
const projectRoot = dirname(dirname(fileURLToPath(import.meta.url)));

export interface AirlessFunctionProps {
  /** Absolute path of the handler's TypeScript file, which exports `handler`. */
  readonly entry: string;
  /**
   * @default Duration.seconds(30)
   */
  readonly timeout?: Duration;
  /**
   * Memory in MB; CPU grows with it.
   * @default 256
   */
  readonly memorySize?: number;
  /**
   * @default - none
   */
  readonly description?: string;
  /**
   * How long the function's logs are kept.
   * @default logs.RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * What happens to the log group when it leaves the stack.
   * @default RemovalPolicy.RETAIN
   */
  readonly logRemovalPolicy?: RemovalPolicy;
}

/**
 * The one place for the defaults of every Airless Lambda function: Node.js 22 on Graviton,
 * bundled by esbuild with the AWS SDK inside, source maps, Powertools settings, its own log
 * group and a role that may write only to that log group. Grant it more through `grant*`
 * methods; it is itself grantable.
 */
export class AirlessFunction extends Construct implements iam.IGrantable {
  readonly function: NodejsFunction;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;
  readonly grantPrincipal: iam.IPrincipal;

  constructor(scope: Construct, id: string, props: AirlessFunctionProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: props.logRemovalPolicy ?? RemovalPolicy.RETAIN,
    });
    // An explicit role instead of the default one with the AWSLambdaBasicExecutionRole managed
    // policy, which may write to every log group of the account.
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    });
    this.logGroup.grants.write(this.role);
    this.grantPrincipal = this.role;

    this.function = new NodejsFunction(this, 'Function', {
      entry: props.entry,
      handler: 'handler',
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      timeout: props.timeout ?? Duration.seconds(30),
      memorySize: props.memorySize ?? 256,
      ...(props.description === undefined ? {} : { description: props.description }),
      role: this.role,
      logGroup: this.logGroup,
      projectRoot,
      depsLockFilePath: join(projectRoot, 'package-lock.json'),
      bundling: {
        // Bundle the AWS SDK rather than use the runtime's copy: the bundle then runs the same
        // on the local emulator, whose Node.js provides no SDK, and pins the SDK version.
        externalModules: [],
        // CommonJS, so that bundled dependencies that `require()` Node.js built-ins work
        // without the createRequire banner an ESM bundle would need.
        format: OutputFormat.CJS,
        minify: true,
        sourceMap: true,
        target: 'node22',
      },
      environment: {
        // Stack traces point into the TypeScript sources through the bundled source map.
        NODE_OPTIONS: '--enable-source-maps',
        POWERTOOLS_SERVICE_NAME: 'airless',
        POWERTOOLS_METRICS_NAMESPACE: 'Airless',
        ...emulatorTestSettings(scope),
      },
    });
    Validations.of(this.function).acknowledge({
      id: 'AwsSolutions-L1',
      reason:
        'Node.js 22 is the runtime Airless targets on purpose (a supported LTS runtime): the ' +
        'bundles are built for node22, and the local emulator runs them on the Node.js ' +
        'installed (20 or 22). Moving to a newer runtime is a deliberate, tested change.',
    });
  }
}
