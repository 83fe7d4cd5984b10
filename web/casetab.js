// casetab.js — one open case: its tab, the customer's timeline, the reply box and the actions
// (transfer, follow-up, wrap-up → complete).

import { CHANNEL_LABEL, clock, h, replace, shortId } from "./dom.js";
import { bdi, knownEmails, renderTimeline, shown } from "./timeline.js";

const FOLLOWUP_CHOICES = [
  [60, "In 1 minute"], [15 * 60, "In 15 minutes"], [3600, "In 1 hour"], [4 * 3600, "In 4 hours"],
  [24 * 3600, "Tomorrow, same time"],
];
const MAX_REPLY_CHARS = 32000; // a reply's or note's length (router/agent_ws.py)
const STATUS_LABEL = { assigned: "In progress", wrapping: "Wrapping up", completed: "Completed" };

let seq = 0;

/**
 * app: {conn, me, timeline(customerId), queues, dispositions, canned, drafts (Map), toast(text, opts),
 *       announce(text), removeCase(caseId), select(caseId)}
 */
export class CaseView {
  constructor(app, detail) {
    this.app = app;
    this.uid = `c${++seq}`;
    this.case = detail.case;
    this.customer = detail.customer || { id: detail.case.customer, name: "", identities: [] };
    this.tab = h("button", {
      role: "tab", id: `tab-${this.uid}`, "aria-controls": `panel-${this.uid}`, "aria-selected": "false",
      tabindex: "-1", class: "case-tab", testid: "case-tab", data: { case: this.case.id },
      onclick: () => app.select(this.case.id),
    });
    this.list = h("ol", { class: "timeline", testid: "timeline", role: "log", "aria-live": "polite",
      "aria-label": "Customer history, newest last" });
    this.more = h("button", { class: "link-button history-more", testid: "history-more",
      onclick: () => this.loadOlder() }, "Load earlier history");
    this.scroller = h("div", { class: "tl-scroll", tabindex: "0", "aria-label": "Customer history" }, this.list);
    this.head = h("header", { class: "case-head" });
    // its own slot, so a callback requested while the case is open shows without redrawing the header
    this.callbackSlot = h("div", { class: "case-callback-slot" });
    // the same for a chat visitor who closed the page (case.updated visitor.left / visitor.back)
    this.presenceSlot = h("div", { class: "case-presence-slot" });
    // and for a caller who hung up, a chat the customer ended (case.updated call.ended /
    // conversation.ended; the case's `ended` after a reload)
    this.endedSlot = h("div", { class: "case-ended-slot" });
    this.actions = h("aside", { id: `actions-${this.uid}`, class: "case-actions", "aria-label": "Case actions",
      tabindex: "-1" });
    // at ≤ 1100 px the actions follow the conversation, below the fold: the header says they are
    // there and takes you to them (CSS hides it where they stand beside the conversation)
    this.jumpLabel = h("span", null, "Actions");
    this.jumpArrow = h("span", { "aria-hidden": "true" }, " ↓");
    this.jump = h("button", { type: "button", class: "secondary small actions-jump", testid: "case-actions-jump",
      "aria-controls": `actions-${this.uid}`, title: "Wrap up, transfer, follow-up",
      onclick: () => this.jumpToActions() }, this.jumpLabel, this.jumpArrow);
    this.el = h("section", {
      role: "tabpanel", id: `panel-${this.uid}`, "aria-labelledby": `tab-${this.uid}`, class: "case-panel",
      testid: "case-panel", data: { case: this.case.id }, hidden: true,
    },
    this.head,
    this.body = h("div", { class: "case-body" },
      h("section", { class: "conversation", "aria-label": "Conversation" },
        h("div", { class: "tl-top" }, this.more), this.scroller, this.composerForm = this.composer()),
      this.actions));
    this.actionsInView = false;
    if (typeof IntersectionObserver === "function") {
      new IntersectionObserver(([e]) => this.showJump(e.isIntersecting), { root: this.body, threshold: 0.25 })
        .observe(this.actions);
    }
    this.render();
  }

  /** The cue reads "Actions ↓" while they are out of sight, "Conversation ↑" once they show. */
  showJump(inView) {
    this.actionsInView = inView;
    this.jumpLabel.textContent = inView ? "Conversation" : "Actions";
    this.jumpArrow.textContent = inView ? " ↑" : " ↓";
    this.jump.title = inView ? "Back to the conversation" : "Wrap up, transfer, follow-up";
  }

  jumpToActions() {
    const behavior = matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth";
    if (this.actionsInView) {
      this.body.scrollTo({ top: 0, behavior });
      this.input.focus({ preventScroll: true });
    } else {
      this.actions.scrollIntoView({ block: "start", behavior });
      this.actions.focus({ preventScroll: true });
    }
  }

  get timeline() {
    return this.app.timeline(this.customer.id || this.case.customer);
  }

  update(detail) {
    this.case = detail.case;
    if (detail.customer) this.customer = detail.customer;
    this.render();
  }

  /** An admin added, renamed or removed a queue (the console's queues are new): the case
   *  shows its queue by its name now, and the transfer menu lists them as they are. */
  queuesUpdated() {
    this.render();
    if (this.queueMenu) this.queueMenu();
  }

  setActive(active) {
    this.el.hidden = !active;
    this.tab.setAttribute("aria-selected", String(active));
    this.tab.tabIndex = active ? 0 : -1;
    this.tab.classList.toggle("active", active);
    if (active) {
      this.renderTimeline(true);
      // in a strip fuller than the window, the selected tab is scrolled into it, not left cut off
      this.tab.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
  }

  render() {
    const c = this.case;
    const name = shown(this.customer.name) || identities(this.customer.identities, "Customer");
    this.renderTab(name);
    this.renderCallback();
    this.renderEnded();
    this.renderPresence();
    const caller = callerNumber(c, this.customer);
    // a caller known only by the number the call came from (no phone identity: a SIP or
    // client caller, a withheld number) still shows it, after what the customer is known by
    const callerShown = caller && !(this.customer.identities || []).some((i) => String(i) === `phone:${caller}`);
    replace(this.head,
      h("div", { class: "case-who" },
        h("div", { class: "case-who-line" }, h("h2", { testid: "case-customer", dir: "auto" }, name), this.jump),
        h("p", { class: "case-ids", testid: "case-ids" }, identities(this.customer.identities),
          callerShown ? [" · calling from ", bdi(caller, { class: "case-caller", testid: "case-caller-number" })] : null),
        this.callbackSlot,
        this.endedSlot,
        this.presenceSlot,
        notVerified(this.customer) ? h("p", { class: "case-claims", testid: "case-claims", title: UNVERIFIED_TITLE },
          "Says: ", bdi((this.customer.claims || []).length ? identities(this.customer.claims) : name),
          " · not verified") : null),
      h("dl", { class: "case-facts" },
        fact("Channel", CHANNEL_LABEL[c.channel] || c.channel),
        c.subject ? fact("Subject", bdi(c.subject, { title: c.subject })) : null, // cut: whole on hover
        fact("Queue", this.app.queueName(c.queue), "case-queue"),
        fact("Status", STATUS_LABEL[c.status] || c.status, "case-status"),
        fact("Case", shortId(c.id))));
    if (this.actionsFor !== c.status) {
      this.actionsFor = c.status; // re-render the forms only when the case's state changes
      this.renderActions();
    }
    this.renderTimeline();
  }

  renderTab(name = shown(this.customer.name) || identities(this.customer.identities, "Customer")) {
    const c = this.case;
    // two cases of one customer read alike in the tab: the subject tells them apart on hover,
    // and to a screen reader
    if (c.subject) this.tab.title = `${name} — ${c.subject}`; else this.tab.removeAttribute("title");
    replace(this.tab,
      h("span", { class: `badge ch-${c.channel}` }, CHANNEL_LABEL[c.channel] || c.channel),
      bdi(name, { class: "case-tab-name" }),
      c.subject ? h("span", { class: "visually-hidden" }, ` — ${c.subject}`) : null,
      wantsCallback(c) ? h("span", { class: "case-tab-state case-tab-callback", testid: "case-tab-callback",
        title: "Callback requested" }, "callback") : null,
      c.status === "wrapping" ? h("span", { class: "case-tab-state" }, "wrap-up") : null);
  }

  renderCallback() {
    replace(this.callbackSlot, callbackNote(this.case, this.customer, "case-callback"));
  }

  /** The caller asked to be called back while the case is open (case.updated
   *  callback.requested, with the number the caller left if any): the header and the tab say
   *  so at once. */
  markCallback(number) {
    if (wantsCallback(this.case)) return false;
    this.case = withCallback(this.case, number);
    this.renderTab();
    this.renderCallback();
    return true;
  }

  /** When the customer ended the conversation (ms), or 0: see endedAt. */
  get ended() {
    return endedAt(this.case, this.timeline.entries);
  }

  /** "Call ended · 14:03" (the caller hung up) or "Customer ended the chat · 14:03" under the
   *  customer's addresses, until the customer is back (a chat visitor who writes again). */
  renderEnded() {
    const at = this.ended;
    const shownAt = at ? String(at) : "";
    if (this.endedShown === shownAt) return;
    this.endedShown = shownAt;
    const voice = this.case.channel === "voice";
    replace(this.endedSlot, at ? h("p", { class: "case-ended", testid: "case-ended",
      title: voice ? "The caller hung up: wrap up the case when your notes are done"
        : "The customer ended the chat: replies may not reach them until they write again" },
    h("span", { class: "badge case-ended-badge" }, voice ? "Call ended" : "Customer ended the chat"),
    " · ", h("time", { datetime: new Date(at).toISOString() }, clock(at / 1000))) : null);
    this.renderPresence();
  }

  /** The caller hung up, or the chat visitor ended the chat (`at`, ms): the header says so at
   *  once. A chat the visitor ended again (they wrote after the first end) takes the new time. */
  markEnded(at) {
    if (Number(this.case.ended) === at) return;
    this.case = { ...this.case, ended: at };
    this.renderEnded();
  }

  renderPresence() {
    // a chat the visitor ended says so (renderEnded): that they left the page is moot then
    const at = this.ended ? 0 : this.case.visitor_left;
    replace(this.presenceSlot, at ? h("p", { class: "visitor-left", testid: "case-visitor-left",
      title: "No chat window of theirs is open: they may not see your replies until they come back" },
    h("span", { class: "badge visitor-left-badge" }, "Visitor left the page"), ` · ${clock(at / 1000)}`) : null);
  }

  /** The chat visitor closed the page (`at`, ms) or came back: the header says so. Returns
   *  whether anything changed, so a repeated push is not announced twice. */
  markVisitorLeft(at) {
    if (this.case.visitor_left) return false;
    this.case = { ...this.case, visitor_left: at };
    this.renderPresence();
    return true;
  }

  markVisitorBack() {
    if (!this.case.visitor_left) return false;
    this.case = { ...this.case };
    delete this.case.visitor_left;
    this.renderPresence();
    return true;
  }

  renderTimeline(force) {
    this.renderEnded(); // a chat visitor who writes again is back: the header follows
    if (this.el.hidden && !force) return;
    const tl = this.timeline;
    renderTimeline(this.list, tl, this.case.id, knownEmails(this.customer), shown(this.customer.name));
    this.more.hidden = !tl.hasOlder;
  }

  async loadOlder() {
    const tl = this.timeline;
    // disabled while it loads, the button drops focus (to the page): given back after, or to
    // the history itself once there is no earlier page
    const hadFocus = document.activeElement === this.more;
    this.more.disabled = true;
    try {
      const ack = await this.app.conn.request("history.fetch",
        { customer: this.customer.id || this.case.customer, before: tl.start, limit: 50 });
      tl.prepend(ack.history);
      this.app.timelineChanged(this.customer.id);
    } catch (e) {
      this.app.toast(e.message, { kind: "error" });
    } finally {
      this.more.disabled = false;
      if (hadFocus) (this.more.hidden ? this.scroller : this.more).focus({ preventScroll: true });
    }
  }

  // -- composer --------------------------------------------------------------------------------

  /** The case's unsent draft: its text and what it was written as (`kind`: reply or note; ""
   *  for none yet). It outlives this view's reply box, which is built again when the case's
   *  state changes and on every reconnect. */
  draft() {
    const d = this.app.drafts.get(this.case.id);
    return d && typeof d === "object" ? d : { text: typeof d === "string" ? d : "", kind: "" };
  }

  saveDraft() {
    if (this.input.value) this.app.drafts.set(this.case.id, { text: this.input.value, kind: this.kind });
    else this.app.drafts.delete(this.case.id);
    this.renderStranded();
  }

  composer() {
    // calls take notes only; so does a case in wrap-up (the conversation has ended)
    const canReply = (this.case.channel === "chat" || this.case.channel === "email")
      && this.case.status !== "wrapping";
    const id = `reply-${this.uid}`;
    const draft = this.draft();
    const replyHint = `Write a ${this.case.channel === "email" ? "reply email" : "chat reply"}…`;
    const noteHint = "Write an internal note (the customer never sees it)…";
    this.input = h("textarea", { id, rows: "3", testid: "reply-input", class: "reply-input",
      placeholder: canReply ? replyHint : noteHint, value: draft.text });
    this.input.addEventListener("input", () => this.saveDraft());
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); this.send(); }
    });
    // a draft stays what it was written as when the box is built again: a note typed in
    // wrap-up, or with "Internal note" chosen, is still a note when replies are possible again
    // (the customer wrote, a reconnect); and a reply is never quietly filed as a note
    this.mode = canReply ? (draft.kind === "note" ? "note" : "reply") : "note";
    this.kind = draft.text && draft.kind ? draft.kind : this.mode;
    const label = h("label", { for: id, class: "visually-hidden" }, this.mode === "reply" ? "Reply to customer" : "Internal note");
    const sendLabel = () => (this.mode === "reply" ? "Send reply" : "Add note");
    this.sendButton = h("button", { type: "submit", class: "primary", testid: "reply-send" }, sendLabel());
    const modeRadio = (value, text) => h("label", { class: "seg" },
      h("input", { type: "radio", name: `mode-${this.uid}`, value, checked: this.mode === value,
        testid: `compose-mode-${value}`,
        onchange: () => {
          this.mode = value;
          this.sendButton.textContent = sendLabel();
          this.input.placeholder = value === "reply" ? replyHint : noteHint;
          label.textContent = value === "reply" ? "Reply to customer" : "Internal note";
          form.classList.toggle("note-mode", value === "note");
          // the agent says what the draft is now: a wrap-up's "not sent" question is moot
          this.kind = value;
          this.saveDraft();
          if (this.unsentBox) { this.unsentBox.remove(); this.unsentBox = null; }
        } }), text);
    // a reply typed and not sent when the conversation ended elsewhere (wrapped up in another
    // window of the agent's): it stays in the box, and says it is a reply the box cannot send
    this.stranded = h("p", { id: `unsent-${this.uid}`, class: "form-error", role: "status",
      testid: "draft-unsent-reply", hidden: true },
    "Your unsent reply is kept here. The conversation has ended, so it cannot go to the customer now ",
    "(it can if they write again). “Add note” files it as an internal note instead.");
    this.input.setAttribute("aria-describedby", this.stranded.id);
    const canned = Object.entries(this.app.canned);
    // a mouse's pick inserts at once; the keyboard's arrows only move through the list (each
    // fires change), and Enter inserts the one shown
    let browsing = false;
    const pick = (el) => {
      const text = this.app.canned[el.value];
      el.value = "";
      browsing = false;
      if (text) this.insert(text);
    };
    const cannedSelect = canned.length ? h("select", { testid: "canned-select",
      "aria-label": "Insert a canned reply (arrow keys to choose, Enter to insert)",
      onkeydown: (ev) => {
        if (ev.key === "Enter") {
          if (ev.target.value) { ev.preventDefault(); pick(ev.target); }
        } else if (ev.key === "Escape") {
          ev.target.value = "";
          browsing = false;
        } else if (ev.key === " ") {
          browsing = false; // opens the list: what is picked there inserts
        } else if (!ev.altKey && !ev.ctrlKey && !ev.metaKey && ev.key !== "Tab") {
          browsing = true; // arrows, Home/End, typing a letter: choosing, not yet inserting
        }
      },
      onchange: (ev) => { if (!browsing) pick(ev.target); },
      onblur: (ev) => { browsing = false; ev.target.value = ""; } },
    h("option", { value: "" }, "Canned reply…"),
    canned.map(([key, text]) => h("option", { value: key }, `${key} — ${text.slice(0, 40)}${text.length > 40 ? "…" : ""}`))) : null;
    const form = h("form", { class: `composer${this.mode === "note" ? " note-mode" : ""}`, testid: "composer",
      onsubmit: (ev) => { ev.preventDefault(); this.send(); } },
    h("div", { class: "composer-tools" },
      canReply ? h("fieldset", { class: "segmented" }, h("legend", { class: "visually-hidden" }, "Send as"),
        modeRadio("reply", "Reply"), modeRadio("note", "Internal note"))
        : h("span", { class: "muted", testid: "notes-only" },
          this.case.channel === "voice" ? "Notes only on calls" : "Notes only in wrap-up"),
      cannedSelect),
    label, this.stranded, this.input,
    h("div", { class: "composer-foot" },
      h("span", { class: "hint" }, h("kbd", null, "Ctrl"), " + ", h("kbd", null, "Enter"), " to send"),
      this.sendButton));
    this.renderStranded();
    return form;
  }

  renderStranded() {
    this.stranded.hidden = !(this.kind === "reply" && this.mode === "note" && this.input.value.trim());
  }

  insert(text) {
    const el = this.input;
    const start = el.selectionStart ?? el.value.length;
    const end = el.selectionEnd ?? el.value.length;
    // after a word, a space first: "…please." then "Bye." reads "…please. Bye."
    const gap = start > 0 && !/\s/.test(el.value[start - 1]) ? " " : "";
    el.setRangeText(gap + text, start, end, "end");
    this.saveDraft();
    el.focus();
  }

  focusComposer() {
    this.input.focus();
  }

  /** Send what is in the box, as a reply or a note (`as`; by default what the box is set to). */
  async send(as = this.mode) {
    const typed = this.input.value;
    const text = typed.trim();
    // one send at a time: a second Ctrl+Enter while the first is on its way would send the
    // customer the same reply twice
    if (!text || this.sending) return;
    const chars = [...text].length; // characters, as the server counts them
    if (chars > MAX_REPLY_CHARS) {
      this.app.toast(`Not sent: ${chars.toLocaleString("en")} characters, `
        + `${MAX_REPLY_CHARS.toLocaleString("en")} at most. Shorten it, or send it in parts.`, { kind: "error" });
      return;
    }
    this.sending = true;
    this.sendButton.disabled = true;
    try {
      const ack = await this.app.conn.request(as === "reply" ? "case.reply" : "case.note",
        { case: this.case.id, text });
      // what was typed while it went out stays in the box; only what was sent leaves it
      const now = this.input.value;
      this.input.value = now === typed ? "" : now.startsWith(typed) ? now.slice(typed.length).trimStart() : now;
      this.kind = this.mode;
      this.saveDraft();
      if (this.timeline.add(ack.entry)) this.app.timelineChanged(this.customer.id);
    } catch (e) {
      this.app.toast(`Not sent: ${e.message}`, { kind: "error" });
    } finally {
      this.sending = false;
      this.sendButton.disabled = false;
      this.input.focus();
    }
  }

  // -- actions ---------------------------------------------------------------------------------

  renderActions() {
    // in wrap-up the conversation has ended: no transfer (the server refuses it: case.wrapping)
    replace(this.actions,
      this.wrapSection(),
      this.case.status === "wrapping" ? null : this.transferSection(),
      this.followupSection());
  }

  wrapSection() {
    if (this.case.status !== "wrapping") {
      return h("section", { class: "action-card" },
        h("h3", null, "Wrap-up"),
        h("p", { class: "hint" }, "End the conversation and do the after-contact work. You keep this slot until you complete the case."),
        h("button", { class: "primary", testid: "wrapup", onclick: (ev) => this.wrapup(ev.currentTarget) }, "Wrap up"));
    }
    const sel = `disp-${this.uid}`;
    const noteId = `wnote-${this.uid}`;
    this.disposition = h("select", { id: sel, required: true, testid: "disposition-select" },
      h("option", { value: "" }, "Choose a disposition…"),
      this.app.dispositions.map((d) => h("option", { value: d }, d)));
    const note = h("textarea", { id: noteId, rows: "2", testid: "wrapup-note" });
    // the disposition and note chosen so far outlive a reload, as the reply box's draft does
    const kept = this.app.drafts.get(`${this.case.id}#wrap`) || {};
    if (typeof kept.disposition === "string" && this.app.dispositions.includes(kept.disposition)) {
      this.disposition.value = kept.disposition;
    }
    if (typeof kept.note === "string") note.value = kept.note;
    const keep = () => {
      if (this.disposition.value || note.value) {
        this.app.drafts.set(`${this.case.id}#wrap`, { disposition: this.disposition.value, note: note.value });
      } else {
        this.app.drafts.delete(`${this.case.id}#wrap`);
      }
    };
    this.disposition.addEventListener("change", keep);
    note.addEventListener("input", keep);
    const done = h("button", { type: "submit", class: "primary", testid: "complete" }, "Complete case");
    const complete = async () => {
      done.disabled = true;
      try {
        await this.app.conn.request("case.complete", { case: this.case.id, disposition: this.disposition.value, note: note.value });
        this.app.announce(`Case completed: ${this.disposition.value}.`);
        this.app.removeCase(this.case.id);
      } catch (e) {
        this.app.toast(e.message, { kind: "error" });
        done.disabled = false;
      }
    };
    return h("form", { class: "action-card wrapping", onsubmit: (ev) => {
      ev.preventDefault();
      // a note typed and not added, or a follow-up filled in and not scheduled, would go with it
      const go = () => this.unscheduledFirst(done, "Completing closes the case.", "complete", complete);
      if (this.input.value.trim()) this.askUnsent(done, "Completing closes the case.", "complete", go);
      else go();
    } },
    h("h3", null, "Wrap-up"),
    h("label", { for: sel }, "Disposition"), this.disposition,
    h("label", { for: noteId }, "Wrap-up note ", h("span", { class: "muted" }, "(optional)")), note,
    done);
  }

  /** The case's status changed (wrap-up; the customer writing again resumes it): the header,
   *  the actions and the reply box follow — in wrap-up it takes notes only (the draft is kept). */
  setStatus(status) {
    this.case = { ...this.case, status };
    const composer = this.composer();
    this.composerForm.replaceWith(composer);
    this.composerForm = composer;
    this.render();
  }

  async wrapup(button) {
    // wrap-up ends the conversation: a reply typed and not sent would stay behind in a box that
    // now takes notes only, so ask first (send it, or drop it)
    if (this.mode === "reply" && this.input.value.trim()) {
      this.askUnsent(button, "Wrap-up ends the conversation.", "wrap up", () => this.wrapup(button));
      return;
    }
    button.disabled = true;
    try {
      await this.app.conn.request("case.wrapup", { case: this.case.id });
      this.setStatus("wrapping");
      this.disposition.focus();
    } catch (e) {
      this.app.toast(e.message, { kind: "error" });
      button.disabled = false;
    }
  }

  /** Text in the box that an action would leave behind (wrap-up ends the conversation;
   *  complete and transfer take the case away): ask first — send it as what it was written
   *  as (a reply, a note), then go on; go on without it; or cancel. */
  askUnsent(button, why, verb, proceed) {
    const card = button.closest(".action-card");
    if (card.querySelector("[data-testid=wrapup-unsent]")) return;
    const kind = this.mode;
    const reply = kind === "reply";
    const Verb = verb[0].toUpperCase() + verb.slice(1);
    const close = () => { box.remove(); this.unsentBox = null; };
    const question = reply ? "Your reply has not been sent" : "Your note has not been added";
    const box = h("div", { class: "unsent", role: "alertdialog", testid: "wrapup-unsent", "aria-label": question },
    h("p", null, reply ? `Your reply to the customer has not been sent. ${why}` : `Your internal note has not been added. ${why}`),
    h("button", { type: "button", class: "primary", testid: "wrapup-send-first", onclick: async () => {
      close();
      await this.send(kind); // what was asked about, whatever the box is set to now
      if (!this.input.value.trim()) await proceed(); // sent: the box is empty
    } }, reply ? `Send it, then ${verb}` : `Add it, then ${verb}`),
    h("button", { type: "button", class: "secondary", testid: "wrapup-discard", onclick: () => {
      close();
      this.input.value = "";
      this.saveDraft();
      proceed();
    } }, reply ? `${Verb} without sending` : `${Verb} without it`),
    h("button", { type: "button", class: "link-button", testid: "wrapup-cancel", onclick: () => { close(); this.input.focus(); } },
      "Cancel"));
    this.unsentBox = box;
    card.append(box);
    box.querySelector("button").focus();
  }

  /** A follow-up filled in and not scheduled (its note typed): an action that takes the case
   *  away would leave it unset while the agent believes it is — ask first: schedule it, then
   *  go on; go on without it; or cancel. Otherwise go on. */
  async unscheduledFirst(button, why, verb, proceed) {
    const text = this.followupNote ? this.followupNote.value.trim() : "";
    if (!text) return proceed();
    const card = button.closest(".action-card");
    if (card.querySelector("[data-testid=followup-unsent]")) return undefined;
    const Verb = verb[0].toUpperCase() + verb.slice(1);
    const close = () => box.remove();
    const box = h("div", { class: "unsent", role: "alertdialog", testid: "followup-unsent",
      "aria-label": "Your follow-up is not scheduled" },
    h("p", null, "Your follow-up is not scheduled: “", text, `”. ${why}`),
    h("button", { type: "button", class: "primary", testid: "followup-unsent-schedule", onclick: async () => {
      close();
      if (await this.scheduleFollowup()) await proceed();
    } }, `Schedule it, then ${verb}`),
    h("button", { type: "button", class: "secondary", testid: "followup-unsent-discard", onclick: () => {
      close();
      this.followupNote.value = "";
      this.app.drafts.delete(`${this.case.id}#followup`);
      proceed();
    } }, `${Verb} without it`),
    h("button", { type: "button", class: "link-button", testid: "followup-unsent-cancel",
      onclick: () => { close(); this.followupNote.focus(); } }, "Cancel"));
    card.append(box);
    box.querySelector("button").focus();
    return undefined;
  }

  transferSection() {
    const u = this.uid;
    let to = "queue";
    const queue = h("select", { id: `tq-${u}`, testid: "transfer-queue" });
    let listed = "";
    const fillQueues = () => {
      const key = JSON.stringify(this.app.queues);
      if (key === listed) return; // unchanged: an open menu is left alone
      listed = key;
      const keep = queue.options.length ? queue.value : this.case.queue; // "": asking for a choice
      const options = this.app.queues.map((q) => h("option", { value: q.id, selected: q.id === keep }, q.name));
      // the queue chosen (or the case's own) was removed: ask again rather than fall silently to
      // another queue, which one more click would transfer the case to (as the supervisor's menu)
      if (!this.app.queues.some((q) => q.id === keep)) {
        options.unshift(h("option", { value: "", disabled: true, selected: true }, "Choose a queue"));
      }
      replace(queue, options);
    };
    fillQueues();
    this.queueMenu = fillQueues; // queuesUpdated()
    // the queues as declared now, each time the menu is used: an admin may have added or
    // renamed one since the console signed in
    queue.addEventListener("focus", async () => { await this.app.refreshQueues(); fillQueues(); });
    // the colleagues, from agents.list each time "To an agent" is chosen (who is signed in
    // changes): typing filters them
    const directory = h("datalist", { id: `td-${u}`, testid: "transfer-agents" });
    const agent = h("input", { id: `ta-${u}`, testid: "transfer-agent", autocomplete: "off", spellcheck: "false",
      list: `td-${u}`, placeholder: "name or id, e.g. bob" });
    // everyone agents.list named, to tell who the typed name or id is (the field takes
    // either): the server knows agents by id, and the agent is told what they did by name
    let everyone = [];
    const colleague = (typed) => {
      const t = typed.toLowerCase();
      const byName = everyone.filter((a) => String(a.name || "").toLowerCase() === t);
      return everyone.find((a) => a.id === typed) || everyone.find((a) => String(a.id).toLowerCase() === t)
        || (byName.length === 1 ? byName[0] : null);
    };
    const loadDirectory = async () => {
      try {
        const { agents } = await this.app.conn.request("agents.list");
        everyone = agents;
        const ch = this.case.channel;
        // who could take it now first: available with room on its channel; then available but
        // busy ("on a call", "chats full": a transfer to them waits until they are free)
        const rank = (a) => (a.status !== "available" ? 2 : busy(a, ch) ? 1 : 0);
        const taking = new Set((this.app.statuses || []).filter((s) => s.routable).map((s) => s.name));
        replace(directory, agents.filter((a) => canTake(a, this.app.me, ch, taking))
          .sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name))
          .map((a) => h("option", { value: a.id,
            label: [a.name, a.status, busy(a, ch)].filter(Boolean).join(" · ") })));
      } catch {
        /* the id can still be typed */
      }
    };
    const note = this.keepTyped(h("textarea", { id: `tn-${u}`, rows: "2", testid: "transfer-note" }), "transfer");
    const queueRow = h("div", { class: "field" }, h("label", { for: `tq-${u}` }, "Queue"), queue);
    const agentRow = h("div", { class: "field", hidden: true }, h("label", { for: `ta-${u}` }, "Agent"), agent,
      directory);
    const pick = (value, text) => h("label", { class: "seg" },
      h("input", { type: "radio", name: `tt-${u}`, value, checked: value === "queue", testid: `transfer-to-${value}`,
        onchange: () => {
          to = value; queueRow.hidden = value !== "queue"; agentRow.hidden = value !== "agent";
          if (value === "agent") loadDirectory();
        } }),
      text);
    const submit = h("button", { type: "submit", class: "secondary", testid: "transfer-submit" }, "Transfer");
    // why a transfer did not happen, next to the form (and as a toast): the case stays yours
    const error = h("p", { class: "form-error action-error", role: "alert", testid: "transfer-error", hidden: true });
    const fail = (text) => {
      error.textContent = text;
      error.hidden = false;
      this.app.toast(text, { kind: "error" });
    };
    agent.addEventListener("input", () => { error.hidden = true; });
    const transfer = async (target, who, typed) => {
      submit.disabled = true;
      const where = target.queue ? this.app.queueName(target.queue) : (who && who.name) || typed;
      try {
        await this.app.conn.request("case.transfer", { case: this.case.id, ...target, note: note.value });
        this.app.toast(`Transferred to ${where}.`);
        this.app.removeCase(this.case.id);
      } catch (e) {
        fail(`Not transferred to ${where}: ${e.message || e.code}. The case is still yours.`);
        submit.disabled = false;
        // say a queue removed since the menu was last used: it leaves the menu (which asks again)
        if (target.queue) { await this.app.refreshQueues(); fillQueues(); }
      }
    };
    return h("form", { class: "action-card", onsubmit: async (ev) => {
      ev.preventDefault();
      error.hidden = true;
      const typed = agent.value.trim();
      const who = to === "agent" && typed ? colleague(typed) : null;
      const target = to === "queue" ? { queue: queue.value } : { agent: who ? who.id : typed };
      if (to === "agent" && !target.agent) { agent.focus(); return; }
      if (to === "queue" && !target.queue) { fail("Not transferred: choose a queue."); queue.focus(); return; }
      if (target.agent && target.agent.toLowerCase() === String(this.app.me.id || "").toLowerCase()) {
        fail("Not transferred: this case is already yours. Choose a colleague.");
        agent.focus();
        return;
      }
      const why = "The case leaves you with the transfer.";
      const go = () => this.unscheduledFirst(submit, why, "transfer", () => transfer(target, who, typed));
      if (this.input.value.trim()) {
        this.askUnsent(submit, why, "transfer", go);
        return;
      }
      await go();
    } },
    h("h3", null, "Transfer"),
    h("fieldset", { class: "segmented" }, h("legend", { class: "visually-hidden" }, "Transfer to"),
      pick("queue", "To a queue"), pick("agent", "To an agent")),
    queueRow, agentRow,
    h("label", { for: `tn-${u}` }, "Note for the next agent"), note,
    error,
    submit);
  }

  /** A form's text field whose text outlives a reload, as the reply box's draft does (kept as
   *  "<case>#<name>"; gone with the case). */
  keepTyped(el, name) {
    const key = `${this.case.id}#${name}`;
    const kept = this.app.drafts.get(key);
    if (kept && typeof kept.text === "string") el.value = kept.text;
    el.addEventListener("input", () => {
      if (el.value) this.app.drafts.set(key, { text: el.value });
      else this.app.drafts.delete(key);
    });
    return el;
  }

  followupSection() {
    const u = this.uid;
    const when = h("select", { id: `fw-${u}`, testid: "followup-when" },
      // an hour unless chosen: a note typed and Enter pressed is not a reminder a minute later
      FOLLOWUP_CHOICES.map(([s, text]) => h("option", { value: String(s), selected: s === 3600 }, text)));
    const note = this.keepTyped(h("input", { id: `fn-${u}`, testid: "followup-note",
      placeholder: "e.g. check the refund went through" }), "followup");
    const submit = h("button", { type: "submit", class: "secondary", testid: "followup-submit" }, "Schedule");
    this.followupNote = note; // unscheduledFirst
    /** Schedule what the form says; whether it was. */
    this.scheduleFollowup = async () => {
      submit.disabled = true;
      try {
        const ack = await this.app.conn.request("case.followup",
          { case: this.case.id, in_s: Number(when.value), note: note.value });
        // the history says so: whoever has the case next sees it
        if (ack.entry && this.timeline.add(ack.entry)) this.app.timelineChanged(this.customer.id);
        this.app.toast(`Follow-up reminder set for ${clock(ack.due / 1000)}.`, { testid: "followup-confirmation" });
        this.app.followupSet({ id: ack.id, case: this.case.id, due: ack.due / 1000, note: note.value,
          customer: this.customer.name || identities(this.customer.identities, ""),
          subject: this.case.subject || "", channel: this.case.channel });
        note.value = "";
        this.app.drafts.delete(`${this.case.id}#followup`);
        return true;
      } catch (e) {
        this.app.toast(e.message, { kind: "error" });
        return false;
      } finally {
        submit.disabled = false;
      }
    };
    return h("form", { class: "action-card", onsubmit: async (ev) => {
      ev.preventDefault();
      await this.scheduleFollowup();
    } },
    h("h3", null, "Follow-up"),
    h("label", { for: `fw-${u}` }, "Remind me"), when,
    h("label", { for: `fn-${u}` }, "Note"), note,
    submit);
  }
}

/** "on a call" / "chats full" / "emails full" when an agent has no room left on the channel
 *  (agents.list's load against capacity), else "". */
function busy(a, channel) {
  const cap = Number((a.capacity || {})[channel] || 0);
  const load = Number((a.load || {})[channel] || 0);
  if (!cap || load < cap) return "";
  return channel === "voice" ? (cap === 1 ? "on a call" : "calls full") : `${channel}s full`;
}

/** Whether a colleague from agents.list can be offered this case: never yourself; and when the
 *  directory tells their role or capacity, not a supervisor or admin without capacity for the
 *  case's channel, nor anyone with none for it, nor anyone not taking cases now (signed out,
 *  away, at lunch: not one of the ``taking`` statuses, when the workspace's are known). The
 *  server refuses those: transfer.invalid. */
function canTake(a, me, channel, taking) {
  if (!a || !a.id || a.status === "offline") return false;
  if (taking && taking.size && !taking.has(a.status)) return false;
  if (me && String(a.id).toLowerCase() === String(me.id || "").toLowerCase()) return false;
  if (a.capacity && typeof a.capacity === "object") return Number(a.capacity[channel] || 0) > 0;
  if (a.role && a.role !== "agent") return false;
  return true;
}

/** One identity as an agent reads it: "dana@example.com", "+15550100777"; ids that tell an agent
 *  nothing are named instead: an anonymous chat visitor ("web chat visitor"), a caller who
 *  withheld their number (the voice adapter knows them by the call alone: "withheld number"),
 *  a call from an app or a SIP phone ("alice (app call)", "bob@pbx.example.com (SIP)"). */
export function identityLabel(identity) {
  const [kind, ...rest] = String(identity).split(":");
  const value = rest.join(":");
  // two anonymous visitors' tabs must not read the same: the end of their id tells them apart
  if (kind === "visitor") return value ? `web chat visitor ${shortId(value)}` : "web chat visitor";
  if (kind === "external") {
    if (value.startsWith("twilio-call:")) return "withheld number";
    const m = /^twilio:(client|sips?):(.+)$/.exec(value);
    if (m) return m[1] === "client" ? `${m[2]} (app call)` : `${m[2]} (SIP)`;
  }
  return value || kind;
}

/** "dana@example.com · +15550100777 · web chat visitor …4f2a9c" (identityLabel each, once). */
function identities(list, none = "no known contact details") {
  const out = [];
  for (const i of list || []) {
    const label = identityLabel(i);
    if (!out.includes(label)) out.push(label);
  }
  return out.join(" · ") || none;
}

function fact(term, value, testid) {
  return h("div", { class: "fact" }, h("dt", null, term), h("dd", testid ? { testid } : null, value));
}

/** The number a call comes from: the customer's first phone identity, else the case's
 *  `caller` attribute (what the voice platform reported, e.g. a SIP or client address); ""
 *  for a case that is not a call, or when neither is known. */
export function callerNumber(caseView, customer) {
  if (!caseView || caseView.channel !== "voice") return "";
  const ids = ((customer && customer.identities) || []).map(String);
  const phone = ids.find((i) => i.startsWith("phone:"));
  if (phone) return phone.slice(6);
  const caller = caseView.attributes && caseView.attributes.caller;
  if (typeof caller !== "string") return "";
  // a withheld number comes as a placeholder (+266696687…) that is nobody's: the voice adapter
  // then knows the caller by the call alone; an app or SIP caller is named by their identity
  if (ids.some((i) => i.startsWith("external:twilio-call:") || i === `external:twilio:${caller}`)) return "";
  return caller.trim().slice(0, 200);
}

const END_KINDS = new Set(["call.ended", "conversation.ended"]);

/** When the customer ended the conversation on this case (ms), or 0: its latest end entry in
 *  the timeline (a chat the visitor ended, wrote again in and ended again: the second end),
 *  else the case's `ended` (the end entry not among the loaded timeline). 0 again once the
 *  customer is back after it: an inbound message of the case later in the timeline (a chat
 *  visitor who wrote again, a case reopened). */
export function endedAt(caseView, entries) {
  if (!caseView) return 0;
  let end = -1;
  (entries || []).forEach((e, i) => { if (e.case === caseView.id && END_KINDS.has(e.kind)) end = i; });
  const at = (end >= 0 ? Math.round(Number(entries[end].ts) * 1000) || 0 : 0) || Number(caseView.ended) || 0;
  if (!at) return 0;
  // back: they wrote again, or the case was reopened since (by them, or its agent taking it back)
  const back = (entries || []).some((e, i) => e.case === caseView.id
    && ((e.dir === "in" && (e.kind || "message") === "message") || e.kind === "reopened")
    && (end >= 0 ? i > end : Number(e.ts) * 1000 > at));
  return back ? 0 : at;
}

/** Whether the customer asked to be called back (`callback.requested`: the case's `callback`). */
export function wantsCallback(caseView) {
  return Boolean(caseView && caseView.callback && caseView.callback !== "0");
}

/** The case marked as wanting a callback, with the number the caller left (the live frame's
 *  `callback_number`) among its attributes, as the server now has it. */
export function withCallback(caseView, number) {
  const attributes = caseView.attributes || {};
  return { ...caseView, callback: "1",
    attributes: number ? { ...attributes, callback_number: number } : attributes };
}

/** The number to call back, the same on the console and the supervisor's page: the one the
 *  caller left (the case's `callback_number` attribute, as the Twilio bridge dials it), else
 *  the customer's phone (when `customer` is given: the supervisor's listings have none), else
 *  the one they called from (the case's `caller` attribute); "" when none is known. */
export function callbackNumber(caseView, customer) {
  const a = (caseView && caseView.attributes) || {};
  const phone = ((customer && customer.identities) || []).find((i) => String(i).startsWith("phone:"));
  for (const v of [a.callback_number, phone ? phone.slice(6) : "", a.caller]) {
    if (typeof v === "string" && v.trim()) return v.trim();
  }
  return "";
}

/** "Callback requested · call back on +14155550123" — on the offer card and in the case header,
 *  so the request is seen at a glance, not only in the timeline; null for any other case. */
export function callbackNote(caseView, customer, testid) {
  if (!wantsCallback(caseView)) return null;
  const number = callbackNumber(caseView, customer);
  // asked for by the caller, or a call handed on after the caller hung up (callback_reason)
  const why = { hung_up: "Call back: the caller hung up", followup: "Follow-up call: your phone rings, then theirs" }[
    caseView.callback_reason] || "Callback requested";
  return h("p", { class: "callback-note", testid },
    h("span", { class: "badge callback-badge" }, h("span", { "aria-hidden": "true" }, "☎ "), why),
    number ? [" · call back on ", bdi(number, { class: "callback-number", testid: `${testid}-number` })]
      : " · no number on file");
}

export const UNVERIFIED_TITLE =
  "Stated, not verified (typed into the chat, or an email its domain disowns); linked to no customer record";

/** Whether who the customer is rests only on what they said: claims (an email its domain
 *  disowns, details a chat visitor typed in), or a name typed by a chat visitor nobody vouches
 *  for (an anonymous visitor id is all that is known of them). The header then shows
 *  "Says: … · not verified"; the offer card marks the customer the same way. */
export function notVerified(customer) {
  if (!customer) return false;
  if ((customer.claims || []).length) return true;
  const ids = customer.identities || [];
  return Boolean(customer.name) && ids.length > 0 && ids.every((i) => String(i).startsWith("visitor:"));
}
