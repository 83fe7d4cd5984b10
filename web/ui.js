// ui.js — pieces both consoles share: the connection banner and indicator, toasts, the
// screen-reader announcer and the sign-out button.

import { h } from "./dom.js";

/**
 * A status menu that applies only where the user stops. A closed <select> stepped through with
 * the arrow keys changes (and fires "change") at every step: from Offline, ArrowUp twice went
 * through Away to Available, and Lunch by way of Away handed every ringing offer on. Arrow steps
 * wait for Enter, Tab (blur) or a second's pause; a choice made with the mouse, or from the open
 * list, applies at once. `apply(value)` is called with the value stopped on.
 */
export function statusMenu(props, apply) {
  let stepped = false;
  let settle = null;
  let select = null;
  const run = () => {
    clearTimeout(settle);
    stepped = false;
    apply(select.value);
  };
  select = h("select", { ...props,
    onkeydown: (ev) => {
      if (["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Home", "End", "PageUp", "PageDown"].includes(ev.key)) {
        stepped = true;
      } else if (ev.key === "Enter" && stepped) {
        run();
      }
    },
    onchange: () => {
      if (!stepped) { run(); return; }
      clearTimeout(settle);
      settle = setTimeout(run, 1000);
    },
    onblur: () => { if (stepped) run(); } });
  return select;
}

/** A live region for screen readers; announce(text) speaks it once. */
export function announcer(politeness = "polite") {
  const el = h("div", { class: "visually-hidden", "aria-live": politeness, "aria-atomic": "true",
    testid: politeness === "assertive" ? "announcer-urgent" : "announcer" });
  return {
    el,
    announce(text) {
      el.textContent = "";
      // a fresh text node after clearing makes screen readers repeat identical messages
      setTimeout(() => { el.textContent = text; }, 30);
    },
  };
}

/**
 * Toasts: short messages stacked in `el`, wherever the page puts it (the supervisor view: fixed
 * bottom-left; the agent console: in its offers column, below the offers, so a toast never
 * covers an offer). kind: info | error | reminder (stays until dismissed).
 * Options: `testid`, `className`, `live` (the container's aria-live, or null when the page
 * announces the toasts itself), and `fallbackFocus()`: where focus goes when the last toast is
 * dismissed from the keyboard (otherwise it moves to the neighbouring toast's dismiss button).
 *
 * A message shown again while the same one is still up (same kind, title, text and testid: a
 * confirmation pressed three times, one error repeating) does not stack another toast: the one
 * up counts it ("×3"), is read out again and stays for a full timeout from the latest. Toasts
 * with actions or an `onDismiss`, and reminders, are each their own item and always stack.
 */
export function toaster({ testid = "toasts", className = "toasts", live = "polite", fallbackFocus } = {}) {
  const el = h("div", { class: className, "aria-live": live, testid });
  const up = new Map(); // repeatable message's key -> { toast, count, badge, spoken, timer, ms }
  function show(text, { kind = "info", title, testid, actions = [], timeoutMs, onDismiss } = {}) {
    const ms = timeoutMs ?? (kind === "reminder" ? 0 : kind === "error" ? 8000 : 4000);
    const key = kind === "reminder" || actions.length || onDismiss ? null
      : JSON.stringify([kind, title || "", String(text), testid || ""]);
    const same = key && up.get(key);
    if (same && same.toast.isConnected) {
      same.count += 1;
      same.badge.textContent = `×${same.count}`;
      same.spoken.textContent = ` (${same.count} times)`;
      same.badge.hidden = false;
      // a short pulse says it was refreshed (none under prefers-reduced-motion: app.css)
      same.toast.classList.remove("toast-again");
      void same.toast.offsetWidth; // restart the animation
      same.toast.classList.add("toast-again");
      clearTimeout(same.timer);
      if (same.ms) same.timer = setTimeout(same.drop, same.ms);
      return same.toast;
    }
    const close = h("button", { class: "icon-button", "aria-label": "Dismiss", testid: "toast-dismiss" }, "×");
    const badge = h("span", { class: "toast-count", testid: "toast-count", "aria-hidden": "true", hidden: true });
    const spoken = h("span", { class: "visually-hidden" });
    const toast = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status",
      testid: testid || `toast-${kind}` },
    h("div", { class: "toast-body" },
      title ? h("p", { class: "toast-title" }, title) : null,
      h("p", { class: "toast-text" }, text, spoken, badge),
      actions.length ? h("div", { class: "toast-actions" }, actions.map(([label, fn]) =>
        // an action that returns false could not be done: the notice stays
        h("button", { class: "link-button", onclick: () => { if (fn() === false) return; drop(); if (onDismiss) onDismiss(); } },
          label))) : null),
    close);
    const entry = { toast, count: 1, badge, spoken, timer: null, ms, drop };
    function drop() {
      clearTimeout(entry.timer);
      toast.remove();
      if (key && up.get(key) === entry) up.delete(key);
    }
    close.addEventListener("click", () => {
      // focus on the button that goes would fall to the page: keep it among the toasts
      const hadFocus = toast.contains(document.activeElement);
      const next = toast.nextElementSibling || toast.previousElementSibling;
      drop();
      if (hadFocus) {
        const to = next ? next.querySelector("[data-testid=toast-dismiss]") : fallbackFocus && fallbackFocus();
        if (to) to.focus();
      }
      if (onDismiss) onDismiss();
    });
    el.append(toast);
    if (key) up.set(key, entry);
    if (ms) entry.timer = setTimeout(drop, ms);
    return toast;
  }
  return { el, show };
}

/**
 * The banner shown while the connection is down, and a small state indicator for the top bar.
 * Hidden until the connection has been open once (the first connect shows "Connecting…" in
 * the indicator only).
 */
export function connectionUi(conn, onRecovered) {
  const text = h("span", { class: "banner-text", testid: "connection-banner-text" });
  const countdown = h("span", { class: "banner-countdown", "aria-hidden": "true" });
  const retry = h("button", { class: "banner-button", testid: "reconnect-now",
    onclick: () => conn.retryNow() }, "Retry now");
  const banner = h("div", { class: "banner", role: "alert", testid: "connection-banner", hidden: true },
    h("span", { class: "banner-icon", "aria-hidden": "true" }, "!"), text, countdown, retry);
  const indicator = h("span", { class: "conn conn-connecting", testid: "connection-state" }, "Connecting…");
  let ticker = null;
  let wasDown = false;
  conn.addEventListener("state", (ev) => {
    const { state, reason, retryAt, attempt } = ev.detail;
    clearInterval(ticker);
    indicator.className = `conn conn-${state}`;
    indicator.textContent = { open: "Live", connecting: "Connecting…", waiting: "Offline", stopped: "Signed out" }[state];
    if (state === "open") {
      banner.hidden = true;
      if (wasDown && onRecovered) onRecovered();
      wasDown = false;
      return;
    }
    if (state === "stopped" || (!conn.everOpen && attempt === 0)) {
      banner.hidden = true;
      return;
    }
    wasDown = true;
    banner.hidden = false;
    if (state === "connecting") {
      countdown.textContent = "Reconnecting…";
      retry.hidden = true;
      return;
    }
    const why = reason && reason !== "connection lost" ? ` (${reason})` : "";
    text.textContent = `Connection lost${why}. Your cases are safe on the server; `
      + "reconnecting automatically.";
    retry.hidden = false;
    const tick = () => {
      const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      countdown.textContent = `Next try in ${s} s.`;
    };
    tick();
    ticker = setInterval(tick, 1000);
  });
  return { banner, indicator };
}
