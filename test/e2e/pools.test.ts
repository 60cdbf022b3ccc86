import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../poll.ts';
import { api, uniqueDagId } from './stack.ts';

/**
 * Pools and maxActiveTasks on the local stack (DESIGN.md sections 5 and 11): the run views are
 * sampled while the runs go, and never show more tasks running than the slots. The exactness of
 * a gate's count under any order of deliveries, duplicates and crashes is a property test
 * (test/unit/pools.test.ts); 50 concurrent claims on DynamoDB are in the store contract.
 */
interface RunView {
  status: string;
  tasks: { taskId: string; status: string }[];
}
interface Pool {
  pool: string;
  slots: number;
  used: number;
  queued: number;
}

const parallel = (n: number, extra: object) =>
  Array.from({ length: n }, (_, i) => ({
    taskId: `t${i}`,
    operator: 'noop',
    config: { sleepSeconds: 1 },
    ...extra,
  }));

async function register(doc: object) {
  const r = await api.request('POST', '/v1/dags', doc);
  expect(r.status, r.text).toBe(201);
}

async function trigger(dagId: string): Promise<string> {
  const r = await api.request<{ runId: string }>('POST', `/v1/dags/${dagId}/runs`, {});
  expect(r.status, r.text).toBe(201);
  return r.body.runId;
}

/**
 * Samples the runs' views until every run has ended: the most tasks seen running at once (in
 * one round of reads, all runs read together), and the runs as they ended.
 */
async function sample(runs: { dagId: string; runId: string }[], pool?: string) {
  let most = 0;
  let mostUsed = 0;
  let sawWaiting = false;
  const ended = await waitFor(
    async () => {
      const [views, pools] = await Promise.all([
        Promise.all(
          runs.map(
            async (r) =>
              (await api.request<RunView>('GET', `/v1/dags/${r.dagId}/runs/${r.runId}`)).body,
          ),
        ),
        pool ? api.request<{ pools: Pool[] }>('GET', '/v1/pools') : undefined,
      ]);
      const running = views.flatMap((v) => v.tasks).filter((t) => t.status === 'running');
      most = Math.max(most, running.length);
      const p = pools?.body.pools.find((x) => x.pool === pool);
      if (p) {
        mostUsed = Math.max(mostUsed, p.used);
        sawWaiting ||= p.queued > 0;
      }
      return views;
    },
    (views) => views.every((v) => ['success', 'failed', 'cancelled'].includes(v.status)),
    { timeoutMs: 120_000, intervalMs: 150, what: 'the runs to end' },
  );
  return { most, mostUsed, sawWaiting, ended };
}

describe('pools', () => {
  it('a pool of 2 shared by two DAGs never has more than 2 of their tasks running', async () => {
    const pool = `e2e_pool_${randomUUID().slice(0, 8)}`;
    const put = await api.request<Pool>('PUT', `/v1/pools/${pool}`, { slots: 2 });
    expect(put.status, put.text).toBe(200);
    expect(put.body).toEqual({ pool, slots: 2, used: 0, queued: 0 });
    const dags = [uniqueDagId('e2e_pool_a'), uniqueDagId('e2e_pool_b')];
    for (const dagId of dags) await register({ dagId, tasks: parallel(4, { pool }) });
    const runs = [];
    for (const dagId of dags) runs.push({ dagId, runId: await trigger(dagId) });
    const { most, mostUsed, sawWaiting, ended } = await sample(runs, pool);
    expect(ended.map((v) => v.status)).toEqual(['success', 'success']);
    expect(most).toBeLessThanOrEqual(2);
    expect(mostUsed).toBeLessThanOrEqual(2);
    // The pool was in use, and tasks waited for it.
    expect(most).toBeGreaterThan(0);
    expect(sawWaiting).toBe(true);
    const after = await api.request<{ pools: Pool[] }>('GET', '/v1/pools');
    expect(after.body.pools.find((p) => p.pool === pool)).toEqual({
      pool,
      slots: 2,
      used: 0,
      queued: 0,
    });
    expect((await api.request('DELETE', `/v1/pools/${pool}`)).status).toBe(204);
    expect((await api.request('DELETE', `/v1/pools/${pool}`)).status).toBe(404);
  });

  it('holds tasks of a pool that does not exist, refuses its delete while they wait, runs them once it exists', async () => {
    const pool = `e2e_pool_${randomUUID().slice(0, 8)}`;
    const dagId = uniqueDagId('e2e_pool_later');
    await register({ dagId, tasks: parallel(2, { pool, config: {} }) });
    const runId = await trigger(dagId);
    await api.request('PUT', `/v1/pools/${pool}`, { slots: 0 });
    // Both wait: 0 slots. The pool cannot go while they do.
    await waitFor(
      async () =>
        (await api.request<{ pools: Pool[] }>('GET', '/v1/pools')).body.pools.find(
          (p) => p.pool === pool,
        ),
      (p) => p?.queued === 2,
      { timeoutMs: 60_000, intervalMs: 300, what: 'both tasks to wait for the pool' },
    );
    const refused = await api.request<{ error: string }>('DELETE', `/v1/pools/${pool}`);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatch(/2 waiting/);
    const view = (await api.request<RunView>('GET', `/v1/dags/${dagId}/runs/${runId}`)).body;
    expect(view.tasks.map((t) => t.status)).toEqual(['queued', 'queued']);
    // Given slots, they run.
    await api.request('PUT', `/v1/pools/${pool}`, { slots: 1 });
    const { most, ended } = await sample([{ dagId, runId }]);
    expect(ended[0]?.status).toBe('success');
    expect(most).toBeLessThanOrEqual(1);
    expect((await api.request('DELETE', `/v1/pools/${pool}`)).status).toBe(204);
  });

  it('refuses bad pools and slots, naming the field, and writes nothing', async () => {
    const cases: [string, unknown, string][] = [
      ['bad pool!', { slots: 1 }, '$.path.pool'],
      ['ok_pool', { slots: -1 }, '$.slots'],
      ['ok_pool', { slots: 1.5 }, '$.slots'],
      ['ok_pool', { slots: '2' }, '$.slots'],
      ['ok_pool', { slots: 1, extra: true }, '$'],
      ['ok_pool', {}, '$.slots'],
      ['ok_pool', { slots: 100_001 }, '$.slots'],
    ];
    for (const [name, body, path] of cases) {
      const r = await api.request<{ details: { path: string }[] }>(
        'PUT',
        `/v1/pools/${encodeURIComponent(name)}`,
        body,
      );
      expect(r.status, `${name} ${JSON.stringify(body)}`).toBe(400);
      expect(r.body.details.map((d) => d.path)).toContain(path);
    }
    const pools = (await api.request<{ pools: Pool[] }>('GET', '/v1/pools')).body.pools;
    expect(pools.map((p) => p.pool)).not.toContain('ok_pool');
    const dag = await api.request<{ details: { path: string }[] }>('POST', '/v1/dags', {
      dagId: uniqueDagId('e2e_pool_bad'),
      maxActiveTasks: 0,
      tasks: [{ taskId: 't', operator: 'noop', pool: 'no spaces' }],
    });
    expect(dag.status).toBe(400);
    expect(dag.body.details.map((d) => d.path).sort()).toEqual(
      ['$.maxActiveTasks', '$.tasks[0].pool'].sort(),
    );
  });
});

describe('maxActiveTasks', () => {
  it('caps a DAG’s running tasks across its runs', async () => {
    const dagId = uniqueDagId('e2e_max_tasks');
    await register({ dagId, maxActiveTasks: 2, tasks: parallel(3, {}) });
    const runs = [
      { dagId, runId: await trigger(dagId) },
      { dagId, runId: await trigger(dagId) },
    ];
    const { most, ended } = await sample(runs);
    expect(ended.map((v) => v.status)).toEqual(['success', 'success']);
    expect(most).toBeLessThanOrEqual(2);
    expect(most).toBeGreaterThan(0);
  });
});
