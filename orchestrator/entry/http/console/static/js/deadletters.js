// Dead letters: what the engine could not use, with the reason; an inbox letter
// holding an event can be put back (Replay, operate scope, after confirmation).

import { api, can, withQuery } from "./api.js";
import { confirmAction } from "./confirm.js";
import { clear, empty, errorBox, flash, h, table, when } from "./dom.js";
import { liveMarker, poll } from "./live.js";

function replayable(letter) {
  if (typeof letter.replayable === "boolean") return letter.replayable;
  const event = letter.event;
  return letter.source === "inbox" && event && typeof event === "object" && typeof event.instance === "string";
}

export function render(root, { me }) {
  const marker = h("span", { class: "live" });
  const body = h("div", { id: "dead-letters" });
  root.append(h("div", { class: "title" }, h("h1", { text: "Dead letters" }), marker), h("section", { class: "card" }, body));
  const operator = can(me, "operate");

  async function replay(letter) {
    const event = letter.event || {};
    const answer = await confirmAction({
      title: "Replay this dead letter?",
      message: `Its event ${event.type || ""} goes back into the inbox of instance ${event.instance}; it leaves this list.`,
      action: "Replay",
    });
    if (!answer.ok) return;
    try {
      await api(`/dead-letters/${encodeURIComponent(letter.id)}/replay`, { method: "POST", body: {} });
      flash(`Dead letter ${letter.id} replayed.`);
      restart();
    } catch (error) {
      flash(`Replay refused: ${error.message}`, "bad");
    }
  }

  const columns = [
    { title: "Letter", cell: (l) => h("span", { class: "mono", text: l.id }) },
    { title: "When", cell: (l) => when(l.at) },
    { title: "Source", cell: (l) => l.source || "—" },
    {
      title: "Event",
      cell: (l) => {
        const event = l.event;
        if (!event || typeof event !== "object") return h("code", { text: String(event ?? "").slice(0, 200) });
        return h(
          "span",
          {},
          h("span", { class: "type", text: event.type || "?" }),
          event.instance ? [" for ", h("a", { href: `#/instances/${encodeURIComponent(event.instance)}`, class: "mono", text: event.instance })] : "",
        );
      },
    },
    { title: "Reason", cell: (l) => h("span", { class: "reason", text: l.reason || "" }) },
  ];
  if (operator) {
    columns.push({
      title: "",
      cell: (l) =>
        replayable(l)
          ? h("button", { type: "button", class: "replay primary", text: "Replay…", onclick: () => replay(l) })
          : h("span", { class: "muted", text: "cannot replay" }),
    });
  }

  const cursors = [null]; // the cursor of each page seen; the last is the one shown
  const pager = h("div", { class: "pager" });
  root.append(h("div", { class: "row" }, h("span", {}), pager));

  function showPager(next) {
    const previous = h("button", { type: "button", text: "← Previous", onclick: () => (cursors.pop(), restart()) });
    previous.disabled = cursors.length === 1;
    const more = h("button", { type: "button", text: "Next →", onclick: () => (cursors.push(next), restart()) });
    more.disabled = !next;
    clear(pager).append(previous, more);
  }

  async function tick() {
    try {
      const doc = await api(withQuery("/dead-letters", { cursor: cursors[cursors.length - 1] }));
      const letters = doc.dead_letters || [];
      clear(body).append(
        letters.length ? table(columns, letters, { rowAttrs: (l) => ({ dataset: { id: l.id } }) }) : empty("No dead letter."),
      );
      showPager(doc.next);
    } catch (error) {
      clear(body).append(errorBox(error));
      return !(error.status === 403);
    }
    return true;
  }

  let stop = () => {};
  function restart() {
    stop();
    stop = poll(tick, { interval: 5000, status: liveMarker(marker) });
  }
  restart();
  return () => stop();
}
