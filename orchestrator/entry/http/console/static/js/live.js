// Live pages: poll every ~2 s while the tab is visible; paused while hidden and
// refreshed at once when it shows again. One call at a time: a slow answer is
// never overtaken by the next poll.

export const INTERVAL = 2000;

/** Calls `tick()` now and every `interval` ms; `tick` may return false to stop.
 * Returns a function that stops it. `status(text)` is told when it pauses or runs. */
export function poll(tick, { interval = INTERVAL, status = () => {} } = {}) {
  let timer = null;
  let stopped = false;
  let running = false;

  async function run() {
    timer = null;
    if (stopped) return;
    if (document.hidden) {
      status("paused");
      return;
    }
    running = true;
    let again = true;
    try {
      again = (await tick()) !== false;
    } finally {
      running = false;
    }
    if (!again) {
      status("stopped");
      stopped = true;
      return;
    }
    status("live");
    if (!stopped) timer = setTimeout(run, interval);
  }

  function visible() {
    if (stopped) return;
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
      status("paused");
    } else if (!timer && !running) {
      run();
    }
  }

  document.addEventListener("visibilitychange", visible);
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", visible);
  };
}

/** A small "live" marker a page shows next to its title. */
export function liveMarker(el) {
  return (state) => {
    el.dataset.live = state;
    el.textContent =
      state === "live"
        ? `live · updated ${new Date().toLocaleTimeString()}`
        : state === "paused"
          ? "paused (tab hidden)"
          : "";
  };
}
