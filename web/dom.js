// dom.js — the one way Switchboard's pages build DOM.
//
// Guarantee: every string passed as a child becomes a Text node (createTextNode), and attribute
// values are set with setAttribute — no HTML parsing anywhere. URL-bearing and script-bearing
// attributes (href, src, style, on*, ...) are refused outright, so customer text can never
// become markup, a link or a style. Event handlers are attached as functions only.

const FORBIDDEN = new Set([
  "href", "src", "srcset", "srcdoc", "action", "formaction", "style", "xlink:href",
  "poster", "background", "innerhtml", "outerhtml",
]);

/**
 * h("button", {class: "primary", testid: "offer-accept", onclick: fn}, "Accept")
 * Props: class, text, testid (→ data-testid), data (→ data-* map), on<event> (function),
 * value/checked/disabled/hidden (as properties), anything else via setAttribute.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    const k = key.toLowerCase();
    if (FORBIDDEN.has(k)) throw new Error(`dom.h: attribute ${key} is not allowed`);
    if (k.startsWith("on")) {
      if (typeof value !== "function") throw new Error(`dom.h: ${key} must be a function`);
      el.addEventListener(k.slice(2), value);
    } else if (k === "class") {
      el.className = String(value);
    } else if (k === "text") {
      el.textContent = String(value);
    } else if (k === "testid") {
      el.setAttribute("data-testid", String(value));
    } else if (k === "data") {
      for (const [dk, dv] of Object.entries(value)) el.dataset[dk] = String(dv);
    } else if (k === "value" || k === "checked" || k === "disabled" || k === "hidden"
               || k === "selected") {
      el[k] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Append children: strings/numbers as text nodes, nodes as-is, arrays flattened. */
export function append(parent, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return parent;
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

/** "42 s", "3:05", "1:02:03" */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  const ss = String(s % 60).padStart(2, "0");
  if (m < 60) return `${m}:${ss}`;
  return `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${ss}`;
}

const TIME = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const DATE_TIME = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "numeric", minute: "2-digit",
});

/** A timestamp in seconds → "14:03" today, "Nov 3, 14:03" otherwise. */
export function clock(tsSeconds) {
  const d = new Date(tsSeconds * 1000);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? TIME.format(d) : DATE_TIME.format(d);
}

export const CHANNEL_LABEL = { chat: "Chat", email: "Email", voice: "Call", note: "Note" };

/** A short, readable form of a long id for display ("…9a7c"). */
export function shortId(id) {
  const s = String(id || "");
  return s.length > 8 ? `…${s.slice(-6)}` : s;
}

/** Exponential backoff with jitter: attempt 0 → 0.25–0.5 s, doubling, capped at maxMs. */
export function backoff(attempt, baseMs = 500, maxMs = 20000) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** attempt);
  return Math.round(ceiling * (0.5 + Math.random() / 2));
}
