/* cti.js — drop-in click-to-call for any CRM page.
 *
 *   <script src="https://cti.example.com/static/cti.js"
 *           data-cti-url="https://cti.example.com"   (default: where this script comes from)
 *           data-token="..."                          (optional: else asked once, kept in localStorage)
 *           data-agent="alice"                        (optional: place the call for this agent)
 *           data-lang="fr"></script>                  (optional: en | fr, default: the browser's)
 *
 * Every `tel:` link on the page, including links added later (MutationObserver),
 * becomes click-to-call: a click sends POST /api/v1/calls {"to"} with the agent's
 * token; a small toast shows the result or the reason it was refused (422 invalid or
 * blocked number, 429 too many calls, 401 bad token: asked again). The server must
 * list this page's origin in [server] allowed_origins (CORS).
 * `window.CTI.call("+33...")` dials from code; `window.CTI.setToken()` asks again.
 */
(function () {
  "use strict";
  if (window.CTI && window.CTI.version) return; // loaded twice: keep the first

  const script = document.currentScript || document.querySelector("script[src*='cti.js']");
  const data = (script && script.dataset) || {};
  const base = (data.ctiUrl || (script && script.src ? new URL(script.src, location.href).origin : location.origin))
    .replace(/\/+$/, "");
  const TOKEN_KEY = "cti.token";
  const lang = (data.lang || navigator.language || "en").toLowerCase().startsWith("fr") ? "fr" : "en";
  const T = {
    en: {
      calling: "Calling {n}…", ok: "Call placed to {n}: your phone rings first.", token: "CTI access token:",
      no_token: "Click-to-call needs your CTI token.", bad_token: "Your CTI token was refused: sign in again.",
      refused: "Cannot call {n}: {m}", busy: "Too many calls: retry in {s} s.", network: "The CTI server cannot be reached.",
      title: "Call with the CTI",
    },
    fr: {
      calling: "Appel de {n}…", ok: "Appel vers {n} lancé : votre poste sonne d'abord.", token: "Jeton d'accès CTI :",
      no_token: "Le clic-pour-appeler a besoin de votre jeton CTI.", bad_token: "Jeton CTI refusé : reconnectez-vous.",
      refused: "Impossible d'appeler {n} : {m}", busy: "Trop d'appels : réessayez dans {s} s.",
      network: "Le serveur CTI est injoignable.", title: "Appeler avec le CTI",
    },
  }[lang];
  const fmt = (s, v) => s.replace(/\{(\w)\}/g, (_, k) => (v[k] == null ? "" : String(v[k])));

  // ------------------------------------------------------------------ token

  function storedToken() {
    try { return localStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }
  function getToken(ask) {
    let tok = data.token || storedToken();
    if (!tok && ask) {
      tok = (window.prompt(T.token) || "").trim();
      if (tok) { try { localStorage.setItem(TOKEN_KEY, tok); } catch (_) { /* private mode */ } }
    }
    return tok || null;
  }
  function forgetToken() {
    try { localStorage.removeItem(TOKEN_KEY); } catch (_) { /* ignore */ }
  }

  // ------------------------------------------------------------------ toast

  let box = null;
  function toast(text, kind) {
    if (!box) {
      box = document.createElement("div");
      box.id = "cti-toasts";
      box.setAttribute("aria-live", "polite");
      box.style.cssText = "position:fixed;right:16px;bottom:16px;z-index:2147483647;display:flex;" +
        "flex-direction:column;gap:8px;font:14px/1.4 system-ui,sans-serif;max-width:360px";
      document.body.appendChild(box);
    }
    const n = document.createElement("div");
    n.className = "cti-toast";
    n.dataset.kind = kind;
    n.setAttribute("role", kind === "error" ? "alert" : "status");
    n.textContent = text;
    const bg = { ok: "#1a7f37", error: "#c62828", info: "#1d2330" }[kind] || "#1d2330";
    n.style.cssText = `background:${bg};color:#fff;padding:10px 14px;border-radius:8px;` +
      "box-shadow:0 2px 8px rgba(0,0,0,.25)";
    box.appendChild(n);
    setTimeout(() => n.remove(), kind === "error" ? 8000 : 5000);
    return n;
  }

  // ------------------------------------------------------------------ calling

  function numberOf(href) {
    let raw = String(href || "").replace(/^tel:/i, "");
    try { raw = decodeURIComponent(raw); } catch (_) { /* keep as is */ }
    return raw.split(";")[0].trim(); // drop RFC 3966 parameters (;ext= is kept by the server's parser anyway)
  }

  let inFlight = false;
  async function call(number, retried) {
    const token = getToken(true);
    if (!token) { toast(T.no_token, "error"); return null; }
    if (inFlight) return null;
    inFlight = true;
    const pending = toast(fmt(T.calling, { n: number }), "info");
    const body = { to: number };
    if (data.agent) body.agent = data.agent;
    try {
      let r;
      try {
        r = await fetch(`${base}/api/v1/calls`, {
          method: "POST", mode: "cors", credentials: "omit",
          headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
      } catch (_) {
        toast(T.network, "error");
        return null;
      }
      let out = null;
      try { out = await r.json(); } catch (_) { out = null; }
      pending.remove();
      if (r.status === 401) {
        forgetToken();
        toast(T.bad_token, "error");
        if (!retried && !data.token) { inFlight = false; return call(number, true); }
        return null;
      }
      if (r.status === 429) {
        toast(fmt(T.busy, { s: r.headers.get("Retry-After") || "60" }), "error");
        return null;
      }
      if (!r.ok) {
        const m = (out && out.error && out.error.message) || `${r.status}`;
        toast(fmt(T.refused, { n: number, m }), "error");
        return null;
      }
      toast(fmt(T.ok, { n: number }), "ok");
      document.dispatchEvent(new CustomEvent("cti:call", { detail: out }));
      return out;
    } finally {
      inFlight = false;
      if (pending.isConnected) pending.remove();
    }
  }

  // ------------------------------------------------------------------ links

  function decorate(a) {
    if (a.dataset.ctiC2c) return;
    a.dataset.ctiC2c = "1";
    if (!a.title) a.title = T.title;
  }
  function scan(root) {
    if (root.nodeType !== 1) return;
    if (root.matches && root.matches("a[href^='tel:' i]")) decorate(root);
    root.querySelectorAll && root.querySelectorAll("a[href^='tel:' i]").forEach(decorate);
  }

  // one delegated listener catches every tel: link, present or future
  document.addEventListener("click", (ev) => {
    if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
    const a = ev.target && ev.target.closest ? ev.target.closest("a[href]") : null;
    if (!a || !/^tel:/i.test(a.getAttribute("href") || "")) return;
    ev.preventDefault();
    decorate(a);
    call(numberOf(a.getAttribute("href")));
  }, true);

  function start() {
    scan(document.body);
    new MutationObserver((muts) => {
      for (const m of muts) {
        if (m.type === "attributes") scan(m.target);
        else m.addedNodes.forEach(scan);
      }
    }).observe(document.body, { childList: true, subtree: true, attributes: true, attributeFilter: ["href"] });
  }
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);

  window.CTI = {
    version: "1",
    call: (number) => call(String(number)),
    setToken: (tok) => {
      if (tok) { try { localStorage.setItem(TOKEN_KEY, tok); } catch (_) { /* ignore */ } return; }
      forgetToken(); getToken(true);
    },
  };
})();
