// offers.js — offer cards: who, what, why, and how long is left to answer.
//
// The countdown runs against the server's deadline, corrected by the clock offset measured
// with pings, so every console shows the same time left.

import { CHANNEL_LABEL, h, replace } from "./dom.js";
import { callbackNote, callerNumber, identityLabel, notVerified, UNVERIFIED_TITLE, wantsCallback, withCallback } from "./casetab.js";
import { bdi, caseSummary, shown } from "./timeline.js";

function whyText(why, queueName) {
  if (!why) return "";
  const filter = why.transferred ? "a transfer"
    : why.filter && why.filter !== "default_filter" ? `“${why.filter}”` : "the default route";
  const step = why.step > 1 ? `, escalation step ${why.step}` : "";
  return `${queueName(why.queue)} via ${filter}${step}: ${why.reason || "best available agent"}.`;
}

// Who the offer is from, and whether that is only what they say (the case tab's rule and
// wording: see notVerified in casetab.js): a forged email and the real customer must not look alike.
function customerLabel(customer) {
  if (!customer) return ["Unknown customer"];
  const unverified = notVerified(customer)
    ? h("span", { class: "offer-unverified", testid: "offer-unverified", title: UNVERIFIED_TITLE }, " · not verified")
    : null;
  // the name sits inside "Chat from …": isolated, so a right-to-left name or a control in it
  // cannot reorder the sentence
  if (customer.name) return [bdi(customer.name), unverified];
  const ids = customer.identities || [];
  const known = ids.find((i) => !i.startsWith("visitor:"));
  if (known) return [bdi(identityLabel(known)), unverified];
  const claim = (customer.claims || [])[0];
  if (claim) return [bdi(claim.replace(/^[a-z]+:/, "")), unverified];
  return [ids.length ? "a web chat visitor" : "Unknown customer"];
}

// What else they say they are, which the line above does not show (a chat visitor who typed
// a name and an email is "Chat from Ada · not verified", then "Says: ada@example.com"): the
// case tab's "Says:" line, on the card. Empty when there are no such claims.
function claimsSaid(customer) {
  if (!customer || !(customer.claims || []).length) return "";
  const shown = customer.name || (customer.identities || []).some((i) => !i.startsWith("visitor:"));
  return customer.claims.slice(shown ? 0 : 1).map((i) => String(i).replace(/^[a-z_]+:/, "")).join(" · ");
}

/** The note of the transfer (or supervisor's move) that brought the case here, from the
 *  customer's history the offer carries: the next agent reads why before accepting. Null when
 *  the case was not handed on since it was (re)opened, or the history does not reach it. */
function handedOn(offer, timeline) {
  const c = offer.case || {};
  if (!offer.why || !offer.why.transferred) return null; // the server's word (push.py handed_on)
  const entry = [...timeline.entries].reverse().find((e) => e.kind === "transfer" && e.case === c.id);
  if (!entry) return null;
  const who = entry.from ? bdi(entry.from) : "a colleague";
  return h("p", { class: "offer-transfer", testid: "offer-transfer" },
    entry.agent ? "Transferred by " : "Moved by ", who,
    entry.text ? [": “", h("span", { dir: "auto" }, shown(entry.text)), "”"] : ".");
}

/** A case the customer reopened by writing again: what they wrote now (the newest message of
 *  theirs in it), which the subject, the first message's, does not tell. Null otherwise. */
function wroteAgain(offer, timeline) {
  const c = offer.case || {};
  if (!c.reopened || (offer.why && offer.why.transferred)) return null;
  const entry = [...timeline.entries].reverse().find((e) => e.case === c.id && e.dir === "in" && e.text);
  if (!entry) return null;
  const text = shown(entry.text).trim();
  return h("p", { class: "offer-transfer offer-reopened", testid: "offer-reopened" },
    "Reopened · wrote again: “", h("span", { dir: "auto" }, text.length > 240 ? `${text.slice(0, 240)}…` : text), "”");
}

/**
 * One offer card. `actions` = {accept(offerId), reject(offerId), queueName(id), now()}.
 * Call tick() to refresh the countdown.
 */
export class OfferCard {
  constructor(offer, timeline, actions) {
    this.offer = offer;
    this.actions = actions;
    const c = offer.case || {};
    const channel = c.channel || "chat";
    const left = (offer.deadline - actions.now()) / 1000;
    this.windowS = Math.max(1, Math.round(left));
    this.seconds = h("span", { class: "offer-seconds", testid: "offer-countdown" });
    this.bar = h("progress", { class: "offer-progress", max: String(this.windowS), value: String(this.windowS),
      "aria-hidden": "true" });
    const earlier = timeline.entries.filter((e) => e.case !== c.id).length;
    const total = Math.max(timeline.total, timeline.entries.length);
    const ownCount = timeline.entries.length - earlier;
    const historyCount = Math.max(0, total - ownCount);
    const titleId = `offer-title-${offer.offer}`;
    this.accept = h("button", { class: "primary", testid: "offer-accept", "aria-keyshortcuts": "Alt+A",
      onclick: () => actions.accept(offer.offer) }, "Accept", h("kbd", null, "Alt A"));
    this.reject = h("button", { class: "secondary", testid: "offer-reject", "aria-keyshortcuts": "Alt+R",
      onclick: () => actions.reject(offer.offer) }, "Reject", h("kbd", null, "Alt R"));
    this.el = h("li", {
      class: `offer ch-${channel}`, tabindex: "0", testid: "offer", "aria-labelledby": titleId,
      data: { offer: offer.offer, case: c.id || "", channel },
    },
    h("div", { class: "offer-head" },
      h("span", { class: `badge ch-${channel}`, testid: "offer-channel" }, CHANNEL_LABEL[channel] || channel),
      c.priority ? h("span", { class: "offer-priority" }, `Priority ${c.priority}`) : null,
      h("span", { class: "offer-timer" }, h("span", { class: "visually-hidden" }, "Time left: "), this.seconds)),
    this.bar,
    this.who = h("p", { class: "offer-customer", id: titleId, testid: "offer-customer" }),
    this.claims = h("p", { class: "offer-unverified", testid: "offer-claims", title: UNVERIFIED_TITLE, hidden: true }),
    this.callbackSlot = h("div", { class: "offer-callback-slot" }, callbackNote(c, offer.customer, "offer-callback")),
    h("p", { class: "offer-subject", testid: "offer-subject", dir: "auto" }, caseSummary(c, timeline)),
    handedOn(offer, timeline) || wroteAgain(offer, timeline),
    h("p", { class: "offer-why", testid: "offer-why" },
      h("span", { class: "offer-why-label" }, "Why you: "), whyText(offer.why, actions.queueName)),
    historyCount ? h("p", { class: "offer-history" },
      `${historyCount} earlier ${historyCount === 1 ? "entry" : "entries"} in this customer's history`) : null,
    h("div", { class: "offer-actions" }, this.accept, this.reject));
    this.el.addEventListener("keydown", (ev) => {
      if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.target !== this.el) return;
      if (ev.key === "a" || ev.key === "A") { ev.preventDefault(); actions.accept(offer.offer); }
      if (ev.key === "r" || ev.key === "R") { ev.preventDefault(); actions.reject(offer.offer); }
    });
    this.renderCustomer();
    this.tick();
  }

  renderCustomer() {
    const channel = this.offer.case?.channel || "chat";
    const label = customerLabel(this.offer.customer);
    // a call shows the number it comes from, as a phone's screen does: "Call from Kim Lee ·
    // +14155550123" (not twice when the number is all that is known of the caller)
    const number = callerNumber(this.offer.case, this.offer.customer);
    const named = label.some((part) => (typeof part === "string" ? part : part?.textContent) === number);
    replace(this.who, `${CHANNEL_LABEL[channel] || channel} from `, ...label,
      number && !named ? [" · ", bdi(number, { class: "offer-caller", testid: "offer-caller-number" })] : null);
    const said = claimsSaid(this.offer.customer);
    replace(this.claims, said ? ["Says: ", bdi(said)] : []);
    this.claims.hidden = !said;
  }

  /** The customer as they are now (offer.updated: a chat visitor gave their name or details
   *  while the chat was offered). Changed in place, so an accept already under way opens the
   *  case with them. Whether what the card says of them changed. */
  setCustomer(customer) {
    const before = `${this.who.textContent}|${this.claims.textContent}`;
    this.offer.customer = customer;
    this.renderCustomer();
    replace(this.callbackSlot, callbackNote(this.offer.case, customer, "offer-callback"));
    return `${this.who.textContent}|${this.claims.textContent}` !== before;
  }

  /** The caller asked to be called back while the offer is pending (case.updated
   *  callback.requested): the card says so; the case opened from it carries the mark. */
  markCallback(number) {
    if (wantsCallback(this.offer.case)) return false;
    this.offer.case = withCallback(this.offer.case, number);
    replace(this.callbackSlot, callbackNote(this.offer.case, this.offer.customer, "offer-callback"));
    return true;
  }

  tick() {
    const left = Math.max(0, (this.offer.deadline - this.actions.now()) / 1000);
    this.seconds.textContent = left > 0 ? `${Math.ceil(left)} s` : "expiring";
    this.bar.value = Math.min(this.windowS, left);
    this.el.classList.toggle("urgent", left <= 10);
  }

  busy(on) {
    this.accept.disabled = on;
    this.reject.disabled = on;
  }
}
