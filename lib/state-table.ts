import { RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as iam from 'aws-cdk-lib/aws-iam';
import type { Construct } from 'constructs';
import { INDEX_KEYS } from '../adapters/aws/table.ts';

export interface StateTableProps {
  /**
   * What happens to the table, and so to every DAG and run, when it leaves the stack.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * The single DynamoDB table, the only source of truth: its item layout is documented in
 * adapters/aws/table.ts, whose `tableDefinition` declares the same table for tests.
 */
export class StateTable extends dynamodb.Table {
  constructor(scope: Construct, id: string, props: StateTableProps = {}) {
    const S = dynamodb.AttributeType.STRING;
    super(scope, id, {
      partitionKey: { name: 'pk', type: S },
      sortKey: { name: 'sk', type: S },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      // The advance function reads finished task instances from the stream; it needs the new
      // image (status) and the old one (to see a transition rather than a rewrite).
      stream: dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    for (const [indexName, [pk, sk]] of Object.entries(INDEX_KEYS)) {
      this.addGlobalSecondaryIndex({
        indexName,
        partitionKey: { name: pk, type: S },
        sortKey: { name: sk, type: S },
        projectionType: dynamodb.ProjectionType.ALL,
      });
    }
  }

  /**
   * Everything the state store does (adapters/aws/dynamodb.ts): read and write its items, and
   * send updates together as PartiQL statements (BatchExecuteStatement), which IAM authorizes
   * as `dynamodb:PartiQLUpdate`.
   * https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ql-iam.html
   */
  grantState(grantee: iam.IGrantable): void {
    this.grants.readWriteData(grantee);
    this.grant(grantee, 'dynamodb:PartiQLUpdate');
  }
}
