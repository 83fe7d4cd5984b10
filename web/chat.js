// chat.js — the customer chat widget.
//
// Embed: <script type="module" src="https://<switchboard>/static/chat.js"></script> and an
// element <div data-switchboard-chat data-workspace="acme"></div> (the workspace may also come
// from ?workspace= in the page's URL). For a signed-in visitor, the site's server also renders
// data-external-id / data-email / data-phone / data-name and data-identity-hash, made with its
// SWITCHBOARD_CHAT_IDENTITY_SECRET (docs/protocol.md); the demo page takes them from its URL.
// Without them, what the visitor types under "Your details" reaches agents as not verified.
// The widget connects to /ws/chat on the server it was loaded from, keeps its visitor token
// and unsent messages in localStorage — so a reload or a dropped connection resumes the same
// conversation — and re-sends unconfirmed messages with the same id after a reconnect (the
// server de-duplicates them).
//
// Everything shown is rendered as text (dom.h); nothing the other side sends becomes markup.

import { backoff, clock, h, replace } from "./dom.js";

const PROTOCOL = "switchboard.v1.json";
const SERVER = new URL(import.meta.url);
let widgets = 0;

function randomId() {
  const a = new Uint8Array(8);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function ensureStylesheet() {
  const url = new URL("chat.css", import.meta.url).href;
  if ([...document.styleSheets].some((s) => s.href === url)) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = url; // our own stylesheet's fixed URL; never data from the conversation
  document.head.append(link);
}

// The line the conversation shows for what the agent did (an `agent` frame, or welcome's).
function agentLine(f) {
  const name = (f && f.name) || "An agent";
  const text = f && { joined: `${name} joined the chat`, transferred: `${name} handed your chat to a colleague`,
    closed: `${name} closed the conversation. Write again any time.` }[f.event];
  return text ? { id: `agent-${f.event}-${f.ts}`, dir: "system", text, ts: f.ts } : null;
}

// Put welcome's "where things stand" line where it happened. Its own time when the server sends
// one; otherwise a "joined" line goes before that agent's first reply (they joined, then wrote)
// and anything else (closed, handed on) after everything: it is the latest move.
function placeAgentLine(messages, agent) {
  if (!agent) return;
  const ts = typeof agent.ts === "number" ? agent.ts : null;
  let at = messages.length;
  if (ts !== null) {
    // in whole milliseconds, the router's resolution for these lines: a message stamped in the
    // same millisecond came first (it is what made the agent rejoin)
    const ms = Math.floor(ts * 1000);
    const later = messages.findIndex((m) => typeof m.ts === "number" && Math.floor(m.ts * 1000) > ms);
    if (later >= 0) at = later;
  } else if (agent.event === "joined") {
    const name = agent.name || "Agent";
    let first = messages.findIndex((m) => m.dir === "out" && (m.from || "Agent") === name);
    if (first < 0) first = messages.findIndex((m) => m.dir === "out");
    if (first >= 0) at = first;
  }
  const before = messages[at - 1] || messages[at];
  const line = agentLine({ ...agent, ts: ts ?? (before && typeof before.ts === "number" ? before.ts : Date.now() / 1000) });
  if (line) messages.splice(at, 0, line);
}

export class ChatWidget {
  constructor(el, workspace, { title = "Chat with us", identity = null } = {}) {
    this.el = el;
    this.workspace = workspace;
    this.identity = identity; // signed by the site: {external_id?, email?, phone?, name?, identity_hash}
    this.key = `switchboard.chat.${workspace}`;
    this.n = ++widgets;
    this.ws = null;
    this.ref = 0;
    this.pending = new Map();
    this.attempt = 0;
    this.visitor = "";
    this.messages = [];
    this.ended = false;
    this.agent = null; // the agent's last move: {event: joined|transferred|closed, name}
    this.build(title);
    this.connect();
  }

  // -- storage: {token, details: {name, email, phone}, outbox: [{id, text, ts}]} -------------

  load() {
    try {
      return { details: {}, outbox: [], ...JSON.parse(localStorage.getItem(this.key) || "{}") };
    } catch {
      return { details: {}, outbox: [] };
    }
  }

  save(patch) {
    localStorage.setItem(this.key, JSON.stringify({ ...this.load(), ...patch }));
  }

  // -- view ------------------------------------------------------------------------------------

  build(title) {
    const id = (s) => `sbchat-${this.n}-${s}`;
    this.status = h("p", { class: "sbchat-status", testid: "chat-status" }, "Connecting…");
    this.log = h("ol", { class: "sbchat-log", role: "log", "aria-live": "polite", "aria-label": "Conversation",
      testid: "chat-messages", tabindex: "0" });
    this.waiting = h("p", { class: "sbchat-waiting", role: "status", testid: "chat-waiting", hidden: true },
      "Thanks — you're in the queue. An agent will reply here shortly. You can reload or come back later; ",
      "the conversation is kept.");
    this.error = h("p", { class: "sbchat-error", role: "alert", testid: "chat-error", hidden: true });
    const d = this.load().details;
    this.nameInput = h("input", { id: id("name"), autocomplete: "name", testid: "chat-name", maxlength: "200",
      value: d.name || "" });
    this.emailInput = h("input", { id: id("email"), type: "email", autocomplete: "email", testid: "chat-email",
      value: d.email || "" });
    this.phoneInput = h("input", { id: id("phone"), type: "tel", autocomplete: "tel", testid: "chat-phone",
      value: d.phone || "", placeholder: "+1 555 010 0000" });
    this.detailsNote = h("p", { class: "sbchat-hint", role: "status", testid: "chat-details-status" });
    this.summary = h("summary", { testid: "chat-details-toggle" },
      d.name || d.email || d.phone ? "Your details · saved" : "Your details (optional)");
    this.details = h("details", { class: "sbchat-details", testid: "chat-details" },
      this.summary,
      h("form", { class: "sbchat-form", onsubmit: (ev) => { ev.preventDefault(); this.identify(); } },
        h("p", { class: "sbchat-hint" }, "So our team knows who they are talking to."),
        h("label", { for: id("name") }, "Name"), this.nameInput,
        h("label", { for: id("email") }, "Email"), this.emailInput,
        h("label", { for: id("phone") }, "Phone"), this.phoneInput,
        h("button", { type: "submit", class: "sbchat-secondary", testid: "chat-identify" }, "Save details"),
        this.detailsNote));
    this.input = h("textarea", { id: id("input"), rows: "2", testid: "chat-input", placeholder: "Type your message…" });
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); this.submit(); }
    });
    this.endButton = h("button", { type: "button", class: "sbchat-link", testid: "chat-end",
      onclick: () => this.end() }, "End chat");
    this.details.hidden = Boolean(this.identity); // the site told us who they are
    replace(this.el, h("section", { class: "sbchat", "aria-labelledby": id("title"), testid: "chat-widget" },
      h("header", { class: "sbchat-head" }, h("h2", { id: id("title") }, title), this.status),
      this.log, this.waiting, this.error, this.details,
      h("form", { class: "sbchat-compose", onsubmit: (ev) => { ev.preventDefault(); this.submit(); } },
        h("label", { for: id("input"), class: "sbchat-sr" }, "Your message"), this.input,
        h("button", { type: "submit", class: "sbchat-send", testid: "chat-send" }, "Send")),
      h("div", { class: "sbchat-foot" }, h("span", { class: "sbchat-hint" }, "Enter to send · Shift+Enter for a new line"),
        this.endButton)));
  }

  render() {
    const items = this.messages.filter((m) => m.text).map((m) => (m.dir === "system"
      ? h("li", { class: "sbchat-system", testid: "chat-system" }, m.text)
      : this.bubble(m.dir, m.from, m.text, m.ts, false)));
    for (const m of this.load().outbox) items.push(this.bubble("in", "", m.text, m.ts, true));
    if (this.ended) items.push(h("li", { class: "sbchat-system" }, "You ended the chat. Write again any time."));
    replace(this.log, items);
    const hasIn = this.messages.some((m) => m.dir === "in" && m.text) || this.load().outbox.length > 0;
    const hasOut = this.messages.some((m) => m.dir === "out");
    const moved = this.agent ? this.agent.event : "";
    const waiting = moved === "transferred" || moved === "waiting" || (!moved && !hasOut);
    this.waiting.hidden = this.ended || !hasIn || !waiting;
    // the queue notice above may just have appeared and shrunk the log: scroll after it did, so
    // the newest line stays in view
    this.scrollToEnd();
  }

  scrollToEnd() {
    this.log.scrollTop = this.log.scrollHeight;
    requestAnimationFrame(() => { this.log.scrollTop = this.log.scrollHeight; }); // after late layout
  }

  bubble(dir, from, text, ts, pending) {
    const who = dir === "in" ? "You" : from || "Agent";
    return h("li", { class: `sbchat-msg sbchat-${dir}${pending ? " sbchat-pending" : ""}`, testid: "chat-message",
      data: { dir } },
    h("span", { class: "sbchat-meta" }, who, " · ", pending ? "sending…" : clock(ts)),
    h("p", { class: "sbchat-text", testid: "chat-text" }, text));
  }

  showError(text) {
    this.error.textContent = text || "";
    this.error.hidden = !text;
  }

  // -- connection ------------------------------------------------------------------------------

  connect() {
    const { token } = this.load();
    const scheme = SERVER.protocol === "https:" ? "wss" : "ws";
    const query = token ? `token=${encodeURIComponent(token)}` : `workspace=${encodeURIComponent(this.workspace)}`;
    const ws = new WebSocket(`${scheme}://${SERVER.host}/ws/chat?${query}`, [PROTOCOL]);
    this.ws = ws;
    let refusal = null;
    ws.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch { return; }
      if (!f || typeof f.type !== "string") return;
      if ((f.type === "ack" || f.type === "error") && this.pending.has(f.ref)) {
        const p = this.pending.get(f.ref);
        this.pending.delete(f.ref);
        if (f.type === "ack") p.resolve(f);
        else p.reject(f);
      } else if (f.type === "welcome") {
        this.welcome(f);
      } else if (f.type === "message") {
        this.receive(f);
      } else if (f.type === "agent") {
        this.agentMoved(f);
      } else if (f.type === "error") {
        if (!this.visitor || ws.readyState !== WebSocket.OPEN) refusal = f;
        else this.showError(f.message);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.open = false;
      for (const p of this.pending.values()) p.reject({ code: "disconnected" });
      this.pending.clear();
      if (refusal && String(refusal.code).startsWith("auth.")) {
        this.save({ token: "" }); // our visitor token expired: start as a new visitor
      } else if (refusal && refusal.code === "workspace.unknown") {
        this.status.textContent = "Chat is not available.";
        return;
      }
      const delay = backoff(this.attempt++);
      this.status.textContent = `Reconnecting in ${Math.ceil(delay / 1000)} s…`;
      this.el.classList.add("sbchat-offline");
      setTimeout(() => this.connect(), delay);
    };
  }

  request(type, fields = {}) {
    if (!this.open) return Promise.reject({ code: "disconnected" });
    const ref = ++this.ref;
    return new Promise((resolve, reject) => {
      this.pending.set(ref, { resolve, reject });
      this.ws.send(JSON.stringify({ ...fields, type, ref }));
    });
  }

  async welcome(f) {
    this.open = true;
    this.attempt = 0;
    this.visitor = f.visitor;
    this.save({ token: f.token });
    this.status.textContent = "Connected";
    this.el.classList.remove("sbchat-offline");
    this.messages = (f.messages || []).filter((m) => m.dir === "in" || m.dir === "out");
    this.agent = f.agent || null;
    placeAgentLine(this.messages, this.agent); // where things stand, in its place in the story
    const known = new Set(this.messages.map((m) => m.id));
    const outbox = this.load().outbox.filter((m) => !known.has(`${this.visitor}:${m.id}`));
    this.save({ outbox });
    this.render();
    const d = this.load().details;
    if (this.identity) {
      this.request("identify", this.identity).catch((e) => {
        if (e.code === "identity.unverified") this.showError("We could not confirm your sign-in; chatting as a guest.");
      });
    } else if (d.name || d.email || d.phone) {
      this.request("identify", d).catch(() => {});
    }
    for (const m of outbox) this.transmit(m);
  }

  agentMoved(f) {
    const line = agentLine(f);
    if (!line) return;
    this.agent = { event: f.event, name: f.name };
    this.messages.push(line);
    this.render();
  }

  receive(f) {
    if (this.messages.some((m) => m.id === f.id)) return;
    // in time order: the visitor's own message can come back after the line its arrival
    // caused ("… joined" when it resumed a conversation), and goes before it
    const ts = typeof f.ts === "number" ? f.ts : Infinity;
    const at = this.messages.findIndex((m) => typeof m.ts === "number"
      && (m.ts > ts || (m.ts === ts && m.dir === "system")));
    if (at < 0) this.messages.push(f); else this.messages.splice(at, 0, f);
    if (f.dir === "out") this.ended = false;
    this.render();
  }

  // -- actions ---------------------------------------------------------------------------------

  submit() {
    const text = this.input.value.trim();
    if (!text) return;
    if (text.length > 8000) { this.showError("That message is too long (8000 characters at most)."); return; }
    this.showError("");
    this.ended = false;
    if (this.agent && this.agent.event === "closed") this.agent = { event: "waiting" }; // reopens it
    const m = { id: randomId(), text, ts: Date.now() / 1000 };
    this.save({ outbox: [...this.load().outbox, m] });
    this.input.value = "";
    this.render();
    if (this.open) this.transmit(m);
  }

  async transmit(m) {
    const before = this.messages.length;
    try {
      await this.request("message", { text: m.text, id: m.id });
      this.save({ outbox: this.load().outbox.filter((x) => x.id !== m.id) });
      const sent = { id: `${this.visitor}:${m.id}`, dir: "in", text: m.text, ts: m.ts, from: "" };
      // a line about the agent that came while it was on its way ("… joined": it resumed the
      // conversation) is what it caused: the message goes before it
      const caused = this.messages.findIndex((x, i) => i >= before && x.dir === "system");
      if (this.messages.some((x) => x.id === sent.id)) { /* the echo came first */ }
      else if (caused < 0) this.messages.push(sent); else this.messages.splice(caused, 0, sent);
      this.render();
    } catch (e) {
      if (e.code !== "disconnected") {
        this.save({ outbox: this.load().outbox.filter((x) => x.id !== m.id) });
        this.render();
        this.showError(`Not sent: ${e.message}`);
      } // disconnected: it stays in the outbox and is re-sent after the reconnect
    }
  }

  async identify() {
    const details = {};
    const name = this.nameInput.value.trim();
    const email = this.emailInput.value.trim();
    const phone = this.phoneInput.value.trim();
    if (name) details.name = name;
    if (email) details.email = email;
    if (phone) details.phone = phone;
    try {
      await this.request("identify", details);
      this.save({ details });
      this.detailsNote.textContent = "";
      this.summary.textContent = "Your details · saved";
      this.details.open = false;
      this.input.focus();
    } catch (e) {
      this.detailsNote.textContent = e.code === "disconnected"
        ? "Not connected right now — try again in a moment." : `Please check your details: ${e.message}`;
    }
  }

  async end() {
    try {
      await this.request("end");
    } catch {
      /* nothing open to end */
    }
    this.ended = true;
    this.messages = [];
    this.agent = null;
    this.render();
  }
}

// A signed-in visitor's identity, as the site rendered it: only with its identity_hash.
function signedIdentity(el, params) {
  const pick = (data, param) => el.dataset[data] || params.get(param) || "";
  const identity_hash = pick("identityHash", "identity_hash");
  if (!identity_hash) return null;
  const out = { identity_hash };
  for (const [data, field] of [["externalId", "external_id"], ["email", "email"], ["phone", "phone"], ["name", "name"]]) {
    const v = pick(data, field);
    if (v) out[field] = v;
  }
  return out;
}

export function mountAll(root = document) {
  ensureStylesheet();
  const params = new URLSearchParams(location.search);
  return [...root.querySelectorAll("[data-switchboard-chat]")].map((el) =>
    new ChatWidget(el, el.dataset.workspace || params.get("workspace") || "demo",
      { title: el.dataset.title || "Chat with us", identity: signedIdentity(el, params) }));
}

mountAll();
