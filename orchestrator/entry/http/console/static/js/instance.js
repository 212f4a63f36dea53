// One instance: its header and actions, the workflow graph with the path taken,
// what is pending (compensations, parked events, timers), its family, its
// notifications and its history as a timeline; live until it is finished.

import { api, can } from "./api.js";
import { confirmAction } from "./confirm.js";
import { badge, clear, empty, errorBox, flash, h, json, section, table, when } from "./dom.js";
import { drawGraph, pathOf } from "./graph.js";
import { liveMarker, poll } from "./live.js";

const FINAL = new Set(["completed", "cancelled"]);
const DONE = new Set(["sent", "delivered", "undelivered", "failed", "skipped"]); // notifications
const AFTER_END = 10000; // ms an instance's page stays live after it finished

export function isFinished(doc) {
  if (typeof doc.finished === "boolean") return doc.finished;
  return FINAL.has(doc.status) || (doc.status === "failed" && !doc.halted && !doc.compensating_to);
}

function link(id, text) {
  return h("a", { href: `#/instances/${encodeURIComponent(id)}`, class: "mono", text: text || id });
}

function list(items, render, none) {
  return items && items.length ? h("ul", { class: "plain" }, items.map((x) => h("li", {}, render(x)))) : empty(none);
}

function asList(value) {
  if (!value) return [];
  if (Array.isArray(value)) return value;
  if (typeof value === "object") return Object.entries(value).map(([key, v]) => (typeof v === "object" && v ? { id: key, ...v } : { id: key, value: v }));
  return [value];
}

/** What kind of step a history entry is, for its mark on the timeline. */
export function kindOf(entry) {
  const event = entry.event || {};
  const type = event.type || "";
  const data = event.data || {};
  if (entry.outcome === "retry") return "retry";
  if (type.endsWith(".failed") || data.error_type || entry.outcome === "failed") return "error";
  if (type.startsWith("compensation.") || entry.outcome === "compensating") return "compensation";
  if (entry.outcome === "started") return "start";
  if (entry.outcome === "ignored" || entry.outcome === "late") return "ignored";
  if (type.startsWith("workflow.cancel")) return "cancel";
  return "transition";
}

function timelineEntry(entry) {
  const event = entry.event || {};
  const data = event.data || {};
  const kind = kindOf(entry);
  const move = entry.from === entry.to ? (entry.to ? `stays in ${entry.to}` : "") : `${entry.from ?? "∅"} → ${entry.to ?? "∅"}`;
  const li = h(
    "li",
    { class: `entry kind-${kind}`, dataset: { seq: entry.seq, kind } },
    h(
      "div",
      { class: "entry-head" },
      h("span", { class: "seq", text: `#${entry.seq}` }),
      h("span", { class: "type", text: event.type || "?" }),
      h("span", { class: `outcome outcome-${kind}`, text: entry.outcome || kind }),
      h("span", { class: "move", text: move }),
      h("time", { class: "muted", text: when(event.at) }),
    ),
  );
  if (data.task) li.append(h("div", { class: "muted", text: `${data.task}${data.attempt ? ` · try ${data.attempt}` : ""}` }));
  if (entry.note) li.append(h("div", { class: "note", text: entry.note }));
  if (data.error_type || data.message) {
    li.append(h("div", { class: "error-line", text: `${data.error_type || "error"}: ${data.message || ""}` }));
  }
  if (data.traceback) {
    li.append(h("details", { class: "traceback" }, h("summary", { text: "Traceback" }), h("pre", { text: data.traceback })));
  }
  if (entry.effects && entry.effects.length) {
    li.append(h("ul", { class: "effects" }, entry.effects.map((e) => h("li", { text: typeof e === "string" ? e : JSON.stringify(e) }))));
  }
  const shown = { ...data };
  delete shown.traceback;
  if (Object.keys(shown).length) li.append(h("details", { class: "data" }, h("summary", { text: "Event data" }), json(shown)));
  return li;
}

function notificationsTable(items) {
  if (!items.length) return empty("No notification.");
  return table(
    [
      { title: "Channel", cell: (n) => n.channel ?? "—" },
      { title: "To", cell: (n) => n.recipient ?? n.to ?? "—" },
      { title: "Template", cell: (n) => n.template ?? n.kind ?? "—" },
      { title: "Status", cell: (n) => badge(n.status) },
      { title: "Tries", cell: (n) => String(n.attempts ?? "—") },
      { title: "When", cell: (n) => when(n.updated_at ?? n.created_at ?? n.at) },
      { title: "Detail", cell: (n) => n.last_error ?? n.reason ?? (n.provider_id ? `provider id ${n.provider_id}` : "") },
    ],
    items,
    { rowAttrs: (n) => ({ dataset: { status: n.status || "" } }) },
  );
}

export function render(root, { me, id }) {
  const marker = h("span", { class: "live" });
  const title = h("h1", {}, "Instance ", h("span", { class: "mono", text: id }));
  const summary = h("div", { id: "instance-summary", class: "summary" });
  const actions = h("div", { id: "actions", class: "actions" });
  const graphBox = h("div", { id: "graph", class: "graph-box" });
  const pending = h("div", { id: "pending", class: "columns" });
  const family = h("div", { id: "family" });
  const dataBox = h("div", { id: "data" });
  const notifications = h("div", { id: "notifications" });
  const timeline = h("ol", { id: "timeline", class: "timeline" });
  const problem = h("div", { id: "problem" });
  root.append(
    h("div", { class: "title" }, title, marker),
    problem,
    h("section", { class: "card" }, summary, actions),
    section("Graph", graphBox),
    section("Pending", pending),
    section("Parent and children", family),
    section("Data", dataBox),
    section("Notifications", notifications),
    section("History", timeline),
  );

  let graph = null;
  let graphKey = "";
  let seen = 0;
  let history = [];

  async function act(kind) {
    const doc = current;
    const cancel = kind === "cancel";
    const answer = await confirmAction({
      title: cancel ? "Cancel this instance?" : "Retry this instance?",
      message: cancel
        ? `${doc.workflow} ${id} (state ${doc.state}) will be cancelled; its finished steps are compensated.`
        : `${doc.workflow} ${id} resumes its failed task or compensation in state ${doc.state}.`,
      action: cancel ? "Cancel instance" : "Retry",
      withReason: cancel,
    });
    if (!answer.ok) return;
    try {
      await api(`/instances/${encodeURIComponent(id)}/${kind}`, { method: "POST", body: cancel && answer.reason ? { reason: answer.reason } : {} });
      flash(cancel ? "Cancellation sent." : "Retry sent.");
      restart();
    } catch (error) {
      flash(`${cancel ? "Cancel" : "Retry"} refused: ${error.message}`, "bad");
    }
  }

  let current = null;
  let finishedAt = null;

  function showActions(doc) {
    clear(actions);
    if (!can(me, "operate")) return;
    if (!isFinished(doc)) actions.append(h("button", { type: "button", id: "cancel", class: "danger", text: "Cancel…", onclick: () => act("cancel") }));
    // what the engine's retry resumes: a halted task or a failed compensation
    if (doc.halted || (doc.status === "failed" && doc.compensating_to)) {
      actions.append(h("button", { type: "button", id: "retry", class: "primary", text: "Retry…", onclick: () => act("retry") }));
    }
  }

  function showSummary(doc) {
    const field = (name, value) => h("div", { class: "field" }, h("span", { class: "label", text: name }), h("span", { class: "value" }, value));
    clear(summary).append(
      field("Workflow", h("a", { href: `#/workflows/${encodeURIComponent(doc.workflow)}`, text: `${doc.workflow}${doc.version ? ` v${doc.version}` : ""}` })),
      field("State", h("span", { id: "instance-state", class: "state", text: doc.state ?? "—" })),
      field("Status", h("span", { id: "instance-status" }, badge(doc.status))),
      field("Created", when(doc.created_at)),
      field("Updated", when(doc.updated_at)),
    );
    if (doc.halted) summary.append(field("Halted", "yes: a task failed and waits for a retry"));
    if (doc.reason) summary.append(field("Reason", doc.reason));
    const error = doc.error;
    if (error) {
      const text = typeof error === "string" ? error : error.text || `${error.error_type || "error"}: ${error.message || ""}`;
      summary.append(h("div", { id: "instance-error", class: "error-line" }, `Last failure: ${text}`));
      if (error.traceback) summary.append(h("details", { class: "traceback" }, h("summary", { text: "Traceback" }), h("pre", { text: error.traceback })));
    }
  }

  function showPending(doc) {
    const compensations = doc.compensations_pending ?? doc.pending_compensations ?? [];
    const parked = doc.parked ?? asList(doc.parked_events);
    const timer = (t) => (typeof t === "object" ? `${t.event ?? "timer"} due ${when(t.due)}` : String(t));
    const event = (e) => (typeof e === "object" ? `${e.type ?? "?"} (${e.id ?? ""}) at ${when(e.at)}` : String(e));
    const undo = (state) => `undo the step of state ${state}`;
    clear(pending).append(
      h("div", { id: "pending-compensations" }, h("h3", { text: "Compensations" }), list([...compensations].reverse(), undo, "None pending.")),
      h("div", { id: "parked" }, h("h3", { text: "Parked events" }), list(parked, event, "None parked.")),
      h("div", { id: "timers" }, h("h3", { text: "Timers" }), list(asList(doc.timers), timer, "No timer.")),
    );
    if (doc.in_flight && doc.in_flight.length) {
      pending.append(h("div", {}, h("h3", { text: "Running now" }), list(doc.in_flight, (st) => `the task of state ${st}`, "")));
    }
  }

  function showFamily(doc) {
    const parent = doc.parent && typeof doc.parent === "object" ? doc.parent.instance : doc.parent;
    const step = doc.parent && typeof doc.parent === "object" ? doc.parent.step : null;
    const children = Object.entries(doc.children || {});
    clear(family).append(
      h("p", { id: "parent" }, "Parent: ", parent ? [link(parent), step ? ` (its step ${step})` : ""] : "none"),
      children.length
        ? h("ul", { class: "plain", id: "children" }, children.map(([childStep, child]) => h("li", {}, link(String(child)), ` for step ${childStep}`)))
        : empty("No child."),
    );
  }

  async function showGraph(doc) {
    const key = `${doc.state}|${history.length}`;
    if (key === graphKey) return;
    if (!graph) {
      try {
        const definition = await api(`/workflows/${encodeURIComponent(doc.workflow)}${doc.version ? `?version=${encodeURIComponent(doc.version)}` : ""}`);
        graph = definition.graph || definition;
      } catch (error) {
        clear(graphBox).append(errorBox(error));
        return;
      }
    }
    graphKey = key;
    clear(graphBox).append(drawGraph(graph, { current: doc.state, ...pathOf(history) }));
  }

  async function tick() {
    const path = `/instances/${encodeURIComponent(id)}`;
    let doc;
    try {
      doc = await api(path);
    } catch (error) {
      clear(problem).append(errorBox(error));
      return !(error.status === 404 || error.status === 403);
    }
    clear(problem);
    current = doc;
    const [hist, notes] = await Promise.allSettled([api(`${path}/history`), api(`${path}/notifications`)]);
    if (hist.status === "fulfilled") {
      history = hist.value.history || hist.value.entries || (Array.isArray(hist.value) ? hist.value : []);
      for (const entry of history.slice(seen)) timeline.append(timelineEntry(entry));
      seen = Math.max(seen, history.length);
    }
    showSummary(doc);
    showActions(doc);
    showPending(doc);
    showFamily(doc);
    clear(dataBox).append(json(doc.data ?? doc.context ?? {}));
    if (notes.status === "fulfilled") {
      clear(notifications).append(notificationsTable(notes.value.notifications || []));
    } else clear(notifications).append(errorBox(notes.reason));
    await showGraph(doc);
    // live while it runs, and a little after: its notifications' outcomes come later
    if (!isFinished(doc)) finishedAt = null;
    else if (finishedAt === null) finishedAt = Date.now();
    const sending = notes.status === "fulfilled" && (notes.value.notifications || []).some((n) => !DONE.has(n.status));
    return finishedAt === null || sending || Date.now() - finishedAt < AFTER_END;
  }

  let stop = () => {};
  function restart() {
    stop();
    stop = poll(tick, { status: liveMarker(marker) });
  }
  restart();
  return () => stop();
}
