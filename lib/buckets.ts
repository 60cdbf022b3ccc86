import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

export interface BucketsProps {
  /**
   * What happens to the buckets when they leave the stack. CloudFormation cannot delete a
   * bucket that still holds objects.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * How long server access logs are kept.
   * @default Duration.days(90)
   */
  readonly accessLogsExpiration?: Duration;
}

/**
 * The DAGs bucket (user DAG files under `dags/`, versioned so that an overwritten DAG file can
 * be recovered) and the data bucket (task logs, artifacts and DAG versions), both private,
 * encrypted and TLS-only, with S3 server access logs in a third bucket.
 */
export class Buckets extends Construct {
  readonly dagsBucket: s3.Bucket;
  readonly dataBucket: s3.Bucket;
  readonly accessLogsBucket: s3.Bucket;

  constructor(scope: Construct, id: string, props: BucketsProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const secure = {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      removalPolicy,
    } as const;

    // Server access logs may only go to a bucket with SSE-S3 (not SSE-KMS) encryption; CDK
    // lets the logging service write to it through its bucket policy.
    // https://docs.aws.amazon.com/AmazonS3/latest/userguide/enable-server-access-logging.html
    this.accessLogsBucket = new s3.Bucket(this, 'AccessLogsBucket', {
      ...secure,
      lifecycleRules: [{ expiration: props.accessLogsExpiration ?? Duration.days(90) }],
    });
    Validations.of(this.accessLogsBucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        'This is the server access log bucket: logging its own access would log each log delivery, without end.',
    });

    // The cast only quiets exactOptionalPropertyTypes, which CDK's types predate.
    const logs = this.accessLogsBucket as s3.IBucket;
    this.dagsBucket = new s3.Bucket(this, 'DagsBucket', {
      ...secure,
      versioned: true,
      serverAccessLogsBucket: logs,
      serverAccessLogsPrefix: 'dags/',
    });
    this.dataBucket = new s3.Bucket(this, 'DataBucket', {
      ...secure,
      serverAccessLogsBucket: logs,
      serverAccessLogsPrefix: 'data/',
    });
  }
}
