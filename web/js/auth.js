// Bearer-token prompt for servers with auth_required: asked once, kept in
// localStorage, asked again after a 401. Several requests failing at the same
// moment share one dialog.

import { t } from "./i18n.js";

export function createAuth(tokens, dialog) {
  const input = dialog.querySelector("#token-input");
  const reason = dialog.querySelector("#token-reason");
  let asking = null;

  function ask(why) {
    asking ??= new Promise((resolve) => {
      reason.textContent = why;
      input.value = "";
      dialog.addEventListener("close", () => {
        const token = input.value.trim();
        const ok = dialog.returnValue === "ok" && token !== "";
        if (ok) tokens.set(token);
        input.value = "";
        asking = null;
        resolve(ok);
      }, { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      input.focus();
    });
    return asking;
  }

  return {
    token: () => tokens.get(),
    // Called by the API layer after a 401: forget the refused token, ask again.
    reauthenticate() {
      tokens.clear();
      return ask(t("auth.refused"));
    },
    ensure() {
      return tokens.get() ? Promise.resolve(true) : ask(t("auth.needed"));
    },
    change() {
      return ask(t("auth.change"));
    },
  };
}
