import { describe, expect, it } from 'vitest';
import { partiqlCondition } from '../../adapters/aws/dynamodb.ts';

describe('partiqlCondition: an UpdateItem condition as a PartiQL WHERE, or none', () => {
  const names = { '#status': 'status', '#attempt': 'attempt', '#leaseToken': 'leaseToken' };

  it('names attributes, keeps placeholders and existence checks, quotes bare names', () => {
    expect(
      partiqlCondition(
        'attribute_exists(pk) AND #status = :v3 AND #attempt >= :v4 AND attribute_not_exists(#leaseToken)',
        names,
      ),
    ).toBe(
      'attribute_exists("pk") AND "status" = :v3 AND "attempt" >= :v4 AND attribute_not_exists("leaseToken")',
    );
  });

  it.each([
    ['#status = :v1 OR #status = :v2', 'OR'],
    ['NOT contains(#status, :v1)', 'a function'],
    ['attribute_exists(pk) AND (#status = :v1)', 'parentheses'],
    ['#status <> :v1', '<> (true of a missing attribute in UpdateItem only)'],
    ['#attempt BETWEEN :v1 AND :v2', 'BETWEEN'],
    ['#status IN (:v1, :v2)', 'IN'],
    ['size(#status) > :v1', 'size'],
    ['#unknown = :v1', 'a name it was not given'],
  ])('refuses %s (%s)', (condition) => {
    expect(partiqlCondition(condition, names)).toBeUndefined();
  });

  it('refuses an attribute name PartiQL would need escaping for', () => {
    expect(partiqlCondition('#odd = :v1', { '#odd': 'a"b' })).toBeUndefined();
  });
});
