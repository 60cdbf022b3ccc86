/**
 * The task graph of a valid DAG, indexed once per DAG version so that each event afterwards costs
 * only the out-degree of the task it concerns.
 */
export interface TaskGraph {
  readonly taskIds: readonly string[];
  /** taskId → the tasks that list it in `dependsOn`. */
  readonly downstream: ReadonlyMap<string, readonly string[]>;
  /** taskId → its `dependsOn`, deduplicated. */
  readonly upstream: ReadonlyMap<string, readonly string[]>;
}

export function buildGraph(
  tasks: readonly { taskId: string; dependsOn: readonly string[] }[],
): TaskGraph {
  const downstream = new Map<string, string[]>();
  const upstream = new Map<string, string[]>();
  for (const t of tasks) {
    downstream.set(t.taskId, []);
    upstream.set(t.taskId, [...new Set(t.dependsOn)]);
  }
  for (const t of tasks) {
    for (const u of upstream.get(t.taskId) ?? []) downstream.get(u)?.push(t.taskId);
  }
  return { taskIds: tasks.map((t) => t.taskId), downstream, upstream };
}

/**
 * Finds dependency cycles with an iterative depth-first search (a recursive one would overflow
 * the stack on a 10,000-task chain). Returns each cycle found as its path, first node repeated at
 * the end: `['a', 'b', 'a']`. Every node on a cycle is reported in at most one cycle.
 */
export function findCycles(graph: TaskGraph): string[][] {
  const WHITE = 0;
  const GREY = 1;
  const BLACK = 2;
  const colour = new Map<string, number>();
  const cycles: string[][] = [];
  const onCycle = new Set<string>();

  for (const start of graph.taskIds) {
    if ((colour.get(start) ?? WHITE) !== WHITE) continue;
    const path: string[] = [];
    const stack: { node: string; next: number }[] = [{ node: start, next: 0 }];
    colour.set(start, GREY);
    path.push(start);
    while (stack.length > 0) {
      const frame = stack[stack.length - 1] as { node: string; next: number };
      // Walk upstream edges: a cycle is a cycle in either direction, and dependsOn is what the
      // user wrote, so the reported path reads the way the file does.
      const deps = graph.upstream.get(frame.node) ?? [];
      if (frame.next < deps.length) {
        const dep = deps[frame.next++] as string;
        const c = colour.get(dep) ?? WHITE;
        if (c === WHITE && graph.upstream.has(dep)) {
          colour.set(dep, GREY);
          stack.push({ node: dep, next: 0 });
          path.push(dep);
        } else if (c === GREY && !onCycle.has(dep)) {
          const cycle = path.slice(path.lastIndexOf(dep));
          if (!cycle.some((n) => onCycle.has(n))) {
            for (const n of cycle) onCycle.add(n);
            cycles.push([...cycle, dep]);
          }
        }
      } else {
        colour.set(frame.node, BLACK);
        stack.pop();
        path.pop();
      }
    }
  }
  return cycles;
}
