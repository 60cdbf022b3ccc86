// The DAG's tasks laid out by dagre and drawn as SVG, each node coloured by its status in the
// chosen run.
import { layout as dagreLayout, Graph } from '@dagrejs/dagre';
import { useMemo } from 'preact/hooks';
import type { DagTask } from './api.ts';
import { statusSymbol, statusText } from './status.tsx';

const NODE_HEIGHT = 34;
const CHAR_WIDTH = 7.4;

interface Layout {
  width: number;
  height: number;
  nodes: { id: string; x: number; y: number; width: number }[];
  edges: { from: string; to: string; points: { x: number; y: number }[] }[];
}

function layout(tasks: readonly DagTask[]): Layout {
  const g = new Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 14, ranksep: 48, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const t of tasks) {
    g.setNode(t.taskId, { width: 44 + t.taskId.length * CHAR_WIDTH, height: NODE_HEIGHT });
  }
  for (const t of tasks) for (const up of t.dependsOn) g.setEdge(up, t.taskId);
  dagreLayout(g);
  const graph = g.graph();
  return {
    width: graph.width ?? 0,
    height: graph.height ?? 0,
    nodes: g.nodes().map((id) => {
      const n = g.node(id);
      return { id, x: n.x, y: n.y, width: n.width };
    }),
    edges: g.edges().map((e) => ({ from: e.v, to: e.w, points: g.edge(e).points ?? [] })),
  };
}

const path = (points: { x: number; y: number }[]) =>
  points.map((p, i) => `${i === 0 ? 'M' : 'L'}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(' ');

export function DagGraph(props: {
  tasks: readonly DagTask[];
  statuses: ReadonlyMap<string, string>;
  runLabel: string;
}) {
  const g = useMemo(() => layout(props.tasks), [props.tasks]);
  return (
    <div class="graph-scroll">
      <svg
        class="graph"
        width={g.width}
        height={g.height}
        // Shrinks to fit its card down to 60%; a larger DAG scrolls instead of becoming unreadable.
        style={{ minWidth: `${Math.round(g.width * 0.6)}px` }}
        viewBox={`0 0 ${g.width} ${g.height}`}
        role="img"
        aria-label={`Graph of ${props.tasks.length} tasks, coloured by ${props.runLabel}`}
      >
        <defs>
          <marker
            id="arrow"
            viewBox="0 0 10 10"
            refX="9"
            refY="5"
            markerWidth="7"
            markerHeight="7"
            orient="auto-start-reverse"
          >
            <path d="M0,0 L10,5 L0,10 z" class="arrow" />
          </marker>
        </defs>
        {g.edges.map((e) => (
          <path
            key={`${e.from}>${e.to}`}
            d={path(e.points)}
            class="edge"
            marker-end="url(#arrow)"
          />
        ))}
        {g.nodes.map((n) => {
          const status = props.statuses.get(n.id) ?? 'none';
          const left = n.x - n.width / 2;
          const top = n.y - NODE_HEIGHT / 2;
          return (
            <g key={n.id} class={`node st-${status}`} data-task={n.id} data-status={status}>
              <title>{`${n.id}: ${status === 'none' ? 'not in this run' : statusText(status)}`}</title>
              <rect x={left} y={top} width={n.width} height={NODE_HEIGHT} rx="6" />
              <text x={left + 12} y={n.y + 4} class="node-symbol">
                {status === 'none' ? '' : statusSymbol(status)}
              </text>
              <text x={left + 30} y={n.y + 4}>
                {n.id}
              </text>
            </g>
          );
        })}
      </svg>
    </div>
  );
}
