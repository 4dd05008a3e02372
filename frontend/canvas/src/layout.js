// The graph of a definition (a trigger node, a node per step, an edge per exit in use)
// laid out by ELK's layered algorithm: top to bottom, orthogonal edge routes that go
// around nodes. Edges keep ELK's route (its sections) and are drawn along it.
import ELK from "elkjs/lib/elk.bundled.js";
import { TRIGGER, exitLabel, exitsOf } from "./definition.js";

export const NODE_W = 232;
export const NODE_H = 92;

const elk = new ELK();

const LAYOUT = {
  "elk.algorithm": "layered",
  "elk.direction": "DOWN",
  "elk.edgeRouting": "ORTHOGONAL",
  "elk.layered.spacing.nodeNodeBetweenLayers": "56",
  "elk.spacing.nodeNode": "48",
  "elk.layered.spacing.edgeNodeBetweenLayers": "24",
  "elk.spacing.edgeNode": "24",
  "elk.spacing.edgeEdge": "14",
  "elk.spacing.edgeLabel": "4",
  "elk.spacing.componentComponent": "60",
  "elk.layered.nodePlacement.strategy": "BRANDES_KOEPF",
  "elk.layered.considerModelOrder.strategy": "NODES_AND_EDGES",
  "elk.layered.mergeEdges": "false",
  "elk.separateConnectedComponents": "true",
  "elk.padding": "[top=24,left=24,bottom=24,right=24]",
};

/** Where an exit's handle sits on the node's bottom edge, as a fraction of its width. */
export function handleFraction(exits, exit) {
  if (exits.length < 2) return 0.5;
  return exit === "next" ? 0.3 : 0.7;
}

/** The edges of a definition: id "<from>:<exit>", with the exit's label. */
export function edgesOf(def, kinds) {
  const keys = new Set(def.steps.map((s) => s.key));
  const edges = [];
  if (def.steps.length) {
    edges.push({ id: `${TRIGGER}:next`, source: TRIGGER, exit: "next", target: def.steps[0].key, label: "" });
  }
  for (const s of def.steps) {
    const spec = kinds[s.kind];
    for (const exit of exitsOf(spec)) {
      const to = s[exit];
      if (to && keys.has(to)) {
        edges.push({ id: `${s.key}:${exit}`, source: s.key, exit, target: to, label: exitLabel(spec, exit) });
      }
    }
  }
  return edges;
}

function labelWidth(text) {
  return Math.ceil(text.length * 6.6) + 14;
}

/**
 * Lay out the graph. ``edges`` carry ``text`` (label with count). Returns node positions
 * by id and, by edge id, the route's points and the label's position.
 */
export async function layout(def, kinds, edges) {
  const nodes = [{ id: TRIGGER, exits: ["next"], hasIn: false }];
  for (const s of def.steps) nodes.push({ id: s.key, exits: exitsOf(kinds[s.kind]), hasIn: true });
  const graph = {
    id: "root",
    layoutOptions: LAYOUT,
    children: nodes.map((n) => ({
      id: n.id,
      width: NODE_W,
      height: NODE_H,
      layoutOptions: { "elk.portConstraints": "FIXED_POS" },
      ports: [
        ...(n.hasIn
          ? [{ id: `${n.id}__in`, x: NODE_W / 2, y: 0, width: 0, height: 0, layoutOptions: { "elk.port.side": "NORTH" } }]
          : []),
        ...n.exits.map((exit) => ({
          id: `${n.id}__${exit}`,
          x: NODE_W * handleFraction(n.exits, exit),
          y: NODE_H,
          width: 0,
          height: 0,
          layoutOptions: { "elk.port.side": "SOUTH" },
        })),
      ],
    })),
    edges: edges.map((e) => ({
      id: e.id,
      sources: [`${e.source}__${e.exit}`],
      targets: [`${e.target}__in`],
      labels: e.text ? [{ id: `${e.id}__label`, text: e.text, width: labelWidth(e.text), height: 20 }] : [],
    })),
  };
  const out = await elk.layout(graph);
  const positions = {};
  for (const c of out.children) positions[c.id] = { x: c.x, y: c.y };
  const routes = {};
  for (const e of out.edges || []) {
    const points = [];
    for (const section of e.sections || []) {
      points.push(section.startPoint, ...(section.bendPoints || []), section.endPoint);
    }
    const label = (e.labels || [])[0];
    routes[e.id] = {
      points: points.map((p) => ({ x: p.x, y: p.y })),
      label: label ? { x: label.x + label.width / 2, y: label.y + label.height / 2 } : null,
    };
  }
  return { positions, routes };
}
