// Workflows: each loaded workflow with its versions and its graph.

import { api } from "./api.js";
import { clear, empty, errorBox, h } from "./dom.js";
import { drawGraph } from "./graph.js";

function versionsOf(doc) {
  const versions = doc.versions || [];
  return versions.map((v) => (typeof v === "object" ? v.version ?? JSON.stringify(v) : v));
}

async function card(name) {
  const box = h("div", { class: "graph-box" }, h("p", { class: "muted", text: "Loading…" }));
  const versions = h("span", { class: "muted versions" });
  const el = h(
    "section",
    { class: "card workflow", dataset: { workflow: name } },
    h("h2", {}, h("a", { href: `#/workflows/${encodeURIComponent(name)}`, text: name }), " ", versions),
    box,
  );
  api(`/workflows/${encodeURIComponent(name)}`)
    .then((doc) => {
      const list = versionsOf(doc);
      versions.textContent = list.length ? `versions ${list.join(", ")}` : "";
      if (doc.version) versions.textContent += ` · showing v${doc.version}`;
      clear(box).append(drawGraph(doc.graph || doc));
    })
    .catch((error) => clear(box).append(errorBox(error)));
  return el;
}

export function render(root, { id }) {
  root.append(h("div", { class: "title" }, h("h1", { text: id ? `Workflow ${id}` : "Workflows" })));
  const body = h("div", { id: "workflows" });
  root.append(body);
  if (id) {
    card(id).then((el) => body.append(el, h("p", {}, h("a", { href: `#/instances?workflow=${encodeURIComponent(id)}`, text: `Instances of ${id}` }))));
    return () => {};
  }
  api("/workflows")
    .then(async (doc) => {
      const names = (doc.workflows || []).map((w) => (typeof w === "string" ? w : w.name));
      if (!names.length) body.append(empty("No workflow is loaded."));
      for (const name of names) body.append(await card(name));
    })
    .catch((error) => body.append(errorBox(error)));
  return () => {};
}
