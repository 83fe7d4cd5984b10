// session.js — sign-in, the session token, and the console's WebSocket connection.
//
// The session token (REST, hours) lives in sessionStorage, so a reload stays signed in while a
// new browser tab starts fresh. Before every (re)connect a one-use WebSocket token is fetched
// with POST /api/ws-token. The connection reconnects by itself with exponential backoff and
// jitter; the server's `hello` frame after each connect is the truth the page rebuilds from.

import { backoff } from "./dom.js";

const KEY = "switchboard.session";
const LAST = "switchboard.last-login";
export const PROTOCOL = "switchboard.v1.json";

export class AuthError extends Error {
  constructor(message, code = "") {
    super(message);
    this.code = code;
  }
}

export function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) || "null");
    return s && typeof s.token === "string" ? s : null;
  } catch {
    return null;
  }
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
}

/** The session ended (expired, revoked, or the agent removed): back to the sign-in form, which
 *  says why. detail: {message, reason} ("removed": an admin removed the account). */
export function signedOut(detail) {
  clearSession();
  const note = detail.reason === "removed"
    ? "An administrator removed your account. Ask them if you need access again."
    : `Please sign in again (${detail.message}).`;
  sessionStorage.setItem("switchboard.note", note);
  location.reload();
}

/** Save a file a customer sent (GET /api/attachments/{id}, with the session's token): the
 *  browser downloads it under its name; nothing of it runs or shows in the page. Rejects with
 *  an Error whose message says why (not yours any more, expired). */
export async function downloadAttachment(id, name) {
  const s = loadSession();
  let res;
  try {
    res = await fetch(`/api/attachments/${encodeURIComponent(id)}`,
      { headers: s ? { Authorization: `Bearer ${s.token}` } : {} });
  } catch {
    throw new Error("The server can't be reached.");
  }
  if (!res.ok) {
    let data = {};
    try { data = await res.json(); } catch { /* not JSON */ }
    throw new Error(res.status === 404 ? "This file is no longer available to you." : data.message || `Failed (${res.status})`);
  }
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name || "attachment";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The workspace and agent id last used on this browser (never the password). */
export function lastLogin() {
  try {
    return JSON.parse(localStorage.getItem(LAST) || "{}");
  } catch {
    return {};
  }
}

async function post(path, body, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { method: "POST", headers, body: JSON.stringify(body || {}) });
  } catch {
    throw new Error("The server can't be reached. Check your connection and try again.");
  }
  let data = {};
  try {
    data = await res.json();
  } catch {
    /* non-JSON error page */
  }
  if (res.status === 401 || res.status === 403) {
    throw new AuthError(data.message || "Not signed in", data.code || "");
  }
  if (!res.ok) throw new Error(data.message || `Request failed (${res.status})`);
  return data;
}

/** Sign in; returns and stores the session {token, workspace, agent, role, name}. */
export async function login(workspace, agent, password) {
  const d = await post("/api/login", { workspace, agent, password });
  const session = {
    token: d.token, workspace: d.workspace, agent: d.agent, role: d.role, name: d.name,
  };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  localStorage.setItem(LAST, JSON.stringify({ workspace: d.workspace, agent: d.agent }));
  return session;
}

async function wsToken(session) {
  const d = await post("/api/ws-token", {}, session.token);
  return d.token;
}

const PING_EVERY_MS = 20000;
const PING_TIMEOUT_MS = 10000;

/**
 * One logical connection to /ws/agent that survives drops.
 *
 * Events (EventTarget): "frame" (detail: a server push or hello), "state" (detail:
 * {state: connecting|open|waiting|stopped, attempt, delayMs, reason}), "expired" (the session
 * is no longer valid: sign in again). request() resolves with the ack or rejects with
 * {code, message}; requests in flight when the socket drops reject with code "disconnected".
 */
export class Connection extends EventTarget {
  /** client "supervisor": the supervisor's page, which never takes over from (or is closed
   *  by) the agent's console; one console per agent otherwise (session.replaced). */
  constructor(session, path = "/ws/agent", client = "") {
    super();
    this.session = session;
    this.path = path;
    this.client = client;
    this.ws = null;
    this.ref = 0;
    this.pending = new Map();
    this.attempt = 0;
    this.timer = null;
    this.pinger = null;
    this.stopped = false;
    this.everOpen = false;
    this.clockOffsetMs = 0; // server clock − local clock
    this.state = "stopped";
    window.addEventListener("online", () => {
      if (this.state === "waiting") this.retryNow();
    });
  }

  get open() {
    return this.state === "open";
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.ws) this.ws.close(1000, "signed out");
    this._setState("stopped");
  }

  retryNow() {
    clearTimeout(this.timer);
    if (!this.stopped && this.state !== "connecting" && this.state !== "open") this._connect();
  }

  /** Send a frame; resolves with the server's ack, rejects with its error {code, message}. */
  request(type, fields = {}) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state !== "open") {
      return Promise.reject({ code: "disconnected", message: "Not connected — try again in a moment." });
    }
    const ref = ++this.ref;
    return new Promise((resolve, reject) => {
      this.pending.set(ref, { resolve, reject });
      this.ws.send(JSON.stringify({ ...fields, type, ref }));
    });
  }

  _setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, attempt: this.attempt, ...extra } }));
  }

  async _connect() {
    this._setState("connecting");
    let token;
    try {
      token = await wsToken(this.session);
    } catch (e) {
      if (e instanceof AuthError) {
        this.stopped = true;
        this._setState("stopped");
        const reason = e.code === "agent.unknown" ? "removed" : "";
        this.dispatchEvent(new CustomEvent("expired", { detail: { message: e.message, reason } }));
        return;
      }
      this._retry(e.message);
      return;
    }
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}${this.path}?token=${encodeURIComponent(token)}`
      + (this.client ? `&client=${encodeURIComponent(this.client)}` : "");
    let ws;
    try {
      ws = new WebSocket(url, [PROTOCOL]);
    } catch (e) {
      this._retry(String(e));
      return;
    }
    this.ws = ws;
    let refusal = null;
    ws.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!frame || typeof frame.type !== "string") return;
      if ((frame.type === "ack" || frame.type === "error") && this.pending.has(frame.ref)) {
        const p = this.pending.get(frame.ref);
        this.pending.delete(frame.ref);
        if (frame.type === "ack") p.resolve(frame);
        else p.reject({ code: frame.code, message: frame.message });
        return;
      }
      if (frame.type === "session.replaced") { // the agent opened a console elsewhere
        this.stopped = true;
        this._setState("stopped");
        this.dispatchEvent(new CustomEvent("replaced"));
        return;
      }
      if (frame.type === "session.revoked") { // role or password changed: sign in again
        this.stopped = true;
        this._setState("stopped");
        this.dispatchEvent(new CustomEvent("expired", { detail: { message: frame.message, reason: frame.reason } }));
        return;
      }
      if (frame.type === "error" && this.state === "connecting") {
        refusal = frame; // the server says why before closing a refused connection
        return;
      }
      if (frame.type === "hello") {
        this.attempt = 0;
        this.everOpen = true;
        this._setState("open");
        this._startPinging();
      }
      this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
    };
    ws.onclose = (ev) => this._lost(ws, ev.code, refusal);
  }

  /** The socket is gone (closed by either side, or given up on): say why, reconnect or stop.
   *  4000 is the server's "the agent opened a console elsewhere". */
  _lost(ws, code, refusal) {
    if (this.ws !== ws) return;
    this.ws = null;
    clearInterval(this.pinger);
    for (const p of this.pending.values()) {
      p.reject({ code: "disconnected", message: "The connection dropped; nothing was confirmed." });
    }
    this.pending.clear();
    if (this.stopped) return;
    if (code === 4000) { // opened elsewhere (its frame may not have reached us first)
      this.stopped = true;
      this._setState("stopped");
      this.dispatchEvent(new CustomEvent("replaced"));
      return;
    }
    if (refusal && (refusal.code === "agent.unknown" || refusal.code === "auth.revoked")) {
      this.stopped = true;
      this._setState("stopped");
      this.dispatchEvent(new CustomEvent("expired", { detail: { message: refusal.message } }));
      return;
    }
    const why = refusal ? refusal.message : code === 1012 ? "server restarting" : "connection lost";
    this._retry(why);
  }

  _retry(reason) {
    if (this.stopped) return;
    const delayMs = backoff(this.attempt);
    this.attempt += 1;
    this._setState("waiting", { delayMs, reason, retryAt: Date.now() + delayMs });
    this.timer = setTimeout(() => this._connect(), delayMs);
  }

  _startPinging() {
    clearInterval(this.pinger);
    const ping = async () => {
      const ws = this.ws;
      const sent = Date.now();
      // no answer: the connection is as good as dead. Give up on it now (its close handshake
      // could take as long again) and show it: the banner, then a reconnect.
      const timeout = setTimeout(() => {
        if (this.ws !== ws || !ws) return;
        ws.onclose = null;
        ws.onmessage = null;
        try { ws.close(4001, "ping timeout"); } catch { /* already closing */ }
        this._lost(ws, 4001, null);
      }, PING_TIMEOUT_MS);
      try {
        const ack = await this.request("ping");
        const now = Date.now();
        if (typeof ack.ts === "number") this.clockOffsetMs = ack.ts * 1000 - (sent + now) / 2;
      } catch {
        /* the close handler takes over */
      } finally {
        clearTimeout(timeout);
      }
    };
    ping();
    this.pinger = setInterval(ping, PING_EVERY_MS);
  }

  /** Server time now, in ms since the epoch (local clock corrected by the measured offset). */
  now() {
    return Date.now() + this.clockOffsetMs;
  }
}
