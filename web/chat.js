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
// server de-duplicates them). "End chat" waits in the same outbox, in its place after what was
// typed before it: pressed while offline, it is delivered once the widget is connected again
// (after a reload too), named after the conversation it ends, and dropped if that conversation
// went on without it (a newer case, or more from the visitor in another tab).
//
// Everything shown is rendered as text (dom.h); nothing the other side sends becomes markup.

import { backoff, clock, h, replace } from "./dom.js";

const PROTOCOL = "switchboard.v1.json";
const SERVER = new URL(import.meta.url);
let widgets = 0;
const MAX_CHARS = 8000; // a message's length, in characters (router/chat_ws.py)

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
    closed: `${name} closed the conversation. Write again any time.`,
    abandoned: "This chat was closed because you left before anyone could answer. Write again to start a new one.",
    cancelled: "This chat was closed. Write again to start a new one." }[f.event];
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
    this.flushing = false;
    // the conversation's case: "" none yet, null not known (never connected on this page)
    const { case: known } = this.load();
    this.case = typeof known === "string" ? known : null;
    this.agent = null; // the agent's last move: {event: joined|transferred|closed, name}
    this.build(title);
    this.connect();
  }

  // -- storage --------------------------------------------------------------------------------
  // {token, case, details: {name, email, phone},
  //  outbox: [{id, text, ts} | {id, end: true, case, after, ts}] (in order: an end after what
  //   was typed before it; `case` the one it ends, null: the one the messages before it go to;
  //   `after` the visitor's last message it followed),
  //  ended: {case, id} (the visitor ended that case with that end: what came before is over)}

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
      "Thanks — you're in the queue. An agent will reply here shortly. Please keep this page open ",
      "(reloading is fine): if you leave before an agent answers, the chat is closed.");
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
    this.input.value = this.load().draft || ""; // typed and not sent before a reload
    this.input.addEventListener("input", () => this.save({ draft: this.input.value }));
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
        this.sendButton = h("button", { type: "submit", class: "sbchat-send", testid: "chat-send" }, "Send")),
      h("div", { class: "sbchat-foot" }, h("span", { class: "sbchat-hint" }, "Enter to send · Shift+Enter for a new line"),
        this.endButton)));
  }

  render() {
    const { outbox } = this.load();
    // what follows an end (the agent closing up, a last reply) comes after it
    const items = this.ended
      ? [h("li", { class: "sbchat-system", testid: "chat-ended" }, "You ended the chat. Write again any time.")] : [];
    for (const m of this.messages) {
      if (!m.text) continue;
      items.push(m.dir === "system" ? h("li", { class: "sbchat-system", testid: "chat-system" }, m.text)
        : this.bubble(m.dir, m.from, m.text, m.ts, false));
    }
    for (const m of outbox) {
      items.push(m.end ? h("li", { class: "sbchat-system sbchat-ending", testid: "chat-ending" }, this.open
        ? "Ending the chat…"
        : "Ending the chat as soon as you're back online — or, if you close this page, "
          + "the next time you open it.")
        : this.bubble("in", "", m.text, m.ts, true));
    }
    if (this.unavailable) {
      items.splice(0, items.length, h("li", { class: "sbchat-system", testid: "chat-unavailable" },
        "Chat is not available on this page. Please contact us another way."));
    }
    replace(this.log, items);
    for (const el of [this.input, this.sendButton]) {
      if (this.unavailable) el.setAttribute("disabled", ""); else el.removeAttribute("disabled");
    }
    this.details.hidden = Boolean(this.identity) || Boolean(this.unavailable);
    const ending = outbox.length > 0 && outbox[outbox.length - 1].end === true;
    this.endButton.disabled = ending || Boolean(this.unavailable);
    this.endButton.textContent = ending ? "Ending chat…" : "End chat";
    const hasIn = this.messages.some((m) => m.dir === "in" && m.text) || outbox.some((m) => !m.end);
    const hasOut = this.messages.some((m) => m.dir === "out");
    const moved = this.agent ? this.agent.event : "";
    const waiting = moved === "transferred" || moved === "waiting" || (!moved && !hasOut);
    this.waiting.hidden = this.ended || ending || !hasIn || !waiting || Boolean(this.unavailable);
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
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.open = false;
      // 1009: what was on its way was over the server's limit. Sent again it would be refused
      // again, so it is not: it is given up, and said so (the connection comes back)
      const gone = ev.code === 1009 ? { code: "frame.too_large", message: "it is too long to send." }
        : { code: "disconnected" };
      for (const p of this.pending.values()) p.reject(gone);
      this.pending.clear();
      this.render(); // an end on its way now waits for the connection: say so
      if (refusal && String(refusal.code).startsWith("auth.")) {
        this.save({ token: "" }); // our visitor token expired: start as a new visitor
      } else if (refusal && refusal.code === "workspace.unknown") {
        this.unavailable = true; // this page names no chat of ours: nothing can be sent
        this.status.textContent = "Chat is not available.";
        this.render();
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
    this.case = f.case || "";
    this.status.textContent = "Connected";
    this.el.classList.remove("sbchat-offline");
    let messages = (f.messages || []).filter((m) => m.dir === "in" || m.dir === "out");
    const agent = f.agent || null;
    const sid = (m) => `${this.visitor}:${m.id}`;
    const known = new Set(messages.map((m) => m.id));
    const stored = this.load();
    let ended = stored.ended && stored.ended.case === this.case ? stored.ended : null;
    const outbox = [];
    stored.outbox.forEach((m, i) => {
      if (known.has(sid(m))) { // it arrived; its ack did not
        if (m.end) ended = { case: this.case, id: m.id };
      } else if (!m.end || this.endStillMeant(m, messages, stored.outbox.slice(0, i))) {
        outbox.push(m);
      }
    });
    // the visitor ended this case: what came before the end is over, as it was when they did
    const at = ended ? messages.findIndex((m) => m.id === sid(ended)) : -1;
    let agentLine = Boolean(agent);
    if (at >= 0) {
      const endTs = messages[at].ts;
      messages = messages.slice(at + 1);
      agentLine = Boolean(agent) && typeof agent.ts === "number" && agent.ts > endTs // after the end
        && agent.event !== "abandoned"; // (their own end closed it: they know why)
    }
    this.save({ token: f.token, case: this.case, outbox, ended: at >= 0 ? ended : null });
    this.ended = at >= 0 && !messages.some((m) => m.dir === "in" && m.text);
    this.messages = messages;
    this.agent = agent;
    // where things stand, in its place in the story
    if (agentLine) placeAgentLine(this.messages, this.agent);
    this.render();
    const d = this.load().details;
    if (this.identity) {
      this.request("identify", this.identity).catch((e) => {
        if (e.code === "identity.unverified") this.showError("We could not confirm your sign-in; chatting as a guest.");
      });
    } else if (d.name || d.email || d.phone) {
      this.request("identify", d).catch(() => {});
    }
    this.flush();
  }

  // Whether an end that waited for the connection is still for the conversation at hand: not
  // if the case it was pressed in is over and another began, nor if the visitor wrote more in
  // that case since (over another connection: it went on without this one). `before`: the
  // outbox items ahead of it, sent first.
  endStillMeant(end, messages, before) {
    if (end.case && end.case !== this.case) return false;
    const at = end.after ? messages.findIndex((m) => m.id === end.after) : -1;
    if (at < 0) return true; // nothing to go by: the conversation it was pressed in
    const ours = new Set(before.map((m) => `${this.visitor}:${m.id}`));
    return !messages.slice(at + 1).some((m) => m.dir === "in" && m.text && !ours.has(m.id));
  }

  // Send the outbox, one item at a time and in order (an end goes after the messages typed
  // before it, and before those typed after it); what the connection loses waits for the next.
  async flush() {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.open) {
        const [m] = this.load().outbox;
        if (!m || !(await (m.end ? this.deliverEnd(m) : this.transmit(m)))) break;
      }
    } finally {
      this.flushing = false;
    }
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
    this.render();
  }

  // -- actions ---------------------------------------------------------------------------------

  submit() {
    const text = this.input.value.trim();
    if (!text) return;
    if (this.unavailable) return;
    const chars = [...text].length; // characters, as the server counts them (an emoji is one)
    if (chars > MAX_CHARS) {
      this.showError(`That message is too long: ${chars} characters, ${MAX_CHARS} at most.`);
      return;
    }
    this.showError("");
    this.ended = false;
    if (this.agent && this.agent.event === "closed") this.agent = { event: "waiting" }; // reopens it
    const m = { id: randomId(), text, ts: Date.now() / 1000 };
    this.save({ outbox: [...this.load().outbox, m] });
    this.input.value = "";
    this.save({ draft: "" });
    this.render();
    this.flush();
  }

  unqueue(m) {
    this.save({ outbox: this.load().outbox.filter((x) => x.id !== m.id) });
  }

  // One message from the outbox; false if the connection went (it stays for the next one).
  async transmit(m) {
    const before = this.messages.length;
    try {
      const ack = await this.request("message", { text: m.text, id: m.id });
      if (ack.case && ack.case !== this.case && this.agent
        && (this.agent.event === "abandoned" || this.agent.event === "cancelled")) {
        this.agent = null; // a new chat after one closed unanswered: it waits in the queue
      }
      if (ack.case) this.case = ack.case;
      this.save({ outbox: this.load().outbox.filter((x) => x.id !== m.id), case: this.case });
      this.ended = false; // written after an end: the conversation goes on
      const sent = { id: `${this.visitor}:${m.id}`, dir: "in", text: m.text, ts: m.ts, from: "" };
      // a line about the agent that came while it was on its way ("… joined": it resumed the
      // conversation) is what it caused: the message goes before it
      const caused = this.messages.findIndex((x, i) => i >= before && x.dir === "system");
      if (this.messages.some((x) => x.id === sent.id)) { /* the echo came first */ }
      else if (caused < 0) this.messages.push(sent); else this.messages.splice(caused, 0, sent);
      this.render();
      return true;
    } catch (e) {
      if (e.code === "disconnected") return false; // it stays in the outbox: re-sent after the reconnect
      this.unqueue(m);
      this.render();
      this.showError(`Not sent: ${e.message}`);
      return true;
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
        ? "Not connected right now — try again in a moment." : detailsProblem(e);
    }
  }

  // End chat: queued like a message, so that pressed while offline it still reaches the agent
  // — once, and only for this conversation (see the outbox above).
  end() {
    const { outbox } = this.load();
    if (outbox.length && outbox[outbox.length - 1].end) return; // already on its way
    // already ended, and nothing written since: a second press would tell the agent again that
    // the customer left (a second "Customer ended the chat")
    if (this.ended && !outbox.length) return;
    this.showError("");
    const unsent = outbox.length > 0;
    if (!unsent && this.case === "") { // nothing was said: nothing to end
      this.closeConversation();
      return;
    }
    const last = [...this.messages].reverse().find((m) => m.dir === "in" && m.text);
    this.save({ outbox: [...outbox, { id: randomId(), end: true, ts: Date.now() / 1000,
      // with messages still to go, it ends the conversation they go to, whichever that is
      case: unsent ? null : this.case, after: !unsent && last ? last.id : "" }] });
    this.render();
    this.flush();
  }

  // The end at the head of the outbox; false if it must wait (the connection went).
  async deliverEnd(m) {
    const meant = m.case || this.case;
    if (!meant) { // nothing was ever sent (what came before it failed): nothing to end
      this.unqueue(m);
      this.closeConversation();
      return true;
    }
    try {
      const ack = await this.request("end", { id: m.id, case: meant });
      this.save({ outbox: this.load().outbox.filter((x) => x.id !== m.id),
        ended: ack.case ? { case: ack.case, id: m.id } : null });
      this.closeConversation();
      return true;
    } catch (e) {
      if (e.code === "disconnected") return false; // delivered after the reconnect
      if (e.code === "rate_limited" || e.code === "unavailable") {
        setTimeout(() => this.flush(), 2000); // the server could not take it now: again shortly
        return false;
      }
      this.unqueue(m);
      this.render();
      this.showError(`Could not end the chat: ${e.message}`);
      return true;
    }
  }

  // The visitor ended it: the conversation so far is over. Where the agent stands stays known
  // (still on the case until they close it: written to again, it is theirs, not the queue's).
  closeConversation() {
    this.ended = true;
    this.messages = [];
    this.render();
  }
}

/** Why the details were refused, in the customer's words rather than the protocol's. */
function detailsProblem(e) {
  const said = String(e.message || "");
  if (said.startsWith("identities.phone")) {
    return "Please enter your phone number with its country code, e.g. +1 415 555 0123.";
  }
  if (said.startsWith("identities.email")) return "Please check your email address.";
  if (said.startsWith("name")) return "Please check your name.";
  return "Those details could not be saved. Please check them and try again.";
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
