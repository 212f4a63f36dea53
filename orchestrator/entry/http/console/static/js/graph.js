// A workflow's state machine drawn as inline SVG, with no library: states in
// columns by their distance from the initial state, transitions as curves
// (forward ones left to right, the others looping below), the current state and
// the path an instance took lit.

import { s } from "./dom.js";

const NODE_H = 34;
const ROW_GAP = 30;
const COL_GAP = 110;
const PAD = 24;
const CHAR_W = 7.4;
let uid = 0;

/** The graph's nodes and edges as {name, initial, final, outcome} and {source, target, label}. */
export function normalise(graph) {
  const nodes = (graph && graph.nodes ? graph.nodes : []).map((n) =>
    typeof n === "string"
      ? { name: n }
      : { ...n, name: String(n.name ?? n.id ?? n.state ?? "") },
  );
  const names = new Set(nodes.map((n) => n.name));
  const open = nodes.filter((n) => !n.final).map((n) => n.name);
  const edges = [];
  for (const e of (graph && graph.edges) || []) {
    const target = String(e.target ?? e.to ?? "");
    const label =
      e.label !== undefined
        ? String(e.label)
        : `${e.event ?? ""}${e.guard ? ` [${e.guard}]` : ""}${e.compensate ? " / undo" : ""}`;
    const raw = e.source ?? e.from;
    const sources = raw === null || raw === undefined || raw === "*" ? open : [].concat(raw);
    for (const source of sources) edges.push({ source: String(source), target, label });
  }
  for (const e of edges) {
    for (const name of [e.source, e.target]) {
      if (!names.has(name)) {
        names.add(name);
        nodes.push({ name });
      }
    }
  }
  return { nodes, edges };
}

/** Each state's column: the longest path to it from an initial state, the edges that
 * close a cycle (found by a depth-first walk) left out, so every other edge goes right. */
function ranks(nodes, edges) {
  const out = new Map(nodes.map((n) => [n.name, []]));
  for (const e of edges) if (e.source !== e.target) out.get(e.source).push(e.target);
  const starts = nodes.filter((n) => n.initial).map((n) => n.name);
  const roots = [...(starts.length ? starts : nodes.slice(0, 1).map((n) => n.name)), ...nodes.map((n) => n.name)];
  const state = new Map(); // 1: on the walk's path, 2: done
  const order = []; // reverse post-order: a topological order of the forward edges
  const forward = new Map(nodes.map((n) => [n.name, []]));
  for (const root of roots) {
    if (state.has(root)) continue;
    const stack = [[root, 0]];
    state.set(root, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const next = out.get(top[0])[top[1]++];
      if (next === undefined) {
        state.set(top[0], 2);
        order.push(top[0]);
        stack.pop();
      } else if (!state.has(next)) {
        forward.get(top[0]).push(next);
        state.set(next, 1);
        stack.push([next, 0]);
      } else if (state.get(next) === 2) forward.get(top[0]).push(next); // not a cycle
    }
  }
  order.reverse();
  const rank = new Map(order.map((name) => [name, 0]));
  for (const name of order) {
    for (const next of forward.get(name)) rank.set(next, Math.max(rank.get(next), rank.get(name) + 1));
  }
  return { rank, order };
}

/** Where each state goes: {x, y (centre), w}, and the drawing's width and height. */
export function layout(nodes, edges) {
  const { rank, order } = ranks(nodes, edges);
  const columns = [];
  for (const name of order) {
    const r = rank.get(name);
    (columns[r] = columns[r] || []).push(name);
  }
  const width = (name) => Math.max(84, Math.ceil(name.length * CHAR_W) + 28);
  const tallest = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const height = tallest * NODE_H + (tallest - 1) * ROW_GAP;
  // room above the states for the arcs of edges that skip a column (and self-loops)
  const spans = edges.map((e) => rank.get(e.target) - rank.get(e.source));
  const top = PAD + Math.max(40, ...spans.filter((n) => n > 1).map((n) => lift(n) + 14));
  const place = new Map();
  let x = PAD;
  for (const column of columns) {
    if (!column) continue;
    const w = Math.max(...column.map(width));
    const own = column.length * NODE_H + (column.length - 1) * ROW_GAP;
    column.forEach((name, i) => {
      const y = top + (height - own) / 2 + i * (NODE_H + ROW_GAP) + NODE_H / 2;
      place.set(name, { x: x + w / 2, y, w: width(name), rank: rank.get(name) });
    });
    x += w + COL_GAP;
  }
  const back = spans.some((n, i) => n <= 0 && edges[i].source !== edges[i].target);
  return { place, width: x - COL_GAP + PAD, height: top + height + PAD + (back ? 70 : 0) };
}

/** How high the arc of an edge skipping `span - 1` columns rises above its states. */
function lift(span) {
  return 26 + 22 * (span - 2);
}

function merged(edges) {
  const byPair = new Map();
  for (const e of edges) {
    const key = `${e.source}\u0000${e.target}`;
    const found = byPair.get(key);
    if (found) {
      if (!found.labels.includes(e.label)) found.labels.push(e.label);
    } else byPair.set(key, { source: e.source, target: e.target, labels: [e.label] });
  }
  return [...byPair.values()];
}

function short(text, max = 34) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The SVG of `graph`; `current` the state to mark, `taken` a Set of "from\u0000to" pairs
 * and `visited` a Set of states the instance went through. */
export function drawGraph(graph, { current = null, visited = new Set(), taken = new Set() } = {}) {
  const { nodes, edges } = normalise(graph);
  const id = ++uid;
  if (!nodes.length) return s("svg", { class: "graph", width: 10, height: 10 });
  const { place, width, height } = layout(nodes, edges);
  const marker = (name, cls) =>
    s(
      "marker",
      { id: `${name}-${id}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: cls }),
    );
  const svg = s(
    "svg",
    { class: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "workflow graph" },
    s("defs", {}, marker("arrow", "arrow"), marker("arrow-lit", "arrow lit")),
  );
  const edgeLayer = s("g", { class: "edges" });
  const nodeLayer = s("g", { class: "nodes" });
  svg.append(edgeLayer, nodeLayer);

  for (const e of merged(edges)) {
    const a = place.get(e.source);
    const b = place.get(e.target);
    const lit = taken.has(`${e.source}\u0000${e.target}`);
    let d;
    let lx;
    let ly;
    if (e.source === e.target) {
      const top = a.y - NODE_H / 2;
      d = `M ${a.x - 12} ${top} C ${a.x - 30} ${top - 38}, ${a.x + 30} ${top - 38}, ${a.x + 12} ${top}`;
      lx = a.x;
      ly = top - 34;
    } else if (b.rank - a.rank > 1) {
      // over the columns it skips, as an arc above them, its label at the top
      const y1 = a.y - NODE_H / 2;
      const y2 = b.y - NODE_H / 2;
      const peak = Math.min(y1, y2) - lift(b.rank - a.rank);
      d = `M ${a.x + 10} ${y1} C ${a.x + 10} ${peak}, ${b.x - 10} ${peak}, ${b.x - 10} ${y2}`;
      lx = (a.x + b.x) / 2;
      ly = peak + (Math.min(y1, y2) - peak) * 0.25 - 3;
    } else if (b.rank > a.rank) {
      const x1 = a.x + a.w / 2;
      const x2 = b.x - b.w / 2;
      const mid = (x1 + x2) / 2;
      d = `M ${x1} ${a.y} C ${mid} ${a.y}, ${mid} ${b.y}, ${x2} ${b.y}`;
      lx = mid;
      ly = (a.y + b.y) / 2 - 6;
    } else {
      const dip = Math.max(a.y, b.y) + NODE_H / 2 + 26 + 12 * Math.abs(a.rank - b.rank);
      d = `M ${a.x} ${a.y + NODE_H / 2} C ${a.x} ${dip}, ${b.x} ${dip}, ${b.x} ${b.y + NODE_H / 2}`;
      lx = (a.x + b.x) / 2;
      ly = dip - 4;
    }
    const label = e.labels.join(", ");
    edgeLayer.append(
      s(
        "g",
        { class: lit ? "edge lit" : "edge", dataset: { source: e.source, target: e.target } },
        s("title", { text: `${e.source} → ${e.target}: ${label}` }),
        s("path", { d, "marker-end": `url(#${lit ? "arrow-lit" : "arrow"}-${id})` }),
        s("text", { x: lx, y: ly, "text-anchor": "middle", text: short(label) }),
      ),
    );
  }

  for (const n of nodes) {
    const p = place.get(n.name);
    const classes = ["node"];
    if (n.initial) classes.push("initial");
    if (n.final) classes.push("final");
    if (n.outcome === "failed") classes.push("failed-end");
    if (visited.has(n.name)) classes.push("visited");
    if (n.name === current) classes.push("current");
    const title = [n.name, n.initial ? "initial" : "", n.final ? `final${n.outcome ? ` (${n.outcome})` : ""}` : "", n.task ? `task ${n.task}` : ""]
      .filter(Boolean)
      .join(" · ");
    nodeLayer.append(
      s(
        "g",
        { class: classes.join(" "), dataset: { state: n.name } },
        s("title", { text: title }),
        s("rect", { x: p.x - p.w / 2, y: p.y - NODE_H / 2, width: p.w, height: NODE_H, rx: n.final ? 17 : 6 }),
        s("text", { x: p.x, y: p.y + 4, "text-anchor": "middle", text: n.name }),
      ),
    );
  }
  return svg;
}

/** The states an instance went through and the transitions it took, from its history. */
export function pathOf(history) {
  const visited = new Set();
  const taken = new Set();
  for (const entry of history || []) {
    const from = entry.from ?? null;
    const to = entry.to ?? null;
    if (to) visited.add(to);
    if (from) visited.add(from);
    if (from && to && (from !== to || entry.outcome === "transition")) taken.add(`${from}\u0000${to}`);
  }
  return { visited, taken };
}
