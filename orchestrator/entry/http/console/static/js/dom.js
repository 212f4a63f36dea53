// Building the page without ever parsing data as HTML: text goes in with
// textContent (createTextNode), attributes with setAttribute, so whatever an
// instance's data holds is shown as written and never runs.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") el.textContent = String(value);
    else if (name === "class") el.setAttribute("class", value);
    else if (name.startsWith("on")) {
      // handlers as functions only: an "on…" attribute would be inline script
      if (typeof value === "function") el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("a", {href: "#/x", text: name}, child, ...). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, same shape as h(). */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Unix seconds as local date and time, or "—". */
export function when(seconds) {
  if (seconds === null || seconds === undefined || seconds === "") return "—";
  const date = new Date(Number(seconds) * 1000);
  if (Number.isNaN(date.getTime())) return String(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

export function badge(status) {
  const text = status || "unknown";
  return h("span", { class: `badge status-${text.replace(/[^a-z_-]/gi, "")}`, text });
}

export function json(value) {
  return h("pre", { class: "json", text: JSON.stringify(value, null, 2) });
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", { text: title }), ...children);
}

/** A table: columns [{title, cell(row) -> node|string}], rows. */
export function table(columns, rows, options = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { text: c.title })));
  const body = rows.map((row) =>
    h("tr", options.rowAttrs ? options.rowAttrs(row) : {}, columns.map((c) => h("td", {}, c.cell(row)))),
  );
  return h("table", { class: options.class || "grid" }, h("thead", {}, head), h("tbody", {}, body));
}

export function empty(text) {
  return h("p", { class: "muted empty", text });
}

export function errorBox(error) {
  const field = error && error.field ? ` (field: ${error.field})` : "";
  return h("p", { class: "error", role: "alert", text: `${error.message || error}${field}` });
}

/** Shows a short message at the top of the page for a few seconds. */
export function flash(text, kind = "ok") {
  const box = document.getElementById("flash");
  box.textContent = text;
  box.className = `flash ${kind}`;
  box.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => {
    box.hidden = true;
  }, 6000);
}
