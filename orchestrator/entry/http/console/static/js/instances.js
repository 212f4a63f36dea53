// Instances: filters (workflow, state, status, business key) kept in the route's
// query, pages by the API's `next` cursor, live while the tab is visible.

import { api, withQuery } from "./api.js";
import { badge, clear, empty, errorBox, h, table, when } from "./dom.js";
import { liveMarker, poll } from "./live.js";

export const STATUSES = ["pending", "running", "compensating", "completed", "failed", "cancelled"];
const PAGE = 25;

function filtersForm(params, workflowNames) {
  const value = (name) => params.get(name) || "";
  const workflow = h("select", { id: "filter-workflow", name: "workflow" }, h("option", { value: "", text: "any workflow" }));
  for (const name of workflowNames) workflow.append(h("option", { value: name, text: name }));
  if (value("workflow") && !workflowNames.includes(value("workflow"))) {
    workflow.append(h("option", { value: value("workflow"), text: value("workflow") }));
  }
  workflow.value = value("workflow");
  const status = h("select", { id: "filter-status", name: "status" }, h("option", { value: "", text: "any status" }));
  for (const name of STATUSES) status.append(h("option", { value: name, text: name }));
  status.value = value("status");
  const state = h("input", { id: "filter-state", name: "state", value: value("state"), placeholder: "state", autocomplete: "off" });
  const key = h("input", { id: "filter-key", name: "key", value: value("key"), placeholder: "NAME=VALUE", autocomplete: "off" });
  const form = h(
    "form",
    { id: "filters", class: "filters" },
    h("label", {}, "Workflow", workflow),
    h("label", {}, "State", state),
    h("label", {}, "Status", status),
    h("label", {}, "Business key", key),
    h("button", { type: "submit", class: "primary", text: "Filter" }),
    h("a", { href: "#/instances", class: "button", text: "Clear" }),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [name, input] of Object.entries({ workflow, state, status, key })) {
      if (input.value.trim()) query.set(name, input.value.trim());
    }
    const text = query.toString();
    location.hash = text ? `#/instances?${text}` : "#/instances";
  });
  return form;
}

const columns = [
  {
    title: "Instance",
    cell: (i) => h("a", { href: `#/instances/${encodeURIComponent(i.id)}`, class: "mono", text: i.id }),
  },
  { title: "Workflow", cell: (i) => `${i.workflow}${i.version ? ` v${i.version}` : ""}` },
  { title: "State", cell: (i) => h("span", { class: "state", text: i.state ?? "—" }) },
  { title: "Status", cell: (i) => badge(i.status) },
  { title: "Updated", cell: (i) => when(i.updated_at ?? i.created_at) },
];

export function render(root, { params }) {
  const marker = h("span", { class: "live" });
  const count = h("span", { class: "muted", id: "instances-count" });
  const body = h("div", { id: "instances" });
  const pager = h("div", { class: "pager" });
  const head = h("div", { class: "title" }, h("h1", { text: "Instances" }), marker);
  const filters = h("div", {});
  root.append(head, filters, h("section", { class: "card" }, body, h("div", { class: "row" }, count, pager)));

  api("/workflows")
    .then((doc) => (doc.workflows || []).map((w) => (typeof w === "string" ? w : w.name)))
    .catch(() => [])
    .then((names) => filters.append(filtersForm(params, names)));

  const cursors = [null]; // the cursor of each page seen; the last is the one shown
  let stopPoll = () => {};

  function load() {
    stopPoll();
    stopPoll = poll(
      async () => {
        const path = withQuery("/instances", {
          workflow: params.get("workflow"),
          state: params.get("state"),
          status: params.get("status"),
          key: params.get("key"),
          limit: PAGE,
          cursor: cursors[cursors.length - 1],
        });
        try {
          const doc = await api(path);
          show(doc);
        } catch (error) {
          clear(body).append(errorBox(error));
          if (error.status && error.status < 500) return false; // bad filter: no point polling
        }
        return true;
      },
      { status: liveMarker(marker) },
    );
  }

  function show(doc) {
    const rows = doc.instances || [];
    clear(body).append(rows.length ? table(columns, rows, { rowAttrs: (i) => ({ dataset: { id: i.id, status: i.status } }) }) : empty("No instance matches."));
    count.textContent = `page ${cursors.length} · ${rows.length} shown`;
    clear(pager);
    const previous = h("button", { type: "button", id: "page-previous", text: "← Previous" });
    previous.disabled = cursors.length === 1;
    previous.addEventListener("click", () => {
      cursors.pop();
      load();
    });
    const next = h("button", { type: "button", id: "page-next", text: "Next →" });
    next.disabled = !doc.next;
    next.addEventListener("click", () => {
      cursors.push(doc.next);
      load();
    });
    pager.append(previous, next);
  }

  load();
  return () => stopPoll();
}
