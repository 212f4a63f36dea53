// Overview: instances by status, failure rate, throughput (from two readings of
// `events_added` a known time apart), RQ queue depths, inbox lag by partition,
// dead letters and live appliers.

import { api } from "./api.js";
import { badge, clear, errorBox, h, section, table } from "./dom.js";
import { liveMarker, poll } from "./live.js";

function tile(label, value, id) {
  return h("div", { class: "tile", id }, h("div", { class: "tile-value", text: value }), h("div", { class: "tile-label", text: label }));
}

function percent(rate) {
  if (rate === null || rate === undefined) return "—";
  return `${(Number(rate) * 100).toFixed(1)} %`;
}

const n = (value) => String(value ?? 0);

/** Events per second between two readings {events, at (server seconds)}; null if unknown. */
export function throughput(before, after) {
  if (!before || !after || before.events === null || after.events === null) return null;
  const seconds = after.at - before.at;
  if (!(seconds > 0) || after.events < before.events) return null;
  return (after.events - before.events) / seconds;
}

export function render(root) {
  const marker = h("span", { class: "live" });
  const tiles = h("div", { id: "tiles", class: "tiles" });
  const statuses = h("div", { id: "by-status" });
  const queues = h("div", { id: "queues" });
  const lag = h("div", { id: "lag" });
  const problem = h("div", {});
  root.append(
    h("div", { class: "title" }, h("h1", { text: "Overview" }), marker),
    problem,
    tiles,
    h("div", { class: "columns" }, section("Instances by status", statuses), section("Queue depths", queues), section("Inbox lag by partition", lag)),
  );
  let last = null;
  let rate = null;

  async function tick() {
    let doc;
    try {
      doc = await api("/overview");
    } catch (error) {
      clear(problem).append(errorBox(error));
      return !(error.status === 403);
    }
    clear(problem);
    // events written to the inboxes (Redis 7+), else those the appliers counted as applied
    const events = doc.events_added ?? doc.events_applied ?? null;
    const reading = { events, at: Number(doc.at) };
    if (last) rate = throughput(last, reading);
    last = reading;
    const { total = 0, ...counts } = doc.instances || {};
    const inboxes = doc.inboxes || [];
    const maxLag = Math.max(0, ...inboxes.map((i) => Number(i.lag) || 0));
    const measuring = events === null ? "n/a" : "measuring…";
    clear(tiles).append(
      tile("events / s", rate === null ? measuring : rate.toFixed(1), "throughput"),
      tile("instances", n(total), "total"),
      tile("failure rate", percent(doc.failure_rate), "failure-rate"),
      tile("dead letters", n(doc.dead_letters), "dead-letter-count"),
      tile("inbox lag (max)", n(maxLag), "max-lag"),
      tile("appliers", n(doc.appliers), "appliers"),
    );
    clear(statuses).append(
      table(
        [
          { title: "Status", cell: ([s]) => badge(s) },
          { title: "Instances", cell: ([, count]) => n(count) },
        ],
        Object.entries(counts),
      ),
    );
    clear(queues).append(
      table(
        [
          { title: "Queue", cell: ([name]) => name },
          { title: "Queued", cell: ([, q]) => n(q.queued) },
          { title: "Running", cell: ([, q]) => n(q.started) },
          { title: "Failed", cell: ([, q]) => n(q.failed) },
          { title: "Scheduled", cell: ([, q]) => n(q.scheduled) },
        ],
        Object.entries(doc.queues || {}),
      ),
    );
    clear(lag).append(
      table(
        [
          { title: "Partition", cell: (i) => n(i.partition) },
          { title: "Not yet read", cell: (i) => n(i.lag) },
          { title: "Being applied", cell: (i) => n(i.pending) },
          { title: "Length", cell: (i) => n(i.length) },
        ],
        inboxes,
      ),
    );
    return true;
  }

  return poll(tick, { status: liveMarker(marker) });
}
