// timeline.js — a customer's history across channels, newest at the bottom.
//
// Entries come straight from customers and bridges: every piece of their text is rendered with
// text nodes (dom.h), never parsed as HTML, and nothing in an entry ever becomes a link. Each
// piece is also its own bidi island (dir="auto", CSS unicode-bidi isolate/plaintext): a
// right-to-left name or a stray control in one cannot reorder the text around it.

import { CHANNEL_LABEL, clock, h, shortId } from "./dom.js";
import { downloadAttachment } from "./session.js";

const KIND_LABEL = {
  "call.offered": "Incoming call",
  "call.ended": "Call ended",
  "callback.requested": "Callback requested",
  "conversation.ended": "Customer ended the chat", // as the case header says
};

/** A customer's timeline: entries (ordered, de-duplicated by id) and paging state. */
export class Timeline {
  constructor(page) {
    this.entries = [];
    this.ids = new Set();
    this.start = 0;
    this.total = 0;
    this.marks = 0; // entries changed in place (mark): a view rebuilds what it shows
    if (page) this.setPage(page.timeline || [], page.start ?? 0, page.total ?? 0);
  }

  /** Take the latest page (from an offer, an accept or hello), keeping older pages already
   *  loaded in front of it. */
  setPage(entries, start, total) {
    const fresh = new Set(entries.map((e) => e.id));
    const firstTs = entries.length ? entries[0].ts : Infinity;
    const older = this.start < start
      ? this.entries.filter((e) => !fresh.has(e.id) && e.ts <= firstTs) : [];
    this.entries = [...older, ...entries];
    this.ids = new Set(this.entries.map((e) => e.id));
    this.start = older.length ? this.start : start;
    this.total = Math.max(total, this.entries.length);
  }

  /** Add older entries (a history.fetch page) in front. */
  prepend(page) {
    const fresh = page.timeline.filter((e) => !this.ids.has(e.id));
    this.entries = [...fresh, ...this.entries];
    for (const e of fresh) this.ids.add(e.id);
    this.start = page.start;
    this.total = Math.max(page.total, this.total);
  }

  /** Set fields of a loaded entry (a reply's ``delivered``); false if it is not loaded. */
  mark(id, fields) {
    const entry = this.entries.find((e) => e.id === id);
    if (!entry) return false;
    Object.assign(entry, fields);
    this.marks += 1;
    return true;
  }

  /** Add a live entry at the end; false if it was already there. */
  add(entry) {
    if (!entry || !entry.id || this.ids.has(entry.id)) return false;
    this.ids.add(entry.id);
    this.entries.push(entry);
    this.total += 1;
    return true;
  }

  get hasOlder() {
    return this.start > 0;
  }
}

// LRO/RLO (U+202D, U+202E) force a direction on all that follows, letter by letter:
// "invoice\u202efdp.exe" reads "invoiceexe.pdf". Nothing a customer writes needs them, so what
// the console shows drops them; marks (U+200E/F), embeddings and isolates stay — editors for
// right-to-left scripts insert them, and they reorder whole runs only inside their own isolated
// element.
const OVERRIDES = /[\u202d\u202e]/g;

/** Customer or bridge text as shown: without direction overrides. */
export function shown(text) {
  return String(text ?? "").replace(OVERRIDES, "");
}

/** A customer's one-line text (a name, a subject) inside other text: an isolated run. */
export function bdi(text, props) {
  return h("bdi", { dir: "auto", ...props }, shown(text));
}

// Who wrote an entry. The customer's own message without a name of its own (a chat before the
// visitor gave theirs, a mail from a bare address) is theirs by their name now; a stranger's
// mail on the case (an address that is not the customer's) by its address.
function who(entry, known, name) {
  if (entry.dir === "in") return entry.from || (isStranger(entry, known) ? entry.addr : name) || "Customer";
  if (entry.dir === "out") return entry.from || entry.agent || "Agent";
  return entry.from || entry.agent || "Note";
}

/** "the full text was 250,000 characters long" — the mail the adapter cut. */
function truncatedNote(entry) {
  const full = Number(entry.full_length);
  const size = Number.isFinite(full) && full > 0 ? `${full.toLocaleString("en-US")} characters long`
    : "longer than could be kept";
  return h("p", { class: "tl-truncated", testid: "timeline-truncated" },
    h("span", { class: "tl-truncated-label" }, "Message truncated"),
    ` — the full text was ${size}; only the beginning is shown here.`);
}

/** A reply the customer never got (the mail server refused it for good): a warning for the
 *  agents, who would otherwise believe the customer has their answer. Never shown to the
 *  customer (the chat widget shows only messages in and out). */
function deliveryFailed(entry) {
  const to = typeof entry.to === "string" && entry.to ? entry.to : "";
  const reason = typeof entry.reason === "string" ? entry.reason.replace(/\.$/, "") : "";
  // (its box is the truncation notice's: the warning look app.css already has)
  const parts = [h("p", { class: "tl-truncated tl-warning", testid: "timeline-delivery-failed" },
    h("span", { class: "tl-truncated-label" }, "Reply not delivered"),
    to ? [" to ", bdi(to)] : "",
    reason ? [": ", bdi(reason)] : "",
    ". The customer did not get it.")];
  if (entry.reply_text) {
    parts.push(h("p", { class: "tl-text", dir: "auto" }, "The reply: “", shown(entry.reply_text), "”"));
  }
  return parts;
}

function body(entry) {
  if (entry.kind === "delivery.failed") return deliveryFailed(entry);
  const parts = [];
  if (entry.subject) parts.push(h("p", { class: "tl-subject", dir: "auto" }, shown(entry.subject)));
  const label = KIND_LABEL[entry.kind];
  if (label) parts.push(h("p", { class: "tl-event" }, label));
  if (entry.kind === "wrapup") {
    parts.push(h("p", { class: "tl-event" }, "Wrapped up", entry.disposition ? ` · ${entry.disposition}` : ""));
  } else if (entry.kind === "transfer") {
    parts.push(h("p", { class: "tl-event" }, "Transferred", entry.to ? ` to ${entry.to_name || entry.to}` : ""));
  } else if (entry.kind === "followup.cancelled") {
    parts.push(h("p", { class: "tl-event", testid: "timeline-followup-cancelled" },
      typeof entry.due === "number" ? `Follow-up for ${clock(entry.due / 1000)} cancelled` : "Follow-up cancelled"));
  } else if (entry.kind === "reopened") {
    parts.push(h("p", { class: "tl-event", testid: "timeline-reopened" }, "Reopened to follow up"));
  } else if (entry.kind === "followup") {
    parts.push(h("p", { class: "tl-event", testid: "timeline-followup" }, "Follow-up set",
      typeof entry.due === "number" ? ` for ${clock(entry.due / 1000)}` : ""));
  }
  if (entry.text && !(label && entry.text === label)) {
    parts.push(h("p", { class: "tl-text", testid: "timeline-text", dir: "auto" }, shown(entry.text)));
  }
  if (entry.truncated) parts.push(truncatedNote(entry));
  if (Array.isArray(entry.attachments) && entry.attachments.length) {
    parts.push(h("ul", { class: "tl-attachments", "aria-label": "Attachments" },
      entry.attachments.map((a) => h("li", null, bdi(a.name || "attachment"),
        a.size ? ` (${Math.ceil(a.size / 1024)} KB)` : "", a.id ? saveButton(a) : "", openLink(a)))));
  }
  return parts;
}

// a file the bridge's platform keeps (a WhatsApp photo): opened, when the agent asks, in a tab
// of its own that learns nothing of the console. A button, never a link built from what came in
// (dom.js builds none); https only, as the server accepts it, and the host is shown.
function openLink(a) {
  let url;
  try {
    url = new URL(a.url);
  } catch {
    return "";
  }
  if (url.protocol !== "https:") return "";
  return h("button", { type: "button", class: "link-button tl-save", testid: "attachment-open",
    title: url.host, "aria-label": `Open ${a.name || "attachment"} from ${url.host} in a new tab`,
    onclick: () => window.open(url.href, "_blank", "noopener,noreferrer") }, `Open (${url.host})`);
}

// a kept file: saved under its name by the browser, never opened in the console
function saveButton(a) {
  const button = h("button", { type: "button", class: "link-button tl-save", testid: "attachment-save",
    "aria-label": `Save ${a.name || "attachment"}` }, "Save");
  const error = h("span", { class: "form-error", role: "status", testid: "attachment-error", hidden: true });
  button.addEventListener("click", async () => {
    button.disabled = true;
    error.hidden = true;
    try {
      await downloadAttachment(a.id, a.name);
    } catch (e) {
      error.textContent = ` ${e.message}`;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  return h("span", null, " ", button, error);
}

function entryNode(entry, currentCase, caseChannel, group, known, name) {
  // agents' replies carry no channel of their own: they went out on their case's channel
  const channel = entry.ch && entry.ch !== "note" ? entry.ch : caseChannel;
  const ch = entry.dir === "note" ? "note" : channel;
  const dirLabel = entry.dir === "in" ? "from customer" : entry.dir === "out" ? "to customer" : "internal";
  return h("li", {
    class: `tl-entry tl-${entry.dir} ${group === currentCase ? "tl-this" : "tl-other"}${entry.kind === "delivery.failed" ? " tl-failed" : ""}`,
    testid: "timeline-entry",
    data: { channel: ch || "", dir: entry.dir || "", entry: entry.id || "", kind: entry.kind || "" },
  },
  h("div", { class: "tl-meta" },
    entry.kind === "delivery.failed"
      ? h("span", { class: "badge visitor-left-badge tl-failed-badge" }, "Not delivered")
      : h("span", { class: `badge ch-${ch}` }, CHANNEL_LABEL[ch] || ch || "?"),
    h("bdi", { class: "tl-who", dir: "auto" }, shown(who(entry, known, name))),
    stranger(entry, known),
    h("span", { class: "visually-hidden" }, `, ${dirLabel}, `),
    h("time", { class: "tl-time", datetime: new Date(entry.ts * 1000).toISOString() }, clock(entry.ts)),
    delivered(entry)),
  body(entry));
}

/** A reply its channel confirmed: the mail server accepted it, or the bridge delivered it. */
function delivered(entry) {
  if (entry.dir !== "out" || typeof entry.delivered !== "number") return null;
  const by = entry.via === "email" ? "Accepted by the mail server" : "Delivered by the channel";
  return h("span", { class: "tl-delivered", testid: "timeline-delivered", title: `${by} at ${clock(entry.delivered)}` },
    "✓ Delivered");
}

/** An email that came from an address that is not the customer's (someone else who had the
 *  case's reply address): say whose it is. Replies still go to the customer's own address. */
function isStranger(entry, known) {
  const addr = entry.dir === "in" && entry.ch === "email" && typeof entry.addr === "string" ? entry.addr : "";
  return Boolean(addr && known && !known.has(addr.toLowerCase()));
}

function stranger(entry, known) {
  if (!isStranger(entry, known)) return null;
  const addr = entry.addr;
  return h("span", { class: "tl-stranger", testid: "timeline-stranger",
    title: "Not one of this customer's addresses: replies still go to the customer's own address" },
  h("bdi", null, addr), " · not this customer");
}

/** The customer's email addresses (identities and claims), lowercased. */
export function knownEmails(customer) {
  const out = new Set();
  for (const i of [...(customer.identities || []), ...(customer.claims || [])]) {
    if (typeof i === "string" && i.startsWith("email:")) out.add(i.slice(6).toLowerCase());
  }
  return out;
}

/** Each case's first moment in the loaded history: which cases came before the open one. */
function caseStarts(entries) {
  const starts = new Map();
  for (const e of entries) {
    if (!e.case || typeof e.ts !== "number") continue;
    if (!starts.has(e.case) || e.ts < starts.get(e.case)) starts.set(e.case, e.ts);
  }
  return starts;
}

function caseLabel(caseId, currentCase, starts) {
  if (caseId === currentCase) return "This case";
  const mine = starts.get(currentCase);
  const theirs = starts.get(caseId);
  if (mine === undefined || theirs === undefined) return "Other case";
  return theirs <= mine ? "Earlier case" : "Later case";
}

function divider(caseId, currentCase, channel, starts) {
  const label = [caseLabel(caseId, currentCase, starts), CHANNEL_LABEL[channel] || channel, shortId(caseId)]
    .filter(Boolean).join(" · ");
  return h("li", { class: "tl-divider", testid: "timeline-divider", "aria-hidden": "true" }, h("span", null, label));
}

/**
 * Render `timeline` into the list `ol` for the case `currentCase`. New entries at the end are
 * appended (so the list, a live region, announces only them); anything else re-renders the
 * list. Keeps the reader's place: stuck to the bottom if they were there, otherwise the same
 * distance from the bottom. `known`: the customer's email addresses (a mail from any other is a
 * stranger's); `name`: the customer's name now.
 */
export function renderTimeline(ol, timeline, currentCase, known = null, name = "") {
  const scroller = ol.parentElement;
  const fromBottom = scroller ? scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight : 0;
  const channels = new Map(); // case id -> its channel, from the entries that name one
  for (const e of timeline.entries) {
    if (e.ch && e.ch !== "note" && !channels.has(e.case)) channels.set(e.case, e.ch);
  }
  const shown = ol.shownIds || [];
  const entries = timeline.entries;
  const appendOnly = ol.shownCase === currentCase && ol.shownName === name && ol.shownMarks === timeline.marks
    && shown.length <= entries.length && shown.every((id, i) => entries[i].id === id);
  const from = appendOnly ? shown.length : 0;
  const nodes = [];
  const starts = caseStarts(entries);
  // an entry that names no case (older transfer notes) opens no divider: it stays with the
  // case shown above it
  let lastCase = null;
  for (let i = from - 1; i >= 0 && !lastCase; i -= 1) lastCase = entries[i].case || null;
  for (const e of entries.slice(from)) {
    if (e.case && e.case !== lastCase) {
      nodes.push(divider(e.case, currentCase, channels.get(e.case), starts));
      lastCase = e.case;
    }
    nodes.push(entryNode(e, currentCase, channels.get(e.case || lastCase), lastCase, known, name));
  }
  if (appendOnly) {
    ol.append(...nodes);
  } else {
    ol.setAttribute("aria-busy", "true"); // a rebuild is not news: don't read it all out
    ol.replaceChildren(...nodes);
    ol.removeAttribute("aria-busy");
  }
  ol.shownIds = entries.map((e) => e.id);
  ol.shownCase = currentCase;
  ol.shownName = name; // a customer who gives their name later: their earlier lines say it too
  ol.shownMarks = timeline.marks;
  if (scroller) {
    scroller.scrollTop = fromBottom < 40 ? scroller.scrollHeight
      : scroller.scrollHeight - scroller.clientHeight - fromBottom;
  }
}

/** The text that best describes a case for an offer card: its subject, else first message. */
export function caseSummary(caseView, timeline) {
  if (caseView.subject) return shown(caseView.subject);
  const first = timeline.entries.find((e) => e.case === caseView.id && e.dir === "in" && e.text);
  if (first) {
    const text = shown(first.text);
    return text.length > 240 ? `${text.slice(0, 240)}…` : text;
  }
  return caseView.channel === "voice" ? "Incoming call" : "(no message)";
}
