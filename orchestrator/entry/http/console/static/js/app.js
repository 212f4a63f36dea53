// The console's shell: sign-in, the header, and hash routes to the pages.
// Each page is a module whose render(main, ctx) returns a function that stops it
// (its polling), called when the route changes.

import { ApiError, api, forgetToken, setToken, token } from "./api.js";
import { clear, errorBox, flash, h } from "./dom.js";
import * as deadLetters from "./deadletters.js";
import * as instance from "./instance.js";
import * as instances from "./instances.js";
import * as overview from "./overview.js";
import * as workflows from "./workflows.js";

const main = () => document.getElementById("main");
let me = null;
let stop = () => {};

function parse(hash) {
  const [path, query = ""] = hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query) };
}

function route() {
  const { parts, params } = parse(location.hash);
  const [page = "instances", id = null] = parts;
  if (page === "instances" && id) return { page: "instances", module: instance, id, params };
  const pages = {
    instances,
    "dead-letters": deadLetters,
    workflows,
    overview,
  };
  return { page, module: pages[page] || instances, id, params };
}

function showWho() {
  const signedIn = Boolean(me);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  document.getElementById("who-name").textContent = signedIn ? me.name : "";
  document.getElementById("who-scope").textContent = signedIn ? me.scope : "";
}

function signIn(message) {
  stop();
  stop = () => {};
  me = null;
  showWho();
  const root = clear(main());
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "paste an API token",
  });
  const problem = h("div", { id: "sign-in-error" });
  if (message) problem.append(errorBox({ message }));
  const form = h(
    "form",
    { id: "sign-in", class: "card narrow" },
    h("h1", { text: "Sign in" }),
    h("p", {
      class: "muted",
      text: "Paste an API token made with `orchestrator tokens create NAME --scope read|operate|admin`. It is kept in this tab only.",
    }),
    h("label", {}, "Token", input),
    problem,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: "Sign in" })),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(problem);
    const value = input.value.trim();
    if (!value) return;
    try {
      me = await api("/me", { tokenValue: value });
    } catch (error) {
      problem.append(errorBox(error.status === 401 ? { message: "This token is not valid (unknown, revoked or mistyped)." } : error));
      return;
    }
    setToken(value);
    input.value = "";
    showWho();
    if (!location.hash || location.hash.startsWith("#/signin")) location.hash = "#/instances";
    else render();
  });
  root.append(form);
  input.focus();
}

function render() {
  stop();
  stop = () => {};
  if (!me) return;
  const { page, module, id, params } = route();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
  const root = clear(main());
  try {
    stop = module.render(root, { me, id, params }) || (() => {});
  } catch (error) {
    root.append(errorBox(error));
  }
}

async function start() {
  document.getElementById("sign-out").addEventListener("click", () => {
    forgetToken();
    signIn();
    flash("Signed out.");
  });
  window.addEventListener("console:signed-out", (event) => signIn(`Signed out: ${event.detail}`));
  window.addEventListener("hashchange", () => (me ? render() : null));
  if (!token()) return signIn();
  try {
    me = await api("/me");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return; // the signed-out event shows the form
    clear(main()).append(errorBox(error));
    return;
  }
  showWho();
  render();
}

start();
