// login.js — the sign-in form shared by the agent console and the supervisor view.

import { h, replace } from "./dom.js";
import { lastLogin, login } from "./session.js";

/**
 * Show the sign-in form in `root`; resolves with the session once sign-in succeeds.
 * `note` is an optional message shown above the form (e.g. "Your session expired").
 */
export function signIn(root, { title, note } = {}) {
  return new Promise((resolve) => {
    const last = lastLogin();
    const params = new URLSearchParams(location.search);
    const error = h("p", { class: "form-error", role: "alert", testid: "login-error", hidden: true });
    const workspace = h("input", {
      id: "login-workspace", name: "workspace", autocomplete: "organization", required: true,
      testid: "login-workspace", value: params.get("workspace") || last.workspace || "demo",
    });
    const agent = h("input", {
      id: "login-agent", name: "agent", autocomplete: "username", required: true,
      testid: "login-agent", value: last.agent || "",
    });
    const password = h("input", {
      id: "login-password", name: "password", type: "password", autocomplete: "current-password",
      required: true, testid: "login-password",
    });
    const submit = h("button", { type: "submit", class: "primary", testid: "login-submit" }, "Sign in");
    const form = h("form", { class: "login-card", "aria-labelledby": "login-title" },
      h("h1", { id: "login-title" }, title || "Sign in"),
      note ? h("p", { class: "notice", role: "status" }, note) : null,
      error,
      h("label", { for: "login-workspace" }, "Workspace"), workspace,
      h("label", { for: "login-agent" }, "Agent id"), agent,
      h("label", { for: "login-password" }, "Password"), password,
      submit,
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      submit.disabled = true;
      error.hidden = true;
      try {
        const session = await login(workspace.value.trim(), agent.value.trim(), password.value);
        resolve(session);
      } catch (e) {
        error.textContent = e.message === "wrong agent or password"
          ? "Wrong agent id or password." : e.message;
        error.hidden = false;
        password.select();
      } finally {
        submit.disabled = false;
      }
    });
    replace(root, h("main", { class: "login-page" }, form));
    (agent.value ? password : agent).focus();
  });
}
