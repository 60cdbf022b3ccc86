import { RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

const { GET, POST, PUT, PATCH, DELETE } = apigw.HttpMethod;

/** The REST API (README, "The REST API"): method and path of each route. */
const ROUTES: ReadonlyArray<readonly [apigw.HttpMethod, string]> = [
  [POST, '/v1/dags'],
  [GET, '/v1/dags'],
  [GET, '/v1/dags/{dag_id}'],
  [PATCH, '/v1/dags/{dag_id}'],
  [DELETE, '/v1/dags/{dag_id}'],
  [POST, '/v1/dags/{dag_id}/runs'],
  [GET, '/v1/dags/{dag_id}/runs'],
  [GET, '/v1/dags/{dag_id}/runs/{run_id}'],
  [POST, '/v1/dags/{dag_id}/runs/{run_id}/cancel'],
  [POST, '/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear'],
  [GET, '/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}'],
  [GET, '/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs'],
  [GET, '/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/output'],
  [POST, '/v1/dags/{dag_id}/backfills'],
  [GET, '/v1/dags/{dag_id}/backfills/{backfill_id}'],
  [PUT, '/v1/pools/{pool}'],
  [GET, '/v1/pools'],
  [DELETE, '/v1/pools/{pool}'],
  [GET, '/v1/import-errors'],
  [GET, '/v1/health'],
];

export interface ApiProps {
  /** The function that serves every route (HTTP API payload format 2.0). */
  readonly handler: lambda.IFunction;
  /**
   * How callers authenticate. `iam`: requests are signed with SigV4 and the caller needs
   * `execute-api:Invoke`. `none`: anyone who can reach the endpoint may call it.
   * @default 'iam'
   */
  readonly authorization?: 'iam' | 'none';
  /**
   * What happens to the access log group when it leaves the stack.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/** The API Gateway HTTP API in front of the `api` function, with access logs. */
export class Api extends Construct {
  readonly httpApi: apigw.HttpApi;
  readonly stage: apigw.HttpStage;
  readonly accessLogGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: ApiProps) {
    super(scope, id);
    const useIam = (props.authorization ?? 'iam') === 'iam';
    this.httpApi = new apigw.HttpApi(this, 'HttpApi', {
      description: 'Airless REST API',
      // The default stage is created below, with access logging.
      createDefaultStage: false,
      ...(useIam ? { defaultAuthorizer: new HttpIamAuthorizer() } : {}),
    });
    if (!useIam) {
      Validations.of(this.httpApi).acknowledge({
        id: 'AwsSolutions-APIG4',
        reason: "Authorization was turned off on purpose (authorization: 'none').",
      });
    }

    this.accessLogGroup = new logs.LogGroup(this, 'AccessLogs', {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    this.stage = this.httpApi.addStage('DefaultStage', {
      stageName: '$default',
      autoDeploy: true,
      accessLogSettings: { destination: new apigw.LogGroupLogDestination(this.accessLogGroup) },
    });

    const integration = new HttpLambdaIntegration('Handler', props.handler, {
      payloadFormatVersion: apigw.PayloadFormatVersion.VERSION_2_0,
    });
    for (const [method, path] of ROUTES) {
      this.httpApi.addRoutes({ path, methods: [method], integration });
    }
  }

  /** The URL of the default stage, ending with `/`. */
  get url(): string {
    return this.stage.url;
  }
}
