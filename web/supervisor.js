// supervisor.js — live queue and agent statistics, refreshed over the WebSocket every second;
// move a waiting case to another queue; change an agent's status.
//
// Rows are updated in place (keyed by queue / agent / case id) so a supervisor's focus on a
// status menu survives each refresh. The queues themselves come with every refresh too (each
// stats frame names them, as the workspace is declared now), so a queue an admin adds, renames
// or removes reaches an open page within a refresh or two: its table, the queue names of the
// listed cases and the move form's menu.

import { CHANNEL_LABEL, duration, h, replace, shortId } from "./dom.js";
import { bdi, knownEmails, renderTimeline, shown, Timeline } from "./timeline.js";
import { callbackNumber, wantsCallback } from "./casetab.js";
import { Connection, clearSession, loadSession, signedOut } from "./session.js";
import { signIn } from "./login.js";
import { reflowable, scroller } from "./tables.js";
import { announcer, connectionUi, statusMenu, toaster } from "./ui.js";

const POLL_MS = 1000;
// open cases someone is handling, in the order a case moves through them
const HANDLED = [["offered", "Offered"], ["assigned", "In progress"], ["wrapping", "Wrapping up"]];
const HANDLED_LIMIT = 50; // per state: each refresh lists the oldest this many (router/stats.py LISTED)
const WAITING_LIMIT = 50;
// how the "and N more" note names each state
const ROLE_LABEL = { agent: "Agent", supervisor: "Supervisor", admin: "Admin" };
const MORE_LABEL = { offered: "offered", assigned: "in progress", wrapping: "wrapping up" };

/** A case's subject (isolated: customer text, it may carry bidi controls), or what stands in:
 *  a call waiting to be called back reads "Callback · +14155550123", not "Incoming call". */
function subjectCell(c) {
  const callback = c.channel === "voice" && wantsCallback(c);
  const to = callback ? callbackNumber(c) : "";
  const mark = callback ? h("span", { class: "waiting-subject waiting-callback", testid: "case-callback",
    title: "The caller asked to be called back" },
  h("span", { "aria-hidden": "true" }, "☎ "), "Callback", to ? [" · ", bdi(to, { testid: "case-callback-number" })] : null)
    : null;
  // a chat has no subject: its first words stand in ("preview"), as a quote
  const subject = c.subject ? bdi(c.subject, { class: "waiting-subject" })
    : c.preview ? h("span", { class: "waiting-subject waiting-preview" }, "“", bdi(c.preview), "”")
      : mark ? null : h("span", { class: "waiting-subject" }, c.channel === "voice" ? "Incoming call" : "No subject");
  // who it is, before what about (listings name the customer: customer_name)
  return [c.customer_name ? bdi(c.customer_name, { class: "waiting-customer", testid: "case-customer-name" }) : null,
    mark, subject];
}

/** What a listed case's first cell shows: it is built again only when that changes (a
 *  waiting call becomes a callback, a chat visitor gives their name). */
function caseKey(c) {
  return JSON.stringify([c.channel, c.customer_name || "", c.subject || "", c.preview || "", c.priority || 0,
    c.channel === "voice" && wantsCallback(c) ? callbackNumber(c) || "-" : ""]);
}

/** A listed case's first cell: channel, customer and subject, short id, and any ``extra``. */
function caseCell(c, ...extra) {
  return h("th", { scope: "row", role: "rowheader" }, h("div", { class: "waiting-case" },
    h("span", { class: `badge ch-${c.channel}` }, CHANNEL_LABEL[c.channel] || c.channel),
    subjectCell(c),
    h("span", { class: "waiting-id" }, shortId(c.id)),
    ...extra));
}

/** A listed case as a button's label reads it: the customer, else the subject, else its id. */
function caseName(c) {
  const what = c.customer_name || c.subject;
  return what ? `the case of ${what}` : `case ${shortId(c.id)}`;
}

function label(status) {
  return status ? status.charAt(0).toUpperCase() + status.slice(1) : "";
}

/** The cases being handled, from a stats frame: the oldest of each open state (``in_progress``,
 *  read with the counts, so the two agree), listed once each, oldest first; and per state, how
 *  many are listed and whether more were left out. */
function progressOf(stats) {
  const byId = new Map();
  const listed = new Map(); // state -> [cases listed, whether more were left out]
  for (const [state] of HANDLED) {
    const page = (stats.in_progress || {})[state] || {};
    const rows = Array.isArray(page.cases) ? page.cases : [];
    listed.set(state, [rows.length, Boolean(page.more)]);
    for (const c of rows) byId.set(c.id, c);
  }
  const cases = [...byId.values()].sort((a, b) => (a.created || 0) - (b.created || 0)
    || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { cases, listed };
}

/** How many cases of a listing's status it left out: ``total`` (counted by the server) less
 * those ``shown``; null when only the listing's cursor says some were (no count to go by). */
function moreThan(total, shown, cut) {
  // a list that was not cut left nothing out, whatever a count read a moment apart says
  if (!cut) return 0;
  if (typeof total === "number") return Math.max(0, total - shown);
  return null;
}

function percent(v) {
  return v === null || v === undefined ? "—" : `${Math.round(v * 100)}%`;
}

class SupervisorView {
  constructor(root, session) {
    this.root = root;
    this.session = session;
    this.conn = new Connection(session, "/ws/agent", "supervisor");
    this.statuses = [];
    this.queues = [];
    this.slTargets = new Map(); // queue id -> service-level target, s (from the stats frames)
    this.waitingIn = new Map(); // queue id -> cases waiting in it (from the stats frames)
    this.queueStaff = new Map(); // queue id -> agents whose skills its target matches (stats)
    this.queueRows = new Map();
    this.agentRows = new Map();
    this.agentNames = new Map(); // agent id -> display name (from the stats frames)
    this.agentStatus = new Map(); // agent id -> status (from the stats frames)
    this.groups = new Map();
    this.inflight = false;
    this.forbidden = false;
    this.toasts = toaster();
    this.polite = announcer("polite");
    this.build();
    this.conn.addEventListener("frame", (ev) => this.onFrame(ev.detail));
    this.conn.addEventListener("expired", (ev) => signedOut(ev.detail));
    this.conn.start();
    this.loop();
  }

  build() {
    const { banner, indicator } = connectionUi(this.conn, () => this.polite.announce("Reconnected."));
    this.stamp = h("span", { class: "stamp", testid: "stats-updated" }, "Waiting for data…");
    this.summary = h("div", { class: "summary", testid: "summary" });
    this.queueBody = h("tbody", { testid: "queue-rows" });
    this.formula = h("p", { class: "formula", testid: "sl-formula" });
    this.agentTable = h("table", { class: "data agents", testid: "agents-table" },
      h("caption", { class: "visually-hidden" }, "Agents by status, with load per channel"),
      h("thead", null, h("tr", null,
        h("th", { scope: "col" }, "Agent"), h("th", { scope: "col" }, "Load per channel"),
        h("th", { scope: "col", title: "cases completed, average handle time, offers missed: last 60 min" }, "Last hour"),
        h("th", { scope: "col" }, "Status"))));
    this.agentRowOf = reflowable(this.agentTable);
    this.moveQueue = h("select", { id: "move-queue", testid: "move-case-queue", required: true,
      onchange: () => { // another destination: a warning given for the last one is asked again
        this.moveWarn.hidden = true;
        this.moveSubmit.textContent = "Move case";
      } });
    this.waitingRows = new Map();
    this.waitingSupported = true;
    this.waitingBody = h("tbody", { testid: "waiting-rows" });
    this.waitingEmpty = h("p", { class: "empty", testid: "waiting-empty" }, "No case is waiting.");
    this.waitingMore = h("p", { class: "hint list-more", testid: "waiting-more", hidden: true });
    const waitingTable = h("table", { class: "data waiting", testid: "waiting-table" },
      h("caption", { class: "visually-hidden" }, "Cases waiting in a queue, oldest first"),
      h("thead", null, h("tr", null,
        h("th", { scope: "col" }, "Case"), h("th", { scope: "col" }, "Queue"),
        h("th", { scope: "col", class: "num" }, "Waiting"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
      this.waitingBody);
    this.waitingRowOf = reflowable(waitingTable);
    // which queue's waiting cases are listed ("" = all): the oldest WAITING_LIMIT of a busy
    // queue would otherwise hide a quieter queue's cases
    this.waitingQueue = h("select", { id: "waiting-queue", testid: "waiting-queue",
      onchange: () => { this.again = true; this.refresh(); } },
    h("option", { value: "" }, "All queues"));
    this.waitingPanel = h("section", { class: "panel", "aria-labelledby": "waiting-title" },
      h("div", { class: "panel-head" }, h("h2", { id: "waiting-title" }, "Waiting cases"),
        h("div", { class: "panel-filter" }, h("label", { for: "waiting-queue" }, "Queue"), this.waitingQueue)),
      scroller(waitingTable),
      this.waitingEmpty, this.waitingMore);
    this.progressRows = new Map();
    this.progressBody = h("tbody", { testid: "progress-rows" });
    this.progressEmpty = h("p", { class: "empty", testid: "progress-empty" }, "Nobody is handling a case right now.");
    this.progressMore = h("p", { class: "hint list-more", testid: "progress-more", hidden: true });
    this.progressCounts = h("span", { class: "stamp", testid: "progress-counts" });
    const progressTable = h("table", { class: "data progress", testid: "progress-table" },
      h("caption", { class: "visually-hidden" }, "Cases being offered, handled or wrapped up, with their agent, oldest first"),
      h("thead", null, h("tr", null,
        h("th", { scope: "col" }, "Case"), h("th", { scope: "col" }, "Agent"),
        h("th", { scope: "col" }, "State"), h("th", { scope: "col", class: "num" }, "Open for"),
        h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
      this.progressBody);
    this.progressRowOf = reflowable(progressTable);
    this.progressPanel = h("section", { class: "panel", "aria-labelledby": "progress-title" },
      h("div", { class: "panel-head" }, h("h2", { id: "progress-title" }, "In progress"), this.progressCounts),
      scroller(progressTable),
      this.progressEmpty, this.progressMore);
    const queuesTable = h("table", { class: "data queues", testid: "queues-table" },
      h("caption", { class: "visually-hidden" }, "Queues: waiting cases, longest wait and service level"),
      h("thead", null, h("tr", null,
        h("th", { scope: "col" }, "Queue"), h("th", { scope: "col", class: "num" }, "Waiting"),
        h("th", { scope: "col", class: "num" }, "Longest wait"),
        h("th", { scope: "col", class: "num", title: "agents taking cases now, of those whose skills the queue's target matches" },
          "Agents"),
        h("th", { scope: "col", class: "num" }, "Service level"),
        h("th", { scope: "col", class: "num" }, "Answered"), h("th", { scope: "col", class: "num" }, "Abandoned"),
        h("th", { scope: "col", class: "num", title: "waited out the queue's workflow step and moved on unanswered" },
          "Escalated"),
        h("th", { scope: "col", class: "num", title: "average speed of answer: the answered cases' wait, last 60 min" },
          "Avg answer"),
        h("th", { scope: "col", class: "num", title: "average handle time: accept to complete, last 60 min" },
          "Avg handle"))),
      this.queueBody);
    this.queueRowOf = reflowable(queuesTable);
    this.main = h("main", { id: "main", class: "sup-main", tabindex: "-1" },
      this.summary,
      h("section", { class: "panel", "aria-labelledby": "queues-title" },
        h("div", { class: "panel-head" }, h("h2", { id: "queues-title" }, "Queues"), this.stamp),
        scroller(queuesTable),
        this.formula),
      this.waitingPanel,
      this.progressPanel,
      h("div", { class: "sup-grid" },
        h("section", { class: "panel", "aria-labelledby": "agents-title" },
          h("div", { class: "panel-head" }, h("h2", { id: "agents-title" }, "Agents")), scroller(this.agentTable)),
        this.moveForm()));
    replace(this.root,
      h("header", { class: "topbar" },
        h("div", { class: "brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◆"), "Switchboard"),
        h("div", { class: "who" }, h("span", { class: "who-name", testid: "agent-name" }, this.session.name),
          h("span", { class: "who-ws" }, `${ROLE_LABEL[this.session.role] || "Agent"} · ${this.session.workspace}`)),
        h("div", { class: "spacer" }),
        indicator,
        this.adminLink(),
        h("button", { class: "ghost", testid: "sign-out", onclick: () => this.signOut() }, "Sign out")),
      banner, this.main, this.toasts.el, this.polite.el);
  }

  /** An admin's way to the admin page (agents, queues, workflow); nobody else's. */
  adminLink() {
    if (this.session.role !== "admin") return null;
    const link = h("a", { class: "topbar-link", testid: "supervisor-admin-link" }, "Admin");
    link.href = "/admin"; // our own fixed page (dom.h refuses href)
    return link;
  }

  moveForm() {
    const caseId = this.moveCase = h("input", { id: "move-case", testid: "move-case-id", required: true, autocomplete: "off",
      spellcheck: "false", placeholder: "case id",
      oninput: () => this.describeMove(this.moveTarget && this.moveTarget.id === caseId.value.trim() ? this.moveTarget : null) });
    // the case the form is about, as the lists show it (set by Move…; a typed id shows none)
    this.moveWhat = h("div", { class: "move-what", testid: "move-case-what", hidden: true });
    // taking a case from an agent who is working on it asks first, here
    this.moveWarn = h("p", { class: "form-error", role: "alert", testid: "move-case-warning", hidden: true });
    const note = h("input", { id: "move-note", testid: "move-case-note", placeholder: "why (optional)" });
    const submit = h("button", { type: "submit", class: "primary", testid: "move-case-submit" }, "Move case");
    this.moveSubmit = submit;
    return h("form", { class: "panel move", "aria-labelledby": "move-title", onsubmit: async (ev) => {
      ev.preventDefault();
      const id = caseId.value.trim();
      const to = this.moveQueue.value;
      submit.disabled = true;
      // ask first, from the case as it is now (an agent may have accepted it since Move… was
      // pressed): taking it from an agent at work, or sending it where nobody can take it
      const warnings = [];
      const now = await this.api(`/api/cases/${encodeURIComponent(id)}`).catch(() => null);
      let held = null;
      if (now && now.case && now.case.agent && (now.case.status === "assigned" || now.case.status === "wrapping")) {
        // their status as it is now too (the agents table may be a second old)
        const agent = await this.api(`/api/agents/${encodeURIComponent(now.case.agent)}`).catch(() => null);
        held = this.heldBy(now.case, agent && agent.status);
      }
      if (held) warnings.push(`${held} is working on this case now.`);
      if (this.queueStaff.get(to) === 0) {
        warnings.push(`Nobody has the skills for ${this.queueName(to)}: the case will wait there.`);
      }
      const asked = `${id}>${to}>${warnings.join("|")}`; // asked again if what it asks changed
      if (warnings.length && this.moveConfirmed !== asked) {
        this.moveConfirmed = asked;
        this.moveWarn.textContent = `${warnings.join(" ")} Move case again to move it all the same.`;
        this.moveWarn.hidden = false;
        submit.textContent = held ? "Take it and move" : "Move all the same";
        submit.disabled = false;
        submit.focus();
        return;
      }
      try {
        await this.conn.request("case.move", { case: id, queue: this.moveQueue.value, note: note.value });
        this.toasts.show(`Case moved to ${this.queueName(this.moveQueue.value)}.`, { testid: "move-confirmation" });
        caseId.value = "";
        note.value = "";
        this.describeMove(null);
        this.refresh();
      } catch (e) {
        this.moveConfirmed = null;
        this.toasts.show(`Not moved: ${e.message}`, { kind: "error" });
      } finally {
        submit.disabled = false;
        caseId.focus(); // the button was disabled, which dropped the keyboard's focus
      }
    } },
    h("h2", { id: "move-title" }, "Move a case"),
    h("p", { class: "hint" }, "A waiting case (or one being offered) moves to another queue and keeps its age and its wait. "
      + "A case someone is handling is taken back from them — say they signed out — and waits in the new queue."),
    h("label", { for: "move-case" }, "Case id"), caseId,
    this.moveWhat,
    h("label", { for: "move-queue" }, "To queue"), this.moveQueue,
    h("label", { for: "move-note" }, "Note"), note,
    this.moveWarn,
    submit);
  }

  /** Who holds a listed case and is still signed in ("Sam Support · available"), or null: a
   *  waiting case, or one whose agent signed out (taking it back is what the form is for). */
  heldBy(c, statusNow) {
    if (c.status !== "assigned" && c.status !== "wrapping") return null;
    const status = statusNow || this.agentStatus.get(c.agent);
    if (!c.agent || status === "offline") return null;
    return `${this.agentNames.get(c.agent) || c.agent}${status ? ` (${label(status)})` : ""}`;
  }

  /** The move form is about case ``c`` (a listed case) or none: what it shows of it, and a
   *  warning given for another case is gone. */
  describeMove(c) {
    this.moveTarget = c;
    this.moveConfirmed = null;
    this.moveWarn.hidden = true;
    this.moveSubmit.textContent = "Move case";
    if (!c) { this.moveWhat.hidden = true; replace(this.moveWhat); return; }
    const where = c.status === "queued" ? `waiting in ${this.queueName(c.queue)}`
      : c.agent || c.offered_to ? `${MORE_LABEL[c.status] || c.status} · ${this.agentNames.get(c.agent || c.offered_to) || c.agent || c.offered_to}`
        : label(c.status);
    replace(this.moveWhat, h("span", { class: `badge ch-${c.channel}` }, CHANNEL_LABEL[c.channel] || c.channel), " ",
      subjectCell(c), h("span", { class: "move-where" }, ` · ${where}`));
    this.moveWhat.hidden = false;
  }

  queueName(id) {
    const q = this.queues.find((x) => x.id === id);
    return q ? q.name : id;
  }

  /** The workspace's queues as the server names them now (hello, then every stats frame): the
   * move form's menu follows them in place, keeping the queue chosen in it. A chosen queue that
   * was removed is not swapped for another one: the menu asks for a choice again. */
  setQueues(queues) {
    const list = (queues || []).map((q) => ({ id: q.id, name: q.name || q.id }));
    const menu = this.moveQueue;
    const same = list.length === this.queues.length
      && list.every((q, i) => q.id === this.queues[i].id && q.name === this.queues[i].name);
    if (same && menu.options.length) return;
    const chosen = menu.value;
    const lost = menu.options.length > 0 && chosen !== "" && !list.some((q) => q.id === chosen)
      ? this.queueName(chosen) : null;
    this.queues = list;
    const old = new Map([...menu.options].map((o) => [o.value, o]));
    const options = list.map((q) => {
      const o = old.get(q.id) || h("option", { value: q.id });
      if (o.textContent !== q.name) o.textContent = q.name;
      return o;
    });
    // nothing is chosen until the supervisor chooses (a first queue preselected sent cases
    // there unasked)
    options.unshift(old.get("") || h("option", { value: "", disabled: true }, "Choose a queue"));
    replace(menu, options);
    menu.value = lost !== null ? "" : chosen;
    // the waiting list's filter follows too; a filtered queue that went lists them all again
    const shown = this.waitingQueue.value;
    replace(this.waitingQueue, h("option", { value: "" }, "All queues"),
      list.map((q) => h("option", { value: q.id }, q.name)));
    this.waitingQueue.value = list.some((q) => q.id === shown) ? shown : "";
    if (lost !== null) {
      this.toasts.show(`The queue ${lost} was removed: choose another queue to move to.`,
        { testid: "move-queue-removed" });
    }
  }

  async signOut() {
    this.conn.stop();
    clearSession();
    location.reload();
  }

  onFrame(f) {
    if (f.type === "hello") {
      this.statuses = f.statuses || [];
      this.setQueues(f.queues);
      this.refresh();
    } else if (f.type === "error") {
      this.toasts.show(f.message || f.code, { kind: "error" });
    }
  }

  async loop() {
    await this.refresh();
    if (!this.forbidden) setTimeout(() => this.loop(), POLL_MS);
  }

  async refresh() {
    if (!this.conn.open || this.inflight || this.forbidden) return;
    this.inflight = true;
    this.again = false;
    try {
      const [ack, waiting] = await Promise.all([this.conn.request("stats.fetch"), this.fetchWaiting()]);
      // first: it names the queues and agents the listed cases show, and counts every case
      this.render(ack.stats);
      const counts = ack.stats.cases || null;
      if (waiting) this.renderWaiting(waiting, counts);
      this.renderProgress(progressOf(ack.stats), counts);
    } catch (e) {
      if (e.code === "forbidden") this.showForbidden();
    } finally {
      this.inflight = false;
    }
    if (this.again) this.refresh(); // asked for while this one ran (the waiting list's filter)
  }

  // Waiting cases come from the admin REST API (GET /api/cases?status=queued), the oldest
  // WAITING_LIMIT; on a server without it the panel is hidden and a case id can still be typed
  // into the move form. Answers null when there is nothing new to show.
  async fetchWaiting() {
    if (!this.waitingSupported) return null;
    let res;
    const queue = this.waitingQueue.value;
    try {
      res = await fetch(`/api/cases?status=queued&limit=${WAITING_LIMIT}${queue ? `&queue=${encodeURIComponent(queue)}` : ""}`, {
        headers: { Authorization: `Bearer ${this.session.token}` },
      });
    } catch {
      return null; // offline: the banner says so
    }
    if (res.status === 404 || res.status === 405) {
      this.waitingSupported = false;
      this.waitingPanel.hidden = true;
      return null;
    }
    if (!res.ok) return null;
    const data = await res.json();
    return { cases: Array.isArray(data.cases) ? data.cases : [], cut: Boolean(data.next_cursor), queue };
  }

  renderWaiting({ cases, cut, queue }, counts) {
    if (queue !== this.waitingQueue.value) return; // the filter changed meanwhile: the next one
    const seen = new Set();
    const now = this.conn.now();
    cases.forEach((c, i) => {
      seen.add(c.id);
      let row = this.waitingRows.get(c.id);
      if (!row) {
        row = { waited: h("td", { class: "num", testid: "waiting-case-age" }), queue: h("td", { testid: "waiting-case-queue" }) };
        const pick = this.moveButton(c, "waiting-case-move", `Move ${caseName(c)}`);
        row.pick = pick;
        row.head = h("th");
        row.tr = this.waitingRowOf({ testid: "waiting-case", data: { case: c.id } },
          row.head, row.queue, row.waited, h("td", { class: "row-actions" },
            this.viewButton(pick, "waiting-case-view", `Read ${caseName(c)}`), pick));
        this.waitingRows.set(c.id, row);
      }
      row.pick.caseNow = c; // what Move… describes: the case as last listed
      if (row.key !== caseKey(c)) {
        row.key = caseKey(c);
        const head = caseCell(c, c.priority ? h("span", { class: "offer-priority" }, `P${c.priority}`) : null);
        row.head.replaceWith(head);
        row.head = head;
      }
      // keep the server's order (oldest first); move a row only when it is out of place, so a
      // focused button keeps its focus
      const at = this.waitingBody.children[i];
      if (at !== row.tr) this.waitingBody.insertBefore(row.tr, at || null);
      row.queue.textContent = this.queueName(c.queue);
      // a case waiting longer than its queue's service-level target is flagged: it already
      // counts against the service level, and one nobody takes is what a supervisor must see
      // since it waits this time: a reopened case's wait starts at its reopening
      const waited = (now - (c.waiting_since || c.created || now)) / 1000;
      const target = this.slTargets.get(c.queue);
      const over = typeof target === "number" && waited > target;
      row.tr.classList.toggle("over-target", over);
      replace(row.waited, duration(waited),
        over ? h("span", { class: "over-target-badge", testid: "waiting-case-over-target",
          title: `Waiting longer than the queue's ${Math.round(target)} s target` }, "over target") : null);
    });
    for (const [id, row] of this.waitingRows) {
      if (!seen.has(id)) { row.tr.remove(); this.waitingRows.delete(id); }
    }
    this.waitingEmpty.hidden = cases.length > 0;
    this.waitingEmpty.textContent = queue ? `No case is waiting in ${this.queueName(queue)}.` : "No case is waiting.";
    // a queue's own count when the list is one queue's (the stats frame's waiting per queue)
    const total = queue ? this.waitingIn.get(queue) : counts && counts.queued;
    const more = moreThan(total, cases.length, cut);
    this.waitingMore.hidden = more === 0;
    this.waitingMore.textContent = more === 0 ? ""
      : `…and ${more === null ? "more" : `${more} more`} waiting${queue ? ` in ${this.queueName(queue)}` : ""} `
        + `(only the oldest ${WAITING_LIMIT} are listed${queue ? "" : ": choose a queue to see its own"}).`;
  }

  renderProgress({ cases, listed }, counts) {
    const seen = new Set();
    const now = this.conn.now();
    const states = new Map(HANDLED);
    cases.forEach((c, i) => {
      seen.add(c.id);
      let row = this.progressRows.get(c.id);
      if (!row) {
        row = { agent: h("td", { testid: "progress-case-agent" }), state: h("td", { testid: "progress-case-state" }),
          age: h("td", { class: "num", testid: "progress-case-age" }), status: null, who: null };
        // a case whose agent signed out (or went home) can be taken back and moved to a queue
        const pick = this.moveButton(c, "progress-case-move", `Move ${caseName(c)} to a queue`);
        row.pick = pick;
        row.head = h("th");
        row.tr = this.progressRowOf({ testid: "progress-case", data: { case: c.id } },
          row.head, row.agent, row.state, row.age, h("td", { class: "row-actions" },
            this.viewButton(pick, "progress-case-view", `Read ${caseName(c)}`), pick));
        this.progressRows.set(c.id, row);
      }
      row.pick.caseNow = c; // what Move… describes: the case as last listed
      if (row.key !== caseKey(c)) {
        row.key = caseKey(c);
        const head = caseCell(c);
        row.head.replaceWith(head);
        row.head = head;
      }
      // oldest first; a row moves only when it is out of place
      const at = this.progressBody.children[i];
      if (at !== row.tr) this.progressBody.insertBefore(row.tr, at || null);
      const agent = c.agent || c.offered_to || "";
      const name = this.agentNames.get(agent) || agent || "—";
      const away = agent && this.agentStatus.get(agent) === "offline";
      const who = `${name}${away ? " · offline" : ""}`;
      if (row.who !== who) {
        row.who = who;
        replace(row.agent, name, away
          ? h("span", { class: "signed-out", testid: "progress-case-signed-out" }, " · offline") : null);
        row.tr.classList.toggle("stranded", Boolean(away));
      }
      // a case reopened (the customer wrote again, its agent took it back) is open since then
      const reopened = Number(c.reopened) || 0;
      const state = `${c.status}${reopened ? "/reopened" : ""}`;
      if (row.status !== state) {
        row.status = state;
        replace(row.state, h("span", { class: `case-state state-${c.status}` }, states.get(c.status) || label(c.status)),
          reopened ? h("span", { class: "muted", testid: "progress-case-reopened" }, " · reopened") : null);
      }
      row.age.textContent = duration((now - (reopened || c.created || now)) / 1000);
    });
    for (const [id, row] of this.progressRows) {
      if (!seen.has(id)) { row.tr.remove(); this.progressRows.delete(id); }
    }
    this.progressEmpty.hidden = cases.length > 0;
    // how many there are in each state (the stats frame counts them all), and how many of them
    // the bounded pages left out: a supervisor must not take the rows for the whole story
    const counted = counts && HANDLED.every(([state]) => typeof counts[state] === "number");
    this.progressCounts.textContent = counted
      ? HANDLED.map(([state]) => `${counts[state]} ${MORE_LABEL[state]}`).join(" · ") : "";
    const left = [];
    for (const [state] of HANDLED) {
      const [shown, cut] = listed.get(state) || [0, false];
      const more = moreThan(counts && counts[state], shown, cut);
      if (more !== 0) left.push(`${more === null ? "more" : `${more} more`} ${MORE_LABEL[state]}`);
    }
    this.progressMore.hidden = left.length === 0;
    this.progressMore.textContent = left.length === 0 ? ""
      : `…and ${left.join(", ")} (only the oldest ${HANDLED_LIMIT} of each state are listed).`;
  }

  /** "Read" on a listed case: its conversation and the customer's history, read-only, in a
   *  dialog (the case as last listed: ``pick.caseNow``, kept by the rows). */
  viewButton(pick, testid, ariaLabel) {
    return h("button", { class: "secondary small", testid, "aria-label": ariaLabel,
      onclick: () => this.openCase(pick.caseNow) }, "Read");
  }

  async openCase(c) {
    if (!c) return;
    const dialog = this.caseDialog || (this.caseDialog = this.buildCaseDialog());
    const d = dialog.parts;
    d.case = c;
    const who = c.agent || c.offered_to;
    replace(d.head, h("span", { class: `badge ch-${c.channel}` }, CHANNEL_LABEL[c.channel] || c.channel), " ",
      subjectCell(c));
    replace(d.facts, [
      c.status === "queued" ? `Waiting in ${this.queueName(c.queue)}` : `${label(MORE_LABEL[c.status] || c.status)} · ${this.queueName(c.queue)}`,
      who ? `${c.status === "offered" ? "Offered to" : "Agent"}: ${this.agentNames.get(who) || who}` : "",
      shortId(c.id),
    ].filter(Boolean).join(" · "));
    d.error.hidden = true;
    replace(d.list);
    d.list.shownIds = null;
    d.more.hidden = true;
    if (!dialog.open) dialog.showModal();
    try {
      const [customer, ack] = await Promise.all([
        this.api(`/api/customers/${encodeURIComponent(c.customer)}`).catch(() => null),
        this.conn.request("history.fetch", { customer: c.customer, limit: 50 }),
      ]);
      if (d.case !== c) return; // another case was opened meanwhile
      d.customer = customer || { id: c.customer, identities: [] };
      d.timeline = new Timeline(ack.history);
      this.renderCaseHistory();
    } catch (e) {
      d.error.textContent = `Could not read the history: ${e.message || e.code || e}`;
      d.error.hidden = false;
    }
  }

  renderCaseHistory() {
    const d = this.caseDialog.parts;
    renderTimeline(d.list, d.timeline, d.case.id, knownEmails(d.customer), shown(d.customer.name || ""));
    d.more.hidden = !d.timeline.hasOlder;
  }

  buildCaseDialog() {
    const parts = {
      head: h("h2", { id: "case-dialog-title", class: "case-dialog-head", testid: "case-dialog-title" }),
      facts: h("p", { class: "hint", testid: "case-dialog-facts" }),
      list: h("ol", { class: "timeline", testid: "timeline", "aria-label": "Customer history, newest last" }),
      error: h("p", { class: "form-error", role: "alert", testid: "case-dialog-error", hidden: true }),
    };
    parts.more = h("button", { class: "link-button history-more", testid: "history-more", onclick: async () => {
      parts.more.disabled = true;
      try {
        const ack = await this.conn.request("history.fetch",
          { customer: parts.customer.id, before: parts.timeline.start, limit: 50 });
        parts.timeline.prepend(ack.history);
        this.renderCaseHistory();
      } catch (e) {
        parts.error.textContent = `Could not read the history: ${e.message || e.code || e}`;
        parts.error.hidden = false;
      } finally {
        parts.more.disabled = false;
      }
    } }, "Load earlier history");
    const close = h("button", { class: "secondary", testid: "case-dialog-close", onclick: () => dialog.close() }, "Close");
    const move = h("button", { class: "primary", testid: "case-dialog-move", onclick: () => {
      dialog.close();
      this.moveCase.value = parts.case.id;
      this.describeMove(parts.case);
      this.moveQueue.value = "";
      this.moveQueue.focus();
    } }, "Move…");
    const dialog = h("dialog", { class: "admin-dialog case-dialog", testid: "case-dialog", "aria-labelledby": "case-dialog-title" },
      h("div", { class: "admin-dialog-body" }, parts.head, parts.facts, parts.error,
        h("div", { class: "tl-scroll case-dialog-history", tabindex: "0", "aria-label": "Customer history" }, parts.more, parts.list),
        h("div", { class: "form-actions" }, move, close)));
    dialog.parts = parts;
    this.root.append(dialog);
    return dialog;
  }

  /** A GET of the REST API with this session; its JSON, or throws with the server's message. */
  async api(path) {
    const res = await fetch(path, { headers: { Authorization: `Bearer ${this.session.token}` } });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw Object.assign(new Error(body.message || res.statusText), { code: body.code });
    return body;
  }

  /** "Move…" on a listed case: fills in the move form with it and goes to its queue menu. */
  moveButton(c, testid, ariaLabel) {
    const button = h("button", { class: "secondary small", testid, "aria-label": ariaLabel, onclick: () => {
      this.moveCase.value = c.id;
      this.describeMove(button.caseNow || c);
      // a destination is chosen each time: the last move's would send this case there unasked
      this.moveQueue.value = "";
      this.moveQueue.focus();
    } }, "Move…");
    return button;
  }

  showForbidden() {
    this.forbidden = true;
    const back = h("a", { testid: "forbidden-console" }, "the agent console");
    back.href = "/"; // our own fixed page (dom.h refuses href, which customer data must never set)
    replace(this.main, h("section", { class: "panel forbidden", testid: "forbidden" },
      h("h2", null, "Supervisors only"),
      h("p", null, `You're signed in as ${this.session.name}, who isn't a supervisor. `,
        "Sign out and sign in with a supervisor account, or go back to ",
        back, ".")));
  }

  render(stats) {
    this.setQueues(stats.queues);
    const t = new Date((stats.ts || Date.now() / 1000) * 1000);
    this.stamp.textContent = `Updated ${t.toLocaleTimeString()}`;
    this.formula.textContent = `Service level = ${stats.sl_formula}. Each queue's target is shown under its figure.`;
    for (const a of stats.agents || []) {
      if (a.name) this.agentNames.set(a.id, a.name);
      this.agentStatus.set(a.id, a.status);
    }
    this.renderSummary(stats);
    this.renderQueues(stats.queues || []);
    // agents, and supervisors or admins who also take cases (a capacity above 0 somewhere)
    const takes = (a) => a.role === "agent" || Object.values(a.capacity || {}).some((n) => n > 0);
    this.renderAgents((stats.agents || []).filter(takes));
  }

  renderSummary(stats) {
    const qs = stats.queues || [];
    const agents = stats.agents || [];
    const waiting = qs.reduce((n, q) => n + q.waiting, 0);
    const longest = qs.reduce((m, q) => Math.max(m, q.waiting ? q.longest_wait_s : 0), 0);
    // who takes cases: anyone with capacity on some channel (a supervisor may), as the queues'
    // Agents column counts them; "available" is a status that takes cases now
    const taking = new Set(this.statuses.filter((s) => s.routable).map((s) => s.name));
    const staffed = agents.filter((a) => Object.values(a.capacity || {}).some((n) => n > 0));
    const available = staffed.filter((a) => (taking.size ? taking.has(a.status) : a.status === "available")).length;
    const staff = staffed.length;
    const card = (title, value, testid) => h("div", { class: "stat" },
      h("span", { class: "stat-label" }, title), h("span", { class: "stat-value", testid }, value));
    replace(this.summary,
      card("Waiting now", String(waiting), "total-waiting"),
      card("Longest wait", waiting ? duration(longest) : "—", "total-longest"),
      card("Agents available", `${available} of ${staff}`, "agents-available"));
  }

  renderQueues(queues) {
    const seen = new Set();
    this.slTargets.clear();
    queues.forEach((q, i) => {
      seen.add(q.id);
      let row = this.queueRows.get(q.id);
      if (!row) {
        const cell = (testid, cls = "num") => h("td", { class: cls, testid });
        row = { tr: null, waiting: cell("queue-waiting"), longest: cell("queue-longest"), staff: cell("queue-agents"),
          sl: cell("queue-sl"),
          answered: cell("queue-answered"), abandoned: cell("queue-abandoned"), escalated: cell("queue-escalated"),
          asa: cell("queue-asa"), aht: cell("queue-aht"),
          name: h("th", { scope: "row", testid: "queue-name", class: "queue-name", dir: "auto" }) };
        row.tr = this.queueRowOf({ testid: "queue-row", data: { queue: q.id } },
          row.name, row.waiting, row.longest, row.staff, row.sl, row.answered, row.abandoned, row.escalated,
          row.asa, row.aht);
        this.queueRows.set(q.id, row);
      }
      // in the workspace's order; a row moves only when it is out of place
      const at = this.queueBody.children[i];
      if (at !== row.tr) this.queueBody.insertBefore(row.tr, at || null);
      row.name.textContent = q.name || q.id;
      if (typeof q.sl_target_s === "number") this.slTargets.set(q.id, q.sl_target_s);
      this.waitingIn.set(q.id, q.waiting);
      if (typeof q.agents === "number") this.queueStaff.set(q.id, q.agents);
      row.waiting.textContent = String(q.waiting);
      row.tr.classList.toggle("busy", q.waiting > 0);
      row.longest.textContent = q.waiting ? duration(q.longest_wait_s) : "—";
      // who can take its cases: "2 of 5" available; nobody at all (a target no agent's skills
      // match) or nobody in right now is what leaves cases waiting
      if (typeof q.agents === "number") {
        const none = q.agents === 0 ? "nobody has the skills" : q.agents_available === 0 ? "nobody in"
          : q.agents_free === 0 ? "all busy" : "";
        replace(row.staff, `${q.agents_available} of ${q.agents}`,
          none ? h("span", { class: `staff-none${q.waiting ? " waiting" : ""}`, testid: "queue-unstaffed" }, none) : null);
      }
      const level = q.service_level;
      const tone = level === null || level === undefined ? "" : level >= 0.8 ? "good" : level >= 0.6 ? "warn" : "bad";
      replace(row.sl, h("span", { class: `sl ${tone}` }, percent(level)),
        h("span", { class: "sl-target" }, `target ${Math.round(q.sl_target_s)} s`));
      row.answered.textContent = String(q.answered);
      row.abandoned.textContent = String(q.abandoned);
      row.escalated.textContent = String(q.escalated ?? 0);
      row.asa.textContent = typeof q.asa_s === "number" ? duration(q.asa_s) : "—";
      row.aht.textContent = typeof q.aht_s === "number" ? duration(q.aht_s) : "—";
    });
    for (const [id, row] of this.queueRows) {
      if (!seen.has(id)) { row.tr.remove(); this.queueRows.delete(id); }
    }
  }

  statusOrder() {
    const names = this.statuses.map((s) => s.name);
    const routable = this.statuses.filter((s) => s.routable).map((s) => s.name);
    const rest = names.filter((n) => !routable.includes(n) && n !== "away" && n !== "offline");
    return [...routable, ...rest, "away", "offline"];
  }

  group(status) {
    let g = this.groups.get(status);
    if (!g) {
      const count = h("span", { class: "count" });
      g = { body: h("tbody", { class: `group status-${status}`, testid: "agent-group", data: { status }, role: "rowgroup" },
        this.agentRowOf({ class: "group-head" }, h("th", { colspan: "4", scope: "rowgroup" },
          h("span", { class: `dot status-${status}`, "aria-hidden": "true" }), label(status), " ", count))), count };
      this.groups.set(status, g);
      const order = this.statusOrder();
      const rank = (s) => (order.indexOf(s) < 0 ? order.length : order.indexOf(s));
      const after = [...this.groups.entries()].filter(([s]) => s !== status && rank(s) > rank(status))
        .sort((a, b) => rank(a[0]) - rank(b[0]))[0];
      this.agentTable.insertBefore(g.body, after ? after[1].body : null);
    }
    return g;
  }

  renderAgents(agents) {
    const seen = new Set();
    for (const a of agents) {
      seen.add(a.id);
      let row = this.agentRows.get(a.id);
      if (!row) row = this.agentRow(a);
      row.name.textContent = a.name || a.id;
      // full: no room left (a capacity an admin cut to 0 under a case held is full too: "Call 1/0")
      replace(row.load, Object.keys(a.capacity || {}).map((ch) => h("span", {
        class: `load-chip${(a.load[ch] || 0) >= a.capacity[ch] && (a.capacity[ch] || a.load[ch]) ? " full" : ""}`,
        testid: `agent-load-${ch}`,
      }, `${CHANNEL_LABEL[ch] || ch} ${a.load[ch] || 0}/${a.capacity[ch]}`)));
      const hour = a.hour || {};
      replace(row.hour, `${hour.completed || 0} done`,
        typeof hour.aht_s === "number" ? ` · ${duration(hour.aht_s)} avg` : "",
        hour.missed ? h("span", { class: "missed", testid: "agent-missed" }, ` · ${hour.missed} missed`) : "");
      if (document.activeElement !== row.select && row.select.value !== a.status) this.fillStatus(row.select, a.status);
      if (row.status !== a.status) {
        row.status = a.status;
        // moving the row to its new group drops the focus it holds (its status menu, just used)
        const focused = row.tr.contains(document.activeElement) ? document.activeElement : null;
        this.group(a.status).body.append(row.tr);
        if (focused) focused.focus();
      }
    }
    for (const [id, row] of this.agentRows) {
      if (!seen.has(id)) { row.tr.remove(); this.agentRows.delete(id); }
    }
    for (const [status, g] of this.groups) {
      const n = g.body.querySelectorAll("tr[data-agent]").length;
      g.count.textContent = `· ${n}`;
      g.body.hidden = n === 0;
      if (!n && !this.statuses.some((s) => s.name === status)) { g.body.remove(); this.groups.delete(status); }
    }
  }

  agentRow(a) {
    const id = `agent-status-${a.id}`;
    const row = {
      status: null,
      name: h("bdi", { class: "agent-name" }), // a right-to-left name keeps its order
      load: h("div", { class: "loads" }),
      // arrow steps through the closed menu set only where they stop (ui.js statusMenu): each
      // step used to be sent, and the agent told of every one
      select: statusMenu({ id, testid: "agent-status", data: { agent: a.id }, "aria-label": `Status of ${a.name || a.id}` },
        (value) => { if (value !== row.status) this.setAgentStatus(a.id, value, row); }),
    };
    row.hour = h("td", { testid: "agent-hour", class: "agent-hour" });
    row.tr = this.agentRowOf({ testid: "agent-row", data: { agent: a.id } },
      h("th", { scope: "row" }, row.name, h("span", { class: "agent-id" }, a.id)), h("td", null, row.load), row.hour,
      h("td", null, row.select));
    this.agentRows.set(a.id, row);
    return row;
  }

  fillStatus(select, current) {
    const names = this.statuses.map((s) => s.name);
    if (!names.includes(current)) names.push(current);
    replace(select, names.map((n) => h("option", { value: n, selected: n === current }, label(n))));
    select.value = current;
  }

  async setAgentStatus(agent, status, row) {
    // busy while it is sent (not disabled: a disabled menu drops the keyboard's focus)
    if (row.busy) { row.next = status; return; } // sent when this one is answered
    row.busy = true;
    row.select.setAttribute("aria-busy", "true");
    try {
      await this.conn.request("agent.status", { agent, status });
      this.toasts.show(`${row.name.textContent} is now ${status}.`, { testid: "agent-status-confirmation" });
    } catch (e) {
      this.toasts.show(`Status not changed: ${e.message}`, { kind: "error" });
      this.fillStatus(row.select, row.status);
    } finally {
      row.busy = false;
      row.select.removeAttribute("aria-busy");
      const next = row.next;
      row.next = null;
      if (next && next !== status) this.setAgentStatus(agent, next, row);
      else this.refresh();
    }
  }
}

async function start(root) {
  const note = sessionStorage.getItem("switchboard.note");
  sessionStorage.removeItem("switchboard.note");
  let session = loadSession();
  if (!session) session = await signIn(root, { title: "Sign in — supervisor view", note });
  return new SupervisorView(root, session);
}

start(document.getElementById("app"));
