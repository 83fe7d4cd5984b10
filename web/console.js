// console.js — the agent console: status, offers, one tab per open case, live updates.
//
// The screen is a projection of the server's state: every `hello` (first connect and every
// reconnect) rebuilds it; pushes (offer, case.message, ...) patch it in between.

import { CHANNEL_LABEL, clock, h, replace } from "./dom.js";
import { Connection, clearSession, loadSession, signedOut } from "./session.js";
import { signIn } from "./login.js";
import { announcer, connectionUi, statusMenu, toaster } from "./ui.js";
import { Timeline, caseSummary } from "./timeline.js";
import { OfferCard } from "./offers.js";
import { CaseView, callbackNumber, callerNumber, identityLabel, notVerified, wantsCallback } from "./casetab.js";

const RESCIND_REASON = {
  timeout: "The offer timed out and went back to the queue.",
  abandoned: "The customer left before the offer was answered.",
  rescinded: "The offer was withdrawn.",
  unavailable: "You are not available: the offer was withdrawn and the case went back to the queue.",
};

// a reminded case's state, for one no longer on the agent's screen: held by someone, it is a
// colleague's (a case of this agent's own would be on their screen)
const STATE_LABEL = { queued: "waiting", offered: "waiting", assigned: "with a colleague",
  wrapping: "with a colleague",
  completed: "closed", abandoned: "abandoned", cancelled: "closed", timeout: "closed" };
const CLOSED = new Set(["completed", "abandoned", "cancelled"]); // what case.reopen takes back

/** Unsent drafts by case id, kept in this tab's sessionStorage: a reload does not lose a
 *  half-written reply; closing the tab or signing out does (a shared computer keeps nothing). */
class Drafts {
  constructor(key) {
    this.key = key;
    let saved = {};
    try {
      saved = JSON.parse(sessionStorage.getItem(key) || "{}") || {};
    } catch {
      saved = {};
    }
    this.map = new Map(Object.entries(saved));
  }

  get(id) { return this.map.get(id); }

  set(id, value) { this.map.set(id, value); this.save(); }

  delete(id) { if (this.map.delete(id)) this.save(); }

  /** A case's reply draft and its forms' ("<case>#wrap", "#transfer", "#followup"). */
  dropCase(caseId) {
    let changed = false;
    for (const id of this.map.keys()) {
      if (id === caseId || id.startsWith(`${caseId}#`)) changed = this.map.delete(id) || changed;
    }
    if (changed) this.save();
  }

  ids() { return [...this.map.keys()]; }

  clear() { this.map.clear(); sessionStorage.removeItem(this.key); }

  save() {
    try {
      sessionStorage.setItem(this.key, JSON.stringify(Object.fromEntries(this.map)));
    } catch {
      /* storage full or off: the drafts live as long as this page */
    }
  }
}

class AgentConsole {
  constructor(root, session) {
    this.root = root;
    this.session = session;
    this.conn = new Connection(session);
    this.me = { id: session.agent, name: session.name, status: "offline", capacity: {} };
    this.statuses = [];
    this.queues = [];
    this.dispositions = [];
    this.canned = {};
    this.timelines = new Map();
    this.views = new Map();
    this.reminders = new Map(); // reminder id -> its toast, until dismissed
    this.followups = new Map(); // follow-ups set and not yet due: id -> {case, due, note, customer, …}
    this.offerCards = new Map();
    this.drafts = new Drafts(`switchboard.drafts.${session.workspace}.${session.agent}`);
    this.activeKey = `switchboard.active.${session.workspace}.${session.agent}`;
    this.active = null;
    this.polite = announcer("polite");
    this.urgent = announcer("assertive");
    // Toasts and follow-up reminders stand in the offers column, below the offers and never
    // over them: a reminder that stays until dismissed covered the lower offers' Accept buttons.
    const fallbackFocus = () => this.offerCards.values().next().value?.el || this.offerList;
    this.toasts = toaster({ className: "toasts side-toasts", fallbackFocus });
    // announced by the urgent announcer (reminder()), so the tray itself is not a live region
    this.reminderTray = toaster({ className: "reminder-list", testid: "reminders", live: null, fallbackFocus });
    this.buildShell();
    this.conn.addEventListener("frame", (ev) => this.onFrame(ev.detail));
    this.conn.addEventListener("expired", (ev) => this.expired(ev.detail));
    this.conn.addEventListener("replaced", () => this.replaced());
    setInterval(() => this.offerCards.forEach((c) => c.tick()), 250);
    document.addEventListener("keydown", (ev) => this.shortcut(ev));
    this.conn.start();
  }

  // -- shell -----------------------------------------------------------------------------------

  buildShell() {
    const { banner, indicator } = connectionUi(this.conn, () => this.polite.announce("Reconnected."));
    // arrow steps through the closed menu apply only where they stop (ui.js statusMenu)
    this.statusSelect = statusMenu({ id: "status-select", testid: "status-select" }, (value) => {
      if (value !== this.me.status) this.setStatus(value);
    });
    this.loadEl = h("div", { class: "load", testid: "agent-load", "aria-label": "Your load per channel" });
    // focusable from script only: where focus goes when the last offer is answered
    this.offerList = h("ul", { class: "offer-list", testid: "offer-list", "aria-label": "Pending offers",
      tabindex: "-1" });
    this.offerEmpty = h("p", { class: "empty", testid: "offers-empty" });
    this.offerCount = h("span", { class: "count", testid: "offer-count" }, "0");
    this.reminderCount = h("span", { class: "count", testid: "reminder-count" }, "0");
    this.reminderBox = h("section", { class: "reminders", "aria-labelledby": "reminders-title", hidden: true },
      h("h2", { id: "reminders-title", class: "side-title" }, "Reminders ", this.reminderCount),
      this.reminderTray.el);
    // the follow-ups set and not yet due, soonest first: folded away, one line each
    this.followupCount = h("span", { class: "count", testid: "followup-count" }, "0");
    this.followupList = h("ul", { class: "followup-list", testid: "followup-list" });
    this.followupBox = h("details", { class: "followups", testid: "followups", hidden: true },
      h("summary", { class: "side-title" }, "Follow-ups set ", this.followupCount), this.followupList);
    this.tabs = h("div", { role: "tablist", class: "case-tabs", "aria-label": "Open cases", testid: "case-tabs",
      onkeydown: (ev) => this.tabKeys(ev) });
    this.panels = h("div", { class: "case-panels" });
    this.noCases = h("div", { class: "no-cases", testid: "no-cases" },
      h("h2", null, "No open cases"),
      h("p", null, "Accepted offers open here, one tab per case, with the customer's whole history."));
    replace(this.root,
      h("header", { class: "topbar" },
        h("div", { class: "brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◆"), "Switchboard"),
        h("div", { class: "who" }, this.nameEl = h("span", { class: "who-name", testid: "agent-name" }, this.session.name),
          h("span", { class: "who-ws" }, this.session.workspace)),
        this.loadEl,
        h("div", { class: "status-field" }, h("label", { for: "status-select" }, "Status"), this.statusSelect),
        indicator,
        h("button", { class: "ghost", testid: "sign-out", onclick: () => this.signOut() }, "Sign out")),
      banner,
      h("div", { class: "layout" },
        // the offers scroll on their own; the toasts and the reminders follow them, below
        h("aside", { class: "sidebar", "aria-labelledby": "offers-title" },
          h("div", { class: "side-offers" },
            h("h2", { id: "offers-title", class: "side-title" }, "Offers ", this.offerCount),
            h("p", { class: "hint keys" }, h("kbd", null, "Alt A"), " accept · ", h("kbd", null, "Alt R"), " reject"),
            this.offerEmpty, this.offerList),
          this.toasts.el, this.reminderBox, this.followupBox),
        h("main", { id: "main", class: "work", tabindex: "-1" }, this.tabs, this.panels, this.noCases)),
      this.polite.el, this.urgent.el);
    this.renderOffersMeta();
  }

  /** The agent opened the console in another window or tab, which took over: this one stops
   *  (no two screens act on the same offers and cases) until they choose to use it here. */
  replaced() {
    if (this.replacedEl) return;
    this.dropOffers();
    // the page behind takes no focus or clicks: a reply typed there could never be sent
    const behind = [...this.root.children];
    for (const el of behind) el.inert = true;
    const use = h("button", { class: "primary", testid: "use-here", onclick: () => {
      this.replacedEl.remove();
      this.replacedEl = null;
      for (const el of behind) el.inert = false;
      this.conn.start(); // this one takes over again; the other window stops
    } }, "Use here");
    this.replacedEl = h("div", { class: "replaced", role: "alertdialog", "aria-modal": "true",
      "aria-labelledby": "replaced-title", testid: "replaced" },
    h("div", { class: "replaced-box" },
      h("h2", { id: "replaced-title" }, "Switchboard is open in another window"),
      h("p", null, "Only one console per agent takes offers and cases, so this one has stopped. "
        + "Your cases are safe and waiting there."),
      use));
    this.root.append(this.replacedEl);
    use.focus();
  }

  expired(detail) {
    if (detail.reason === "removed") this.drafts.clear();
    signedOut(detail);
  }

  async signOut() {
    try {
      await this.conn.request("status", { status: "offline" });
    } catch {
      /* signing out anyway */
    }
    this.conn.stop();
    this.drafts.clear();
    sessionStorage.removeItem(this.activeKey);
    clearSession();
    location.reload();
  }

  toast(text, opts) {
    return this.toasts.show(text, opts);
  }

  announce(text) {
    this.polite.announce(text);
  }

  /** The workspace's queues as declared now (queues.list): an admin may have added, renamed
   *  or removed one since hello. Keeps hello's if the request fails. */
  async refreshQueues() {
    try {
      const { queues } = await this.conn.request("queues.list");
      if (Array.isArray(queues)) this.queues = queues;
    } catch {
      /* keep the queues we have */
    }
    return this.queues;
  }

  queueName(id) {
    const q = this.queues.find((x) => x.id === id);
    return q ? q.name : id || "—";
  }

  // -- state -----------------------------------------------------------------------------------

  timeline(customerId) {
    let tl = this.timelines.get(customerId);
    if (!tl) {
      tl = new Timeline();
      this.timelines.set(customerId, tl);
    }
    return tl;
  }

  absorb(detail) {
    const cust = (detail.customer && detail.customer.id) || detail.case.customer;
    const tl = this.timeline(cust);
    const entries = detail.timeline || [];
    const total = detail.timeline_total ?? entries.length;
    tl.setPage(entries, detail.timeline_start ?? Math.max(0, total - entries.length), total);
    return tl;
  }

  timelineChanged(customerId) {
    for (const v of this.views.values()) {
      if ((v.customer.id || v.case.customer) === customerId) v.renderTimeline();
    }
  }

  onFrame(f) {
    switch (f.type) {
      case "hello": return this.hello(f);
      case "offer": return this.addOffer(f, true);
      case "offer.rescinded": {
        // whose offer it was: two withdrawn at once are two notices, each naming its customer
        const card = this.offerCards.get(f.offer);
        const whose = card ? ` (${CHANNEL_LABEL[card.offer.case?.channel] || "Case"} from ${customerName(card.offer.customer)})` : "";
        if (this.removeOffer(f.offer)) this.toast(`${RESCIND_REASON[f.reason] || RESCIND_REASON.rescinded}${whose}`);
        return undefined;
      }
      case "offer.updated": return this.offerUpdated(f);
      case "case.message":
      case "case.updated": return this.caseEntry(f);
      case "reminder": return this.reminder(f, true);
      case "reminder.dismissed": return this.reminderDismissed(f);
      case "case.refresh": { // the customer was merged with another: the case anew
        const view = this.addCase(f);
        view.renderTimeline(true);
        return undefined;
      }
      case "case.removed": { // a supervisor took it back and moved it to a queue
        const view = this.views.get(f.case);
        if (!view) return undefined;
        const who = customerName(view.customer);
        const queue = this.queues.find((q) => q.id === f.queue);
        const draft = view.draft().text.trim();
        this.removeCase(f.case);
        const text = `A supervisor moved your case with ${who} to ${queue ? `the ${queue.name} queue` : "a queue"}.`;
        if (draft) { // what the agent was writing is theirs: kept until they dismiss it
          this.toast(`${text} What you had typed was not sent: “${draft}”`, { testid: "case-removed",
            timeoutMs: 0, actions: [["Copy text", () => navigator.clipboard.writeText(draft).catch(() => {})]] });
        } else {
          this.toast(text, { testid: "case-removed" });
        }
        this.announce(text);
        return undefined;
      }
      case "status": {
        this.me.status = f.status;
        if (f.status === "offline") this.dropOffers();
        this.renderStatus();
        const why = { missed_offers: " because offers were missed in a row. Choose Available when you are back",
          supervisor: ", set by a supervisor" }[f.reason] || "";
        // set away while away from the desk: the reason stays until they are back to read it
        // (and goes when their status changes again: it would contradict the menu)
        this.statusNotice?.remove();
        this.statusNotice = this.toast(`Your status is now ${label(f.status)}${why}.`, {
          kind: f.reason === "missed_offers" ? "error" : "info", testid: "status-changed",
          timeoutMs: f.reason === "missed_offers" ? 0 : undefined,
        });
        this.statusNoticeFor = f.status;
        return undefined;
      }
      case "agent.updated": return this.agentUpdated(f.agent || {});
      case "queues.updated": { // an admin added, renamed or removed a queue: shown by name
        if (Array.isArray(f.queues)) this.queues = f.queues;
        for (const view of this.views.values()) view.queuesUpdated();
        return undefined;
      }
      case "drain": return this.toast("The server is restarting; reconnecting…");
      case "error": return this.toast(f.message || f.code, { kind: "error" });
      default: return undefined;
    }
  }

  /** An admin changed this agent (name, capacity, skills): shown at once, and said. Their
   *  status is the status frames' to tell. */
  agentUpdated(agent) {
    const before = this.me || {};
    const same = (k) => JSON.stringify(before[k] ?? null) === JSON.stringify(agent[k] ?? null);
    const changed = [["name", "name"], ["capacity", "capacity"], ["attributes", "skills"]]
      .filter(([k]) => k in agent && !same(k)).map(([, what]) => what);
    this.me = { ...before, ...agent, status: before.status };
    if (agent.name) this.nameEl.textContent = agent.name;
    this.renderLoad();
    if (changed.length) {
      this.toast(`An admin changed your ${changed.join(" and ")}.`, { testid: "agent-updated" });
    }
  }

  hello(f) {
    this.me = f.agent;
    this.statuses = f.statuses || [];
    this.queues = f.queues || [];
    this.dispositions = f.dispositions || [];
    this.canned = f.canned || {};
    this.timelines = new Map();
    for (const v of this.views.values()) { v.tab.remove(); v.el.remove(); }
    this.views.clear();
    for (const c of this.offerCards.values()) c.el.remove();
    this.offerCards.clear();
    let keep = this.active;
    if (!keep) {
      try {
        keep = sessionStorage.getItem(this.activeKey); // the case open before a reload
      } catch {
        keep = null;
      }
    }
    this.active = null;
    for (const d of f.cases || []) this.addCase(d);
    this.strandedDrafts();
    for (const o of f.offers || []) this.addOffer(o, false);
    for (const r of f.reminders || []) this.reminder(r);
    this.followups = new Map((f.followups || []).map((x) => [x.id, x]));
    this.renderFollowups();
    const first = this.views.keys().next().value;
    if (keep && this.views.has(keep)) this.select(keep);
    else if (first) this.select(first);
    this.renderStatus();
    this.renderCasesMeta();
  }

  /** Drafts of cases that are no longer ours (closed or moved while this page was away or
   *  reloading): what the agent typed is theirs, kept in a toast until they dismiss it. */
  strandedDrafts() {
    for (const id of this.drafts.ids()) {
      if (this.views.has(id.split("#")[0])) continue;
      const d = this.drafts.get(id);
      if (id.includes("#")) { this.drafts.delete(id); continue; } // a wrap-up form's choices
      const text = (d && typeof d === "object" ? String(d.text || "") : "").trim();
      this.drafts.delete(id);
      if (!text) continue;
      this.toast(`A case you were writing in is no longer yours (it was closed or moved meanwhile). What you had typed was not sent: “${text}”`,
        { testid: "draft-stranded", timeoutMs: 0,
          actions: [["Copy text", () => navigator.clipboard.writeText(text).catch(() => {})]] });
    }
  }

  addCase(detail) {
    this.absorb(detail);
    const existing = this.views.get(detail.case.id);
    if (existing) {
      existing.update(detail);
      return existing;
    }
    const view = new CaseView(this, detail);
    this.views.set(detail.case.id, view);
    this.tabs.append(view.tab);
    this.panels.append(view.el);
    this.renderCasesMeta();
    return view;
  }

  removeCase(caseId) {
    const view = this.views.get(caseId);
    if (!view) return;
    const ids = [...this.views.keys()];
    const next = ids[ids.indexOf(caseId) + 1] || ids[ids.indexOf(caseId) - 1];
    // focus inside the case that goes (Complete case, whose button is disabled while it waits,
    // which already dropped focus to the page) would be lost: keep it near
    const focus = document.activeElement;
    const hadFocus = view.el.contains(focus) || view.tab === focus || focus === document.body;
    view.tab.remove();
    view.el.remove();
    this.views.delete(caseId);
    this.drafts.dropCase(caseId);
    if (this.active === caseId) {
      this.active = null;
      if (next) this.select(next, hadFocus);
      else if (hadFocus) this.offerList.focus();
    }
    this.renderCasesMeta();
  }

  select(caseId, focusTab = false) {
    if (!this.views.has(caseId)) return;
    this.active = caseId;
    try {
      sessionStorage.setItem(this.activeKey, caseId); // a reload comes back to this case
    } catch {
      /* storage off: a reload opens the first case */
    }
    for (const [id, v] of this.views) v.setActive(id === caseId);
    const view = this.views.get(caseId);
    view.tab.classList.remove("unread");
    if (focusTab) view.tab.focus();
  }

  caseEntry(f) {
    const view = this.views.get(f.case);
    // the customer wrote during wrap-up: the conversation resumes, the reply box with it
    if (view && f.status && f.status !== view.case.status) {
      view.setStatus(f.status);
      this.announce(`${customerName(view.customer)} wrote again: the case is open for replies.`);
    }
    const card = [...this.offerCards.values()].find((c) => c.offer.case.id === f.case);
    if (f.type === "case.updated" && f.event === "callback.requested") this.callbackRequested(view, card, f.callback_number);
    if (view && f.type === "case.updated" && f.event === "visitor.left"
      && view.markVisitorLeft(f.visitor_left || Date.now())) {
      this.announce(`Visitor left the page (chat with ${customerName(view.customer)}).`);
    }
    if (view && f.type === "case.updated" && f.event === "visitor.back" && view.markVisitorBack()) {
      this.announce(`Visitor is back on the page (chat with ${customerName(view.customer)}).`);
    }
    // the caller hung up, or the chat visitor ended the chat: the header says so at once (the
    // case's `ended` keeps saying it after a reload); the toast below tells the agent
    const ends = f.type === "case.updated" && (f.event === "call.ended" || f.event === "conversation.ended");
    if (view && ends) {
      const ts = Number(f.entry && f.entry.ts);
      // the end entry's own time first, as endedAt reads it after a reload (the case's `ended` is
      // Redis's clock, which may be a millisecond off the entry's)
      view.markEnded(ts > 0 ? Math.round(ts * 1000) : Number(f.ended) || Math.round(this.conn.now()));
    }
    const cust = view ? (view.customer.id || view.case.customer) : card?.offer.case.customer;
    if (f.type === "case.updated" && f.event === "reply.delivered") { // a reply confirmed sent
      if (cust && this.timeline(cust).mark(f.reply, { delivered: f.delivered, via: f.via })) this.timelineChanged(cust);
      return;
    }
    if (!cust || !f.entry) return;
    if (!this.timeline(cust).add(f.entry)) return;
    this.timelineChanged(cust);
    if (view && f.entry.dir === "in" && this.active !== f.case) {
      // the open case's timeline is a live region that reads new entries out by itself
      const name = customerName(view.customer);
      this.announce(`New ${CHANNEL_LABEL[f.entry.ch] || ""} message from ${name} in another tab.`);
      view.tab.classList.add("unread");
    }
    if (view && f.type === "case.updated" && f.event === "call.ended") {
      this.toast(`Call with ${customerName(view.customer)} ended.`, { testid: "call-ended" });
    }
    if (view && f.type === "case.updated" && f.event === "conversation.ended") {
      const who = customerName(view.customer);
      this.toast(`${who === "the customer" ? "The customer" : who} ended the chat.`, { testid: "conversation-ended" });
    }
  }

  /** The caller asked to be called back: the open case's header (or the pending offer's card)
   *  says so at once, with the number to call — not only the timeline. */
  callbackRequested(view, card, number) {
    const marked = view ? view.markCallback(number) : false;
    const offered = card ? card.markCallback(number) : false;
    if (!marked && !offered) return;
    const c = view ? view.case : card.offer.case;
    const customer = view ? view.customer : card.offer.customer;
    const to = callbackNumber(c, customer);
    this.urgent.announce(`${customerName(customer)} asked to be called back${to ? ` on ${to}` : ""}.`);
  }

  /** A follow-up reminder, live or kept for us while we were away (hello's reminders): it
   *  stays until dismissed, here or on another console, or acted on, and then the server
   *  forgets it. Its case, if not open on this screen, is reopened for us (case.reopen). */
  reminder(f, live = false) {
    if (this.followups.delete(f.id)) this.renderFollowups(); // set, and now due
    if (f.id && this.reminders.has(f.id)) return; // a reconnect's hello repeats it
    const view = this.views.get(f.case);
    const who = view ? customerName(view.customer) : f.customer || "a case you handled";
    const forget = () => {
      this.reminders.delete(f.id);
      this.renderReminderCount();
      if (f.id) this.conn.request("reminder.dismiss", { id: f.id }).catch(() => {});
    };
    // whether the case is open on this screen is asked when the button is pressed: it may have
    // been reopened and accepted since the reminder came, or closed; the server says whether
    // it can be ours again (a colleague may have it now)
    const open = () => {
      if (this.views.has(f.case)) { this.select(f.case, true); return true; }
      this.reopen(f.case).then((done) => { if (done) { toast.remove(); forget(); } });
      return false; // the reminder stays until it is done
    };
    const closed = !view && CLOSED.has(f.status);
    const actions = [[closed ? "Reopen case" : "Open case", open]];
    const what = [CHANNEL_LABEL[f.channel], f.subject,
      !view && f.status ? STATE_LABEL[f.status] || f.status : ""].filter(Boolean).join(" · ");
    const due = typeof f.due === "number" && Date.now() / 1000 - f.due > 90 ? ` (due ${clock(f.due)})` : "";
    const toast = this.reminderTray.show(`${f.note || `Follow up on ${who}`}${what ? ` — ${what}` : ""}${due}`, {
      kind: "reminder", title: `Follow-up reminder · ${who}`, testid: "reminder", actions, onDismiss: forget,
    });
    if (f.id) this.reminders.set(f.id, toast);
    this.renderReminderCount();
    this.urgent.announce(`Follow-up reminder: ${f.note || who}`);
    // one that falls due now is shown, not left below a long tray's fold
    if (live) toast.scrollIntoView({ block: "nearest" });
  }

  /** A follow-up we just set (case.followup's ack), for the list of those not yet due. */
  followupSet(x) {
    if (this.reminders.has(x.id)) return; // fallen due already (its reminder came first)
    this.followups.set(x.id, x);
    this.renderFollowups();
  }

  renderFollowups() {
    const all = [...this.followups.values()].sort((a, b) => a.due - b.due || (a.id < b.id ? -1 : 1));
    replace(this.followupList, all.map((x) => {
      const who = x.customer || "a case you handled";
      const cancel = h("button", { type: "button", class: "link-button", testid: "followup-cancel",
        "aria-label": `Cancel the follow-up for ${who} at ${clock(x.due)}` }, "Cancel");
      cancel.addEventListener("click", async () => {
        cancel.disabled = true;
        try {
          const ack = await this.conn.request("followup.cancel", { id: x.id });
          const view = this.views.get(x.case); // the history says so, if it is on screen
          const cust = view && (view.customer.id || view.case.customer);
          if (cust && ack.entry && this.timeline(cust).add(ack.entry)) this.timelineChanged(cust);
          this.toast(`Follow-up for ${who} cancelled.`, { testid: "followup-cancelled" });
        } catch (e) { // fallen due meanwhile (its reminder says so), or cancelled elsewhere
          if (e.code !== "followup.unknown") { cancel.disabled = false; this.toast(e.message, { kind: "error" }); return; }
        }
        // focus stays in the list: on the next one's Cancel, else the previous', else its title
        const ids = all.map((f) => f.id);
        const at = ids.indexOf(x.id);
        const next = ids[at + 1] || ids[at - 1];
        this.followups.delete(x.id);
        this.renderFollowups();
        const to = next && this.followupList.querySelector(`[data-followup="${CSS.escape(next)}"] [data-testid=followup-cancel]`);
        (to || this.followupBox.querySelector("summary")).focus();
      });
      return h("li", { class: "followup-item", testid: "followup-item", "data-followup": x.id },
        h("span", { class: "followup-when" }, clock(x.due)), " ",
        h("bdi", null, who), x.note ? [" — ", h("bdi", null, x.note)] : "", " ", cancel);
    }));
    this.followupCount.textContent = String(all.length);
    this.followupBox.hidden = all.length === 0;
  }

  /** Take a closed case back to follow it up: it opens here as an accepted offer does, with
   *  the customer's history; a call is a callback (the phone rings for us, then for them).
   *  Resolves to whether it is ours now; if not, a notice says why. */
  async reopen(caseId) {
    try {
      const ack = await this.conn.request("case.reopen", { case: caseId });
      const view = this.addCase(ack.detail);
      this.select(caseId);
      view.focusComposer();
      const call = ack.detail.case.channel === "voice" ? " Your phone rings first, then theirs." : "";
      this.announce(`Reopened. The case with ${customerName(view.customer)} is yours again.${call}`);
      // taken while away or signed out: theirs anyway, and a supervisor sees it so
      const st = this.statuses.find((x) => x.name === this.me.status);
      if (st && !st.routable) {
        this.toast(`Reopened while you are ${label(this.me.status)}: the case is yours; new offers wait until you are available.`,
          { testid: "reopened-while-away" });
      }
      return true;
    } catch (e) {
      this.toast(`Not opened: ${e.message}.`, { kind: "error", testid: "reopen-error" });
      return false;
    }
  }

  reminderDismissed(f) {
    const toast = this.reminders.get(f.id);
    if (toast) toast.remove();
    this.reminders.delete(f.id);
    this.renderReminderCount();
  }

  renderReminderCount() {
    const n = this.reminderTray.el.childElementCount;
    this.reminderCount.textContent = String(n);
    this.reminderBox.hidden = n === 0;
  }

  // -- offers ----------------------------------------------------------------------------------

  addOffer(o, fresh) {
    if (this.offerCards.has(o.offer)) return;
    const tl = this.absorb(o);
    const card = new OfferCard(o, tl, {
      accept: (id) => this.accept(id),
      reject: (id) => this.reject(id),
      queueName: (id) => this.queueName(id),
      now: () => this.conn.now(),
    });
    this.offerCards.set(o.offer, card);
    this.offerList.append(card.el);
    this.renderOffersMeta();
    if (fresh) {
      // as the card says it: a customer who is only who they say is announced as not verified
      const number = callerNumber(o.case, o.customer);
      const who = (o.customer ? customerName(o.customer) + (notVerified(o.customer) ? ", not verified" : "")
        : "a customer") + (number && number !== customerName(o.customer) ? `, ${number}` : "");
      const callback = wantsCallback(o.case) ? " (callback requested)" : "";
      this.urgent.announce(`New ${CHANNEL_LABEL[o.case.channel] || ""} offer from ${who}${callback}: `
        + `${caseSummary(o.case, tl)}. Alt A to accept, Alt R to reject.`);
    }
  }

  /** A chat visitor gave their name or details while their chat is offered to us: the card
   *  shows them at once (and the case, should the accept have got there first). */
  offerUpdated(f) {
    if (!f.customer) return;
    const card = this.offerCards.get(f.offer);
    if (card) {
      if (card.setCustomer(f.customer)) this.polite.announce(`Offer updated: ${card.who.textContent}.`);
      return;
    }
    const view = this.views.get(f.case);
    if (view && (view.customer.id || view.case.customer) === f.customer.id) {
      view.update({ case: view.case, customer: f.customer });
    }
  }

  removeOffer(offerId) {
    const card = this.offerCards.get(offerId);
    if (!card) return false;
    const hadFocus = card.el.contains(document.activeElement);
    card.el.remove();
    this.offerCards.delete(offerId);
    this.renderOffersMeta();
    if (hadFocus) {
      const next = this.offerCards.values().next().value;
      (next ? next.el : this.offerList).focus?.();
    }
    return true;
  }

  // Going offline rescinds every pending offer on the server, which does not push
  // offer.rescinded for them: drop the cards here.
  dropOffers() {
    for (const id of [...this.offerCards.keys()]) this.removeOffer(id);
  }

  async accept(offerId) {
    const card = this.offerCards.get(offerId);
    if (!card) return;
    card.busy(true);
    try {
      // The offer carried the case, customer and timeline: the tab is built from them (the
      // server sends the case detail only when asked, e.g. by a console restoring an offer).
      const o = card.offer;
      const ack = await this.conn.request("offer.accept", { offer: offerId });
      this.removeOffer(offerId);
      const tl = this.timeline(o.customer?.id || o.case.customer);
      const detail = ack.detail || {
        case: { ...o.case, status: "assigned", agent: this.me.id }, customer: o.customer,
        timeline: tl.entries, timeline_start: tl.start, timeline_total: tl.total,
      };
      const view = this.addCase(detail);
      this.select(detail.case.id);
      view.focusComposer();
      this.announce(`Accepted. Case with ${customerName(view.customer)} is open.`);
    } catch (e) {
      card.busy(false);
      if (String(e.code || "").startsWith("offer.")) this.removeOffer(offerId);
      this.toast(`Could not accept: ${e.message}`, { kind: "error" });
    }
  }

  async reject(offerId) {
    const card = this.offerCards.get(offerId);
    if (!card) return;
    card.busy(true);
    try {
      await this.conn.request("offer.reject", { offer: offerId });
      this.removeOffer(offerId);
      this.announce("Offer rejected.");
    } catch (e) {
      card.busy(false);
      if (String(e.code || "").startsWith("offer.")) this.removeOffer(offerId);
      this.toast(`Could not reject: ${e.message}`, { kind: "error" });
    }
  }

  renderOffersMeta() {
    const n = this.offerCards.size;
    this.offerCount.textContent = String(n);
    this.offerEmpty.hidden = n > 0;
    const routable = (this.statuses.find((s) => s.name === this.me.status) || {}).routable;
    this.offerEmpty.textContent = routable
      ? "No offers right now. New ones appear here with a countdown."
      : `Your status is ${label(this.me.status || "offline")}. Set it to Available to receive offers.`;
    document.title = n ? `(${n}) Offer — Switchboard` : "Switchboard — Agent console";
    this.renderLoad();
  }

  renderCasesMeta() {
    this.noCases.hidden = this.views.size > 0;
    this.tabs.hidden = this.views.size === 0;
    this.panels.hidden = this.views.size === 0;
    this.renderLoad();
  }

  // Load is computed from what this console holds: open cases and pending offers per channel.
  renderLoad() {
    const load = {};
    for (const v of this.views.values()) load[v.case.channel] = (load[v.case.channel] || 0) + 1;
    for (const c of this.offerCards.values()) {
      const ch = c.offer.case.channel;
      load[ch] = (load[ch] || 0) + 1;
    }
    const cap = this.me.capacity || {};
    replace(this.loadEl, Object.keys(cap).map((ch) => h("span", {
      class: `load-chip${(load[ch] || 0) >= cap[ch] ? " full" : ""}`, testid: `load-${ch}`,
    }, `${CHANNEL_LABEL[ch] || ch} ${load[ch] || 0}/${cap[ch]}`)));
  }

  // -- status ----------------------------------------------------------------------------------

  renderStatus() {
    const current = this.me.status;
    if (this.statusNotice && this.statusNoticeFor !== current) { // it said another status
      this.statusNotice.remove();
      this.statusNotice = null;
    }
    const names = this.statuses.map((s) => s.name);
    if (current && !names.includes(current)) names.push(current);
    replace(this.statusSelect, names.map((n) => h("option", { value: n, selected: n === current }, label(n))));
    this.statusSelect.value = current;
    this.statusSelect.className = `status-${current}`;
    this.renderOffersMeta();
  }

  async setStatus(status) {
    const before = this.me.status;
    try {
      const ack = await this.conn.request("status", { status });
      this.me.status = ack.status;
      this.announce(`Status: ${label(ack.status)}.`);
      if (ack.status === "offline") this.dropOffers();
    } catch (e) {
      this.me.status = before;
      this.toast(`Status not changed: ${e.message}`, { kind: "error" });
    }
    this.renderStatus();
  }

  // -- keyboard --------------------------------------------------------------------------------

  shortcut(ev) {
    if (!ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.code === "KeyA" || ev.code === "KeyR") {
      const focused = document.activeElement && document.activeElement.closest?.("[data-testid=offer]");
      const id = focused ? focused.dataset.offer : this.offerCards.keys().next().value;
      if (!id) return;
      ev.preventDefault();
      if (ev.code === "KeyA") this.accept(id);
      else this.reject(id);
    } else if (/^Digit[1-9]$/.test(ev.code)) {
      const id = [...this.views.keys()][Number(ev.code.slice(5)) - 1];
      if (id) { ev.preventDefault(); this.select(id, true); }
    }
  }

  tabKeys(ev) {
    const ids = [...this.views.keys()];
    const i = ids.indexOf(this.active);
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: ids.length - 1 }[ev.key];
    if (to === undefined || !ids.length) return;
    ev.preventDefault();
    this.select(ids[(to + ids.length) % ids.length], true);
  }
}

function label(status) {
  return status ? status.charAt(0).toUpperCase() + status.slice(1) : "";
}

async function start(root) {
  const note = sessionStorage.getItem("switchboard.note");
  sessionStorage.removeItem("switchboard.note");
  let session = loadSession();
  if (!session) session = await signIn(root, { title: "Sign in to the agent console", note });
  return new AgentConsole(root, session);
}

start(document.getElementById("app"));

/** How a notice names a customer: their name, else their address or number, else "the
 *  customer" (an anonymous chat visitor's id tells an agent nothing). */
function customerName(customer) {
  if (customer && customer.name) return customer.name;
  const known = ((customer && customer.identities) || []).find((i) => !i.startsWith("visitor:"));
  return known ? identityLabel(known) : "the customer";
}
