import type { CreateTableCommandInput } from '@aws-sdk/client-dynamodb';

/**
 * The single DynamoDB table of Airless. Every key is a string; `#` separates key parts (ids never
 * contain it: they match ^[A-Za-z0-9_.-]+$).
 *
 * | item              | pk                         | sk                 | gsi1pk / gsi1sk                 | gsi2pk / gsi2sk (sparse)      |
 * |-------------------|----------------------------|--------------------|---------------------------------|-------------------------------|
 * | DAG               | `DAG#{dagId}`              | `META`             | `DAGS` / `{dagId}`              |                               |
 * | DAG version       | `DAG#{dagId}`              | `V#{000000042}`    |                                 |                               |
 * | use counter       | `USE#{name}`               | `USE`              |                                 |                               |
 * | DAG file          | `FILE#{s3 key}`            | `FILE`             |                                 |                               |
 * | import error      | `IMPORT_ERRORS`            | `{s3 key}`         |                                 |                               |
 * | run               | `RUN#{dagId}#{runId}`      | `RUN`              | `RUNS#{dagId}` / `{logicalDate}#{runId}` | `DUE#{CREATE,RUNQ}#{shard}` / `{since}` |
 * | task instance     | `RUN#{dagId}#{runId}`      | `TI#{taskId}`      |                                 | `DUE#{kind}#{shard}` / `{due}` |
 * | run progress shard| `RUN#{dagId}#{runId}`      | `PROGRESS#{nn}`    |                                 |                               |
 * | backfill          | `DAG#{dagId}`              | `BACKFILL#{id}`    |                                 |                               |
 * | gate (pool, cap)  | `GATE#{pool:name, dag:id}` | `GATE`             |                                 |                               |
 * | gate waiter       | `GATE#{gate}`              | `WAIT#{since}#{dagId}#{runId}#{taskId}` |            | `DUE#WAIT#{shard}` / `{gate}#{since}` |
 * | wake cursor       | `REAPER`                   | `WAKE_CURSOR`      |                                 |                               |
 *
 * - A run, its task instances and its progress shards share one partition key, so one Query
 *   reads a run whole.
 * - `gsi2` indexes only task instances that wait for a deadline: `DUE#QUEUED` (queued at),
 *   `DUE#LEASE` (lease expiry) and `DUE#RETRY` (retry time). An item leaves the index when it
 *   leaves those statuses. Its partition key carries one of 8 shards, so that the index has no
 *   hot partition at 1,000 task starts a second; the reaper queries each shard.
 * - `gsi2` also holds runs that wait: `DUE#CREATE` while a large run's task instances are being
 *   written, `DUE#RUNQ` while a run waits `queued` for a slot. The reaper finishes the first and
 *   starts the second when the event that should have done it was lost.
 * - `gsi2` also holds the attempts parked at a gate: `DUE#WAIT#{shard of the gate}` /
 *   `{gate}#{since}`, a gate's waiters together, oldest first, so that the reaper reads one item
 *   per gate with waiters (app/pools.ts wakeGates) to repair a lost wake, going on each pass
 *   where the last one stopped (the wake cursor item), so that every gate gets its turn.
 * - `gsi3` (sparse) is each DAG's queue of waiting runs: `QUEUED#{dagId}` / `{logicalDate}#{runId}`,
 *   present only while the run is `queued` with its tasks written. Starting the next run reads
 *   one item of it, however long the DAG's history. It also holds the backfills still creating
 *   runs, `BACKFILLS` / `{createdAt}`, for the reaper to go on with, and every gate (core/pools),
 *   `GATES` / `{gate}`, for the pool list and the reaper's look at waiting attempts.
 * - A gate's item counts its running attempts (`used`, moved in the same transaction as each
 *   claim and end); its waiters share its partition, after it, so one strongly consistent
 *   Query reads the gate and its oldest waiters together.
 * - No item is written once per task of a large run: each task instance is written for its own
 *   changes, and run progress is spread over up to 32 shard items (core/readiness).
 */
export const GSI1 = 'gsi1';
export const GSI2 = 'gsi2';
export const GSI3 = 'gsi3';
export const DUE_SHARDS = 8;

export const tableKeys = {
  dag: (dagId: string) => ({ pk: `DAG#${dagId}`, sk: 'META' }),
  dagVersion: (dagId: string, version: number) => ({
    pk: `DAG#${dagId}`,
    sk: `V#${String(version).padStart(9, '0')}`,
  }),
  use: (name: string) => ({ pk: `USE#${name}`, sk: 'USE' }),
  deferral: (name: string) => ({ pk: `DEFER#${name}`, sk: 'DEFER' }),
  dagFile: (key: string) => ({ pk: `FILE#${key}`, sk: 'FILE' }),
  importError: (key: string) => ({ pk: 'IMPORT_ERRORS', sk: key }),
  run: (dagId: string, runId: string) => ({ pk: `RUN#${dagId}#${runId}`, sk: 'RUN' }),
  task: (dagId: string, runId: string, taskId: string) => ({
    pk: `RUN#${dagId}#${runId}`,
    sk: `TI#${taskId}`,
  }),
  backfill: (dagId: string, backfillId: string) => ({
    pk: `DAG#${dagId}`,
    sk: `BACKFILL#${backfillId}`,
  }),
  gate: (gate: string) => ({ pk: `GATE#${gate}`, sk: 'GATE' }),
  /** Where the reaper's look at gates with waiters stopped (StateStore findWaitingGates). */
  wakeCursor: () => ({ pk: 'REAPER', sk: 'WAKE_CURSOR' }),
  progress: (dagId: string, runId: string, shard: number) => ({
    pk: `RUN#${dagId}#${runId}`,
    sk: `PROGRESS#${String(shard).padStart(2, '0')}`,
  }),
};

/** Each index's key attributes (partition, sort); every index projects all attributes. */
export const INDEX_KEYS: Readonly<Record<string, readonly [string, string]>> = {
  [GSI1]: ['gsi1pk', 'gsi1sk'],
  [GSI2]: ['gsi2pk', 'gsi2sk'],
  [GSI3]: ['gsi3pk', 'gsi3sk'],
};

/** The table as CreateTable input: for tests and the emulator. lib/ declares the same in CDK. */
export function tableDefinition(tableName: string): CreateTableCommandInput {
  const s = (AttributeName: string) => ({ AttributeName, AttributeType: 'S' as const });
  const index = (IndexName: string, pk: string, sk: string) => ({
    IndexName,
    KeySchema: [
      { AttributeName: pk, KeyType: 'HASH' as const },
      { AttributeName: sk, KeyType: 'RANGE' as const },
    ],
    Projection: { ProjectionType: 'ALL' as const },
  });
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: ['pk', 'sk', ...Object.values(INDEX_KEYS).flat()].map(s),
    KeySchema: [
      { AttributeName: 'pk', KeyType: 'HASH' },
      { AttributeName: 'sk', KeyType: 'RANGE' },
    ],
    GlobalSecondaryIndexes: Object.entries(INDEX_KEYS).map(([name, [pk, sk]]) =>
      index(name, pk, sk),
    ),
    StreamSpecification: { StreamEnabled: true, StreamViewType: 'NEW_AND_OLD_IMAGES' },
  };
}
