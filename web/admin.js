// admin.js — the admin page: a workspace's agents, queues and workflow, changed through the
// administration REST API (docs/api.md) with the session's bearer token.
//
// Nothing here is live: the page reads the lists on start and again after every change it
// makes, so it shows what the server holds then. Every error the server answers ({code,
// message}, the message naming the field) is shown where it happened — next to the form or the
// row — and nothing typed into a form is lost on an error. A signed-in agent who is not an
// admin (their role is read from the server, not the sign-in) sees "Admins only".

import { CHANNEL_LABEL, clock, h, replace } from "./dom.js";
import { clearSession, loadSession, signedOut } from "./session.js";
import { signIn } from "./login.js";
import { reflowable, scroller } from "./tables.js";

const CHANNELS = ["chat", "email", "voice"];
// the Add forms create, never replace (If-None-Match: *): one someone added meanwhile is a 409
const CREATE_ONLY = { "If-None-Match": "*" };
const ROLES = [["agent", "Agent"], ["supervisor", "Supervisor"], ["admin", "Admin"]];
const NEW_CAPACITY = { chat: 3, email: 5, voice: 1 }; // what the server gives a new agent
const LISTS = ["skills", "languages"]; // the attributes the agent form edits

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headRow(...names) {
  return h("thead", null, h("tr", null, names.map(([text, cls]) => h("th", { scope: "col", class: cls },
    text ? text : h("span", { class: "visually-hidden" }, "Actions")))));
}

/** "support, billing ,, en" → ["support", "billing", "en"] (once each, in order). */
function listOf(text) {
  return [...new Set(String(text).split(",").map((s) => s.trim()).filter(Boolean))];
}

function label(s) {
  return s ? s.charAt(0).toUpperCase() + s.slice(1) : "";
}

/** An attribute's value as text: lists joined, anything else as JSON (strings as they are). */
function attrText(v) {
  if (Array.isArray(v)) return v.map((x) => (typeof x === "string" ? x : JSON.stringify(x))).join(", ");
  return typeof v === "string" ? v : JSON.stringify(v);
}

function tags(list, testid) {
  const items = Array.isArray(list) ? list : [];
  return items.length
    ? h("span", { class: "tags", testid }, items.map((s) => h("span", { class: "tag" }, attrText(s))))
    : h("span", { class: "muted", testid }, "—");
}

/** A labelled input with an optional hint under it (aria-describedby). */
function field(id, text, input, hint, cls = "") {
  input.id = id;
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: `field ${cls}`.trim() }, h("label", { for: id }, text), input, hintEl);
}

/** A form's error line (role=alert) and the fields it marks: `show(message, fields)` puts the
 *  server's message next to the form and marks the input its path names (aria-invalid). */
function formError(testid, id) {
  const el = h("p", { class: "form-error", role: "alert", testid, id, hidden: true });
  let marked = [];
  return {
    el,
    clear() {
      el.hidden = true;
      el.textContent = "";
      for (const input of marked) input.removeAttribute("aria-invalid");
      marked = [];
    },
    /** `fields`: [path suffix, input] — "agent.capacity.chat: …" marks the one for "capacity.chat". */
    show(message, fields = []) {
      this.clear();
      el.textContent = message;
      el.hidden = false;
      const path = String(message).split(":")[0].trim();
      for (const [key, input] of fields) {
        if (path === key || path.endsWith(`.${key}`)) {
          input.setAttribute("aria-invalid", "true");
          marked.push(input);
        }
      }
    },
  };
}

class AdminView {
  constructor(root, session) {
    this.root = root;
    this.session = session;
    this.agents = [];
    this.queues = [];
    this.agentErrors = new Map(); // agent id -> the server's answer to removing them
    this.queueErrors = new Map();
    this.agentButtons = new Map(); // agent id -> its row's Remove button (focus after a refusal)
    this.queueButtons = new Map();
    this.forbidden = false;
    this.workflowShown = null; // the workflow text as last read: unsaved edits are never replaced
    this.build();
    this.start();
  }

  // -- REST --------------------------------------------------------------------------------------

  /** A call with the session's token: the JSON answer (null for 204), or an ApiError with the
   *  server's message. A session that ended (401) goes back to the sign-in form, which says why;
   *  a role that may not do this (403: demoted meanwhile) shows "Admins only". */
  async api(method, path, body, extra = {}) {
    const headers = { Authorization: `Bearer ${this.session.token}`, ...extra };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(`/api${path}`,
        { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError(0, "offline", "The server can't be reached. Check your connection and try again.");
    }
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch { /* not JSON */ }
    }
    if (res.ok) return data;
    const code = (data && data.code) || "";
    const message = (data && data.message) || `Request failed (${res.status})`;
    if (res.status === 401) signedOut({ message, reason: code === "agent.unknown" ? "removed" : "" });
    if (res.status === 403) this.showForbidden();
    throw new ApiError(res.status, code, message);
  }

  async start() {
    try {
      const me = await this.api("GET", "/me");
      if (me.role !== "admin") {
        this.showForbidden(me.role);
        return;
      }
    } catch (e) {
      this.showLoadError(e);
      return;
    }
    await this.reload();
    this.loadWorkflow();
  }

  /** A queue as the page names it: its name, else its id. */
  queueLabel(id) {
    const q = this.queues.find((x) => x.id === id);
    return q && q.name ? q.name : id;
  }

  /** Read the agents and queues again: the page shows what the server holds now. */
  async reload() {
    try {
      const [agents, queues] = await Promise.all([this.api("GET", "/agents"), this.api("GET", "/queues")]);
      if (this.forbidden) return;
      this.loadError.hidden = true;
      this.agents = agents.agents || [];
      this.queues = queues.queues || [];
      this.renderAgents();
      this.renderQueues();
    } catch (e) {
      this.showLoadError(e);
    }
  }

  async loadWorkflow() {
    try {
      const wf = await this.api("GET", "/workflow");
      this.showWorkflow(wf);
    } catch (e) {
      this.showLoadError(e);
    }
  }

  showLoadError(e) {
    if (this.forbidden) return;
    replace(this.loadErrorText, `Couldn't read the workspace: ${e.message}`);
    this.loadError.hidden = false;
  }

  saved(text) {
    this.status.textContent = `${text} · ${clock(Date.now() / 1000)}`;
  }

  // -- the page ----------------------------------------------------------------------------------

  build() {
    this.status = h("p", { class: "admin-saved", role: "status", "aria-live": "polite", testid: "admin-saved" });
    this.loadErrorText = h("span");
    this.loadError = h("p", { class: "form-error", role: "alert", testid: "admin-load-error", hidden: true },
      this.loadErrorText, " ",
      h("button", { class: "secondary small", onclick: () => { this.reload(); this.loadWorkflow(); } }, "Try again"));
    this.dialog = this.buildDialog();
    const sup = h("a", { class: "topbar-link", testid: "admin-supervisor-link" }, "Supervisor view");
    sup.href = "/supervisor"; // our own fixed page (dom.h refuses href)
    this.main = h("main", { id: "main", class: "sup-main admin-main", tabindex: "-1" },
      this.loadError,
      h("div", { class: "admin-grid" }, this.agentsPanel(), this.agentForm()),
      h("div", { class: "admin-grid" }, this.queuesPanel(), this.queueForm()),
      this.workflowPanel());
    replace(this.root,
      h("header", { class: "topbar" },
        h("div", { class: "brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◆"), "Switchboard"),
        h("div", { class: "who" }, h("span", { class: "who-name", testid: "agent-name" }, this.session.name),
          h("span", { class: "who-ws" }, `Admin · ${this.session.workspace}`)),
        h("div", { class: "spacer" }),
        this.status,
        sup,
        h("button", { class: "ghost", testid: "sign-out", onclick: () => this.signOut() }, "Sign out")),
      this.main, this.dialog);
  }

  signOut() {
    clearSession();
    location.reload();
  }

  showForbidden(role) {
    if (this.forbidden) return;
    this.forbidden = true;
    if (this.dialog.open) this.dialog.close();
    const back = h("a", { testid: "forbidden-console" }, "the agent console");
    back.href = "/"; // our own fixed page (dom.h refuses href, which customer data must never set)
    let sup = null;
    if (role === "supervisor") {
      sup = h("a", { testid: "forbidden-supervisor" }, "the supervisor view");
      sup.href = "/supervisor";
    }
    replace(this.main, h("section", { class: "panel forbidden", testid: "forbidden" },
      h("h2", null, "Admins only"),
      h("p", null, `You're signed in as ${this.session.name}, who isn't an admin. `,
        "Sign out and sign in with an admin account, or go back to ",
        back, sup ? [" or ", sup] : null, ".")));
    this.status.textContent = "";
  }

  /** The confirmation before a removal: a modal dialog naming what goes; resolves true for "yes". */
  buildDialog() {
    this.dialogTitle = h("h2", { id: "admin-confirm-title" });
    this.dialogText = h("p", { id: "admin-confirm-text" });
    this.dialogYes = h("button", { class: "danger", value: "yes", testid: "admin-confirm-yes" }, "Remove");
    return h("dialog", { class: "admin-dialog", testid: "admin-confirm", "aria-labelledby": "admin-confirm-title",
      "aria-describedby": "admin-confirm-text" },
    h("form", { method: "dialog", class: "admin-dialog-body" },
      this.dialogTitle, this.dialogText,
      h("div", { class: "form-actions" },
        h("button", { class: "secondary", value: "no", testid: "admin-confirm-no" }, "Cancel"),
        this.dialogYes)));
  }

  confirm(title, text, yes) {
    this.dialogTitle.textContent = title;
    this.dialogText.textContent = text;
    this.dialogYes.textContent = yes;
    this.dialog.returnValue = "";
    this.dialog.showModal();
    return new Promise((resolve) => {
      this.dialog.addEventListener("close", () => resolve(this.dialog.returnValue === "yes"), { once: true });
    });
  }

  // -- agents ------------------------------------------------------------------------------------

  agentsPanel() {
    this.agentBody = h("tbody", { testid: "admin-agent-rows" });
    this.agentTable = h("table", { class: "data admin-agents", testid: "admin-agents-table" },
      h("caption", { class: "visually-hidden" }, "Agents: role, skills, languages, capacity per channel and status"),
      headRow(["Agent"], ["Role"], ["Skills"], ["Languages"], ["Other attributes"], ["Capacity"], ["Queues"],
        ["Status"], [""]),
      this.agentBody);
    this.agentRowOf = reflowable(this.agentTable);
    this.agentsEmpty = h("p", { class: "empty", hidden: true }, "No agents yet: add one with the form.");
    this.agentsTitle = h("h2", { id: "admin-agents-title", tabindex: "-1" }, "Agents");
    return h("section", { class: "panel", "aria-labelledby": "admin-agents-title" },
      h("div", { class: "panel-head" }, this.agentsTitle,
        h("button", { class: "secondary small", testid: "admin-agent-add", onclick: () => {
          this.agentMode(null);
          this.agentInputs.id.focus();
        } }, "Add agent")),
      scroller(this.agentTable), this.agentsEmpty);
  }

  renderAgents() {
    this.agentButtons.clear();
    const rows = [];
    for (const a of this.agents) {
      const attrs = a.attributes || {};
      const other = Object.keys(attrs).filter((k) => !LISTS.includes(k))
        .map((k) => h("span", { class: "attr" }, `${k}=${attrText(attrs[k])}`));
      const caps = CHANNELS.filter((ch) => (a.capacity || {})[ch] > 0)
        .map((ch) => h("span", { class: "load-chip", testid: `admin-agent-capacity-${ch}` },
          `${CHANNEL_LABEL[ch]} ${a.capacity[ch]}`));
      const edit = h("button", { class: "secondary small", testid: "admin-agent-edit",
        "aria-label": `Edit ${a.name || a.id}`, onclick: () => this.editAgent(a.id) }, "Edit");
      const remove = h("button", { class: "secondary small danger-text", testid: "admin-agent-remove",
        "aria-label": `Remove ${a.name || a.id}`, onclick: () => this.removeAgent(a) }, "Remove");
      this.agentButtons.set(a.id, remove);
      rows.push(this.agentRowOf({ testid: "admin-agent-row", data: { agent: a.id } },
        h("th", { scope: "row" }, h("bdi", { class: "agent-name", testid: "admin-agent-name-cell" }, a.name || a.id),
          h("span", { class: "agent-id" }, a.id, a.id === this.session.agent ? " · you" : "")),
        h("td", { testid: "admin-agent-role-cell" }, label(a.role)),
        h("td", null, tags(attrs.skills, "admin-agent-skills-cell")),
        h("td", null, tags(attrs.languages, "admin-agent-languages-cell")),
        h("td", { testid: "admin-agent-other-cell" }, other.length ? h("span", { class: "attrs" }, other) : h("span", { class: "muted" }, "—")),
        h("td", null, h("div", { class: "loads" }, caps.length ? caps : h("span", { class: "muted" }, "No cases"))),
        // the queues whose targets their skills match: none, for someone who takes cases, is
        // a skill that matches nothing (case matters: "Support" is not 'support')
        h("td", { testid: "admin-agent-queues-cell" }, (a.queues || []).length
          ? tags(a.queues.map((q) => this.queueLabel(q)), "admin-agent-queues")
          : caps.length ? h("span", { class: "staff-none waiting", testid: "admin-agent-no-queue" }, "matches no queue")
            : h("span", { class: "muted" }, "—")),
        h("td", { class: "status-cell", testid: "admin-agent-status-cell" },
          h("span", { class: `dot status-${a.status}`, "aria-hidden": "true" }), label(a.status)),
        h("td", { class: "row-actions" }, edit, remove)));
      const error = this.agentErrors.get(a.id);
      if (error) {
        rows.push(h("tr", { class: "row-error", role: "row" }, h("td", { colspan: "9", role: "cell" },
          h("p", { role: "alert", testid: "admin-agent-row-error", data: { agent: a.id } },
            `${a.name || a.id} was not removed: ${error}`))));
      }
    }
    replace(this.agentBody, rows);
    this.agentsEmpty.hidden = this.agents.length > 0;
    // the agent being edited was removed meanwhile (here or elsewhere): the form adds again
    if (this.editing && !this.agents.some((a) => a.id === this.editing.id)) this.agentMode(null);
  }

  agentForm() {
    const i = this.agentInputs = {
      id: h("input", { testid: "admin-agent-id", autocomplete: "off", spellcheck: "false" }),
      name: h("input", { testid: "admin-agent-name", autocomplete: "off" }),
      role: h("select", { testid: "admin-agent-role" }, ROLES.map(([v, t]) => h("option", { value: v }, t))),
      password: h("input", { testid: "admin-agent-password", type: "password", autocomplete: "new-password" }),
      skills: h("input", { testid: "admin-agent-skills", autocomplete: "off", spellcheck: "false" }),
      languages: h("input", { testid: "admin-agent-languages", autocomplete: "off", spellcheck: "false" }),
    };
    for (const ch of CHANNELS) {
      i[ch] = h("input", { testid: `admin-agent-cap-${ch}`, type: "number", min: "0", max: "100", step: "1",
        inputmode: "numeric" });
    }
    this.agentTitle = h("h2", { id: "admin-agent-form-title" });
    this.passwordHint = h("p", { class: "hint", id: "admin-agent-password-hint" });
    i.password.setAttribute("aria-describedby", this.passwordHint.id);
    i.password.id = "admin-agent-password";
    this.keptAttrs = h("p", { class: "hint", testid: "admin-agent-kept", hidden: true });
    this.agentError = formError("admin-agent-error", "admin-agent-error");
    this.agentSave = h("button", { type: "submit", class: "primary", testid: "admin-agent-save" });
    this.agentCancel = h("button", { type: "button", class: "secondary", testid: "admin-agent-cancel",
      onclick: () => this.agentMode(null) }, "Cancel");
    const form = h("form", { class: "panel admin-form", testid: "admin-agent-form", novalidate: true,
      "aria-labelledby": "admin-agent-form-title", "aria-describedby": "admin-agent-error",
      onsubmit: (ev) => { ev.preventDefault(); this.saveAgent(); } },
    this.agentTitle,
    this.agentError.el,
    h("div", { class: "form-fields" },
    field("admin-agent-id", "Agent id", i.id, "What they sign in with: letters, digits and _ . @ + - (at most 64). It can't be changed later."),
    field("admin-agent-name", "Name", i.name),
    field("admin-agent-role", "Role", i.role),
    h("div", { class: "field" }, h("label", { for: "admin-agent-password" }, "Password"), i.password, this.passwordHint),
    field("admin-agent-skills", "Skills", i.skills, "Comma-separated, e.g. support, billing. Queues pick agents by them."),
    field("admin-agent-languages", "Languages", i.languages, "Comma-separated, e.g. en, de."),
    this.keptAttrs,
    h("fieldset", { class: "capacity", "aria-describedby": "admin-agent-capacity-hint" },
      h("legend", null, "Capacity: cases at once"),
      h("div", { class: "capacity-row" }, CHANNELS.map((ch) => field(`admin-agent-cap-${ch}`, label(ch), i[ch]))),
      h("p", { class: "hint", id: "admin-agent-capacity-hint" }, "0: they get none of that channel."))),
    h("div", { class: "form-actions" }, this.agentSave, this.agentCancel));
    this.agentMode(null);
    return form;
  }

  /** The form adds an agent (null) or edits `agent` (as just read with GET /api/agents/{id}). */
  agentMode(agent) {
    const i = this.agentInputs;
    this.editing = agent;
    this.agentError.clear();
    i.id.readOnly = Boolean(agent);
    i.id.value = agent ? agent.id : "";
    i.name.value = agent ? agent.name : "";
    i.role.value = agent ? agent.role : "agent";
    i.password.value = "";
    const attrs = (agent && agent.attributes) || {};
    i.skills.value = (attrs.skills || []).join(", ");
    i.languages.value = (attrs.languages || []).join(", ");
    for (const ch of CHANNELS) i[ch].value = String(agent ? (agent.capacity || {})[ch] || 0 : NEW_CAPACITY[ch]);
    const other = Object.keys(attrs).filter((k) => !LISTS.includes(k));
    this.keptAttrs.hidden = other.length === 0;
    this.keptAttrs.textContent = other.length
      ? `Kept as they are: ${other.map((k) => `${k}=${attrText(attrs[k])}`).join(", ")}.` : "";
    this.agentTitle.textContent = agent ? `Edit ${agent.name || agent.id}` : "Add an agent";
    this.passwordHint.textContent = agent
      ? "Leave blank to keep the current password. A new password, or a new role, signs them out of any open console."
      : "They sign in with it (stored hashed, never shown). Without one they can't sign in.";
    this.agentSave.textContent = agent ? "Save changes" : "Add agent";
    this.agentCancel.hidden = !agent;
  }

  async editAgent(id) {
    this.agentErrors.delete(id);
    try {
      const agent = await this.api("GET", `/agents/${encodeURIComponent(id)}`);
      this.agentMode(agent);
      this.agentInputs.name.focus();
    } catch (e) {
      if (e.status === 404) {
        this.saved(`${id} no longer exists`);
        this.reload();
      } else if (e.status !== 401 && e.status !== 403) {
        this.agentMode(null);
        this.agentError.show(e.message);
      }
    }
  }

  async saveAgent() {
    const i = this.agentInputs;
    const editing = this.editing;
    const id = i.id.value.trim();
    const fields = [["id", i.id], ["name", i.name], ["role", i.role], ["password", i.password],
      ["skills", i.skills], ["languages", i.languages], ...CHANNELS.map((ch) => [`capacity.${ch}`, i[ch]])];
    this.agentError.clear();
    if (!id) return this.agentError.show("id: required", fields);
    if (!editing && this.agents.some((a) => a.id === id)) {
      return this.agentError.show(`id: there is already an agent ${id}: use Edit on their row to change them`, fields);
    }
    if (editing && !i.name.value.trim()) return this.agentError.show("name: required", fields);
    if (!editing && !i.password.value) {
      return this.agentError.show("password: required for a new agent (they sign in with it)", fields);
    }
    const capacity = {};
    for (const ch of CHANNELS) {
      if (i[ch].validity.badInput) return this.agentError.show(`capacity.${ch}: a whole number 0-100`, fields);
      capacity[ch] = i[ch].value.trim() === "" ? 0 : Number(i[ch].value);
    }
    this.agentSave.disabled = true;
    try {
      // PUT replaces the attributes whole: start from the agent's as the server holds them now,
      // and change only the lists this form edits, so every other attribute is kept
      let attributes = {};
      if (editing) {
        const now = await this.api("GET", `/agents/${encodeURIComponent(id)}`);
        attributes = { ...(now.attributes || {}) };
      }
      for (const key of LISTS) {
        const list = listOf(i[key].value);
        if (list.length || key in attributes) attributes[key] = list;
      }
      const body = { role: i.role.value, attributes, capacity };
      if (i.name.value.trim()) body.name = i.name.value.trim();
      if (i.password.value) body.password = i.password.value;
      // Add creates, never replaces: an agent someone else added meanwhile is refused (409)
      await this.api("PUT", `/agents/${encodeURIComponent(id)}`, body, editing ? {} : CREATE_ONLY);
      this.saved(editing ? `Saved ${body.name || id}` : `Added ${body.name || id}`);
      this.agentMode(null);
      await this.reload();
      this.agentsTitle.focus(); // the button pressed was disabled, which dropped the focus
    } catch (e) {
      if (e.status === 404 && editing) {
        this.agentError.show(`${id} no longer exists: someone removed them. Add them again if you need to.`);
        this.reload();
      } else if (e.status !== 401 && e.status !== 403) {
        this.agentError.show(e.message, fields);
      }
    } finally {
      this.agentSave.disabled = false;
      if (document.activeElement === document.body) this.agentSave.focus(); // refused: stay here
    }
  }

  async removeAgent(a) {
    this.agentErrors.delete(a.id);
    const who = a.name && a.name !== a.id ? `${a.name} (${a.id})` : a.id;
    const yes = await this.confirm(`Remove ${who}?`,
      `${who} can no longer sign in: their open consoles are signed out and the offers they have go to `
      + "colleagues. An agent who holds cases can't be removed until those cases are moved.", "Remove agent");
    if (!yes) return;
    try {
      await this.api("DELETE", `/agents/${encodeURIComponent(a.id)}`);
      this.saved(`Removed ${who}`);
      await this.reload();
      this.agentsTitle.focus();
    } catch (e) {
      if (e.status === 401 || e.status === 403) return;
      if (e.status === 404) {
        this.saved(`${who} was already gone`);
        await this.reload();
        return;
      }
      this.agentErrors.set(a.id, e.message);
      this.renderAgents();
      const button = this.agentButtons.get(a.id);
      if (button) button.focus();
    }
  }

  // -- queues ------------------------------------------------------------------------------------

  queuesPanel() {
    this.queueBody = h("tbody", { testid: "admin-queue-rows" });
    const table = h("table", { class: "data admin-queues", testid: "admin-queues-table" },
      h("caption", { class: "visually-hidden" }, "Queues: target expression, order and service-level target"),
      headRow(["Queue"], ["Target expression"], ["Order"], ["Service-level target", "num"], ["Waiting", "num"], [""]),
      this.queueBody);
    this.queueRowOf = reflowable(table);
    this.queuesTitle = h("h2", { id: "admin-queues-title", tabindex: "-1" }, "Queues");
    return h("section", { class: "panel", "aria-labelledby": "admin-queues-title" },
      h("div", { class: "panel-head" }, this.queuesTitle,
        h("button", { class: "secondary small", testid: "admin-queue-add", onclick: () => {
          this.queueMode(null);
          this.queueInputs.id.focus();
        } }, "Add queue")),
      scroller(table));
  }

  renderQueues() {
    this.queueButtons.clear();
    const rows = [];
    for (const q of this.queues) {
      const edit = h("button", { class: "secondary small", testid: "admin-queue-edit",
        "aria-label": `Edit queue ${q.name || q.id}`, onclick: () => this.editQueue(q.id) }, "Edit");
      const remove = h("button", { class: "secondary small danger-text", testid: "admin-queue-remove",
        "aria-label": `Remove queue ${q.name || q.id}`, onclick: () => this.removeQueue(q) }, "Remove");
      this.queueButtons.set(q.id, remove);
      rows.push(this.queueRowOf({ testid: "admin-queue-row", data: { queue: q.id } },
        h("th", { scope: "row" }, h("bdi", { class: "agent-name", testid: "admin-queue-name-cell" }, q.name || q.id),
          h("span", { class: "agent-id" }, q.id)),
        h("td", null, h("code", { class: "expr", testid: "admin-queue-target-cell" }, q.target)),
        h("td", { testid: "admin-queue-order-cell" }, String(q.order || "").toUpperCase()),
        h("td", { class: "num", testid: "admin-queue-sl-cell" }, `${q.sl_target_s} s`),
        h("td", { class: "num", testid: "admin-queue-waiting-cell" }, String(q.waiting ?? 0)),
        h("td", { class: "row-actions" }, edit, remove)));
      const error = this.queueErrors.get(q.id);
      if (error) {
        rows.push(h("tr", { class: "row-error", role: "row" }, h("td", { colspan: "6", role: "cell" },
          h("p", { role: "alert", testid: "admin-queue-row-error", data: { queue: q.id } },
            `${q.name || q.id} was not removed: ${error}`))));
      }
    }
    replace(this.queueBody, rows);
    if (this.editingQueue && !this.queues.some((q) => q.id === this.editingQueue.id)) this.queueMode(null);
  }

  queueForm() {
    const i = this.queueInputs = {
      id: h("input", { testid: "admin-queue-id", autocomplete: "off", spellcheck: "false" }),
      name: h("input", { testid: "admin-queue-name", autocomplete: "off" }),
      target: h("input", { testid: "admin-queue-target", class: "mono", autocomplete: "off", spellcheck: "false" }),
      order: h("select", { testid: "admin-queue-order" },
        h("option", { value: "fifo" }, "FIFO: oldest case first"), h("option", { value: "lifo" }, "LIFO: newest case first")),
      sl: h("input", { testid: "admin-queue-sl", type: "number", min: "1", max: "86400", step: "any", inputmode: "decimal" }),
    };
    this.queueTitle = h("h2", { id: "admin-queue-form-title" });
    this.queueError = formError("admin-queue-error", "admin-queue-error");
    this.queueSave = h("button", { type: "submit", class: "primary", testid: "admin-queue-save" });
    this.queueCancel = h("button", { type: "button", class: "secondary", testid: "admin-queue-cancel",
      onclick: () => this.queueMode(null) }, "Cancel");
    const form = h("form", { class: "panel admin-form", testid: "admin-queue-form", novalidate: true,
      "aria-labelledby": "admin-queue-form-title", "aria-describedby": "admin-queue-error",
      onsubmit: (ev) => { ev.preventDefault(); this.saveQueue(); } },
    this.queueTitle,
    this.queueError.el,
    h("div", { class: "form-fields" },
    field("admin-queue-id", "Queue id", i.id, "Letters, digits and _ . @ + - (at most 64). It can't be changed later."),
    field("admin-queue-name", "Name", i.name, "Shown to agents and supervisors. Blank: the id."),
    field("admin-queue-target", "Target expression", i.target,
      "Which agents take its cases, from their attributes, e.g. skills HAS 'billing' AND 'en' IN languages "
      + "(docs/expressions.md). Blank: every agent.", "field-wide"),
    field("admin-queue-order", "Order", i.order),
    field("admin-queue-sl", "Service-level target (seconds)", i.sl,
      "A case answered within this many seconds counts as in service level.")),
    h("div", { class: "form-actions" }, this.queueSave, this.queueCancel));
    this.queueMode(null);
    return form;
  }

  queueMode(queue) {
    const i = this.queueInputs;
    this.editingQueue = queue;
    this.queueError.clear();
    i.id.readOnly = Boolean(queue);
    i.id.value = queue ? queue.id : "";
    i.name.value = queue ? queue.name : "";
    i.target.value = queue ? queue.target : "";
    i.order.value = queue ? queue.order : "fifo";
    i.sl.value = String(queue ? queue.sl_target_s : 60);
    this.queueTitle.textContent = queue ? `Edit queue ${queue.name || queue.id}` : "Add a queue";
    this.queueSave.textContent = queue ? "Save changes" : "Add queue";
    this.queueCancel.hidden = !queue;
  }

  async editQueue(id) {
    this.queueErrors.delete(id);
    await this.reload(); // the queue as the server holds it now
    const q = this.queues.find((x) => x.id === id);
    if (!q) {
      this.saved(`Queue ${id} no longer exists`);
      return;
    }
    this.queueMode(q);
    this.queueInputs.name.focus();
  }

  async saveQueue() {
    const i = this.queueInputs;
    const editing = this.editingQueue;
    const id = i.id.value.trim();
    const fields = [["id", i.id], ["name", i.name], ["target", i.target], ["order", i.order], ["sl_target_s", i.sl]];
    this.queueError.clear();
    if (!id) return this.queueError.show("id: required", fields);
    if (!editing && this.queues.some((q) => q.id === id)) {
      return this.queueError.show(`id: there is already a queue ${id}: use Edit on its row to change it`, fields);
    }
    if (i.sl.validity.badInput || (editing && i.sl.value.trim() === "")) {
      return this.queueError.show("sl_target_s: a number of seconds", fields);
    }
    const body = { order: i.order.value };
    if (i.name.value.trim()) body.name = i.name.value.trim();
    else if (editing) body.name = id; // blank: the id, as the hint says (left out, it would stay)
    if (i.target.value.trim()) body.target = i.target.value.trim();
    else if (editing) body.target = "1 == 1"; // blank: every agent, as for a new queue
    if (i.sl.value.trim() !== "") body.sl_target_s = Number(i.sl.value);
    this.queueSave.disabled = true;
    try {
      await this.api("PUT", `/queues/${encodeURIComponent(id)}`, body, editing ? {} : CREATE_ONLY);
      this.saved(editing ? `Saved queue ${body.name || id}` : `Added queue ${body.name || id}`);
      this.queueMode(null);
      await this.reload();
      this.queuesTitle.focus(); // the button pressed was disabled, which dropped the focus
    } catch (e) {
      if (e.status !== 401 && e.status !== 403) this.queueError.show(e.message, fields);
    } finally {
      this.queueSave.disabled = false;
      if (document.activeElement === document.body) this.queueSave.focus(); // refused: stay here
    }
  }

  async removeQueue(q) {
    this.queueErrors.delete(q.id);
    const what = q.name && q.name !== q.id ? `${q.name} (${q.id})` : q.id;
    const yes = await this.confirm(`Remove the queue ${what}?`,
      `Agents stop belonging to ${what}. A queue the workflow routes to, or with cases waiting in it, `
      + "can't be removed until the workflow is changed or the cases are moved.", "Remove queue");
    if (!yes) return;
    try {
      await this.api("DELETE", `/queues/${encodeURIComponent(q.id)}`);
      this.saved(`Removed queue ${what}`);
      await this.reload();
      this.queuesTitle.focus();
    } catch (e) {
      if (e.status === 401 || e.status === 403) return;
      if (e.status === 404) {
        this.saved(`Queue ${what} was already gone`);
        await this.reload();
        return;
      }
      this.queueErrors.set(q.id, e.message);
      this.renderQueues();
      const button = this.queueButtons.get(q.id);
      if (button) button.focus();
    }
  }

  // -- workflow ----------------------------------------------------------------------------------

  workflowPanel() {
    this.workflowText = h("textarea", { id: "admin-workflow-text", class: "mono workflow-text", testid: "admin-workflow-text",
      rows: "18", spellcheck: "false", autocomplete: "off", wrap: "off", "aria-describedby": "admin-workflow-hint" });
    this.workflowError = formError("admin-workflow-error", "admin-workflow-error");
    this.workflowSave = h("button", { type: "submit", class: "primary", testid: "admin-workflow-save" }, "Save workflow");
    return h("form", { class: "panel admin-form", testid: "admin-workflow-form", "aria-labelledby": "admin-workflow-title",
      onsubmit: (ev) => { ev.preventDefault(); this.saveWorkflow(); } },
    h("h2", { id: "admin-workflow-title" }, "Workflow"),
    h("p", { class: "hint", id: "admin-workflow-hint" },
      "Which queue each new case goes to: Twilio TaskRouter's workflow JSON. Each of task_routing.filters has an "
      + "expression over the case's attributes and the queues it targets; default_filter is the queue for cases no "
      + "filter matches (required). See docs/routing.md and docs/expressions.md."),
    this.workflowError.el,
    h("label", { for: "admin-workflow-text" }, "Workflow (JSON)"),
    this.workflowText,
    h("div", { class: "form-actions" }, this.workflowSave,
      h("button", { type: "button", class: "secondary", testid: "admin-workflow-reload", onclick: async () => {
        this.workflowShown = null;
        this.workflowError.clear();
        await this.loadWorkflow();
      } }, "Discard changes")));
  }

  showWorkflow(wf) {
    const text = JSON.stringify(wf, null, 2);
    // the admin's unsaved edits are never replaced by a re-read
    if (this.workflowShown === null || this.workflowText.value === this.workflowShown) {
      this.workflowText.value = text;
      this.workflowShown = text;
    }
  }

  async saveWorkflow() {
    this.workflowError.clear();
    let wf;
    try {
      wf = JSON.parse(this.workflowText.value);
    } catch (e) {
      this.workflowError.show(`Not valid JSON: ${e.message}`);
      return;
    }
    this.workflowSave.disabled = true;
    try {
      const saved = await this.api("PUT", "/workflow", wf);
      this.workflowShown = null;
      this.showWorkflow(saved);
      this.saved("Saved the workflow");
      await this.reload();
    } catch (e) {
      if (e.status !== 401 && e.status !== 403) this.workflowError.show(e.message);
    } finally {
      this.workflowSave.disabled = false;
      this.workflowSave.focus(); // disabled while it was sent, which dropped the focus
    }
  }
}

async function start(root) {
  const note = sessionStorage.getItem("switchboard.note");
  sessionStorage.removeItem("switchboard.note");
  let session = loadSession();
  if (!session) session = await signIn(root, { title: "Sign in — admin page", note });
  return new AdminView(root, session);
}

start(document.getElementById("app"));
