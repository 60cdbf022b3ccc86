import { Stack, Validations } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';

/**
 * Acknowledges, on `scope` and its children, cdk-nag's AwsSolutions-IAM5 finding for one
 * resource ARN that holds a wildcard. cdk-nag names such a finding after the ARN with its
 * CloudFormation references flattened (`<LogicalId.Arn>/*`); this renders the ARN the same
 * way, so that an acknowledgement covers that one resource and nothing else.
 */
export function acknowledgeWildcard(scope: IConstruct, arn: string, reason: string): void {
  const resource = flatten(Stack.of(scope).resolve(arn));
  Validations.of(scope).acknowledge({ id: `AwsSolutions-IAM5[Resource::${resource}]`, reason });
}

function flatten(ref: unknown): string {
  if (typeof ref === 'string') return ref;
  const r = ref as Record<string, unknown>;
  if (Array.isArray(r['Fn::Join'])) {
    const [delimiter, parts] = r['Fn::Join'] as [string, unknown[]];
    return parts.map(flatten).join(delimiter);
  }
  if (Array.isArray(r['Fn::GetAtt'])) return `<${(r['Fn::GetAtt'] as string[]).join('.')}>`;
  if (typeof r.Ref === 'string') return `<${r.Ref}>`;
  return JSON.stringify(ref);
}
