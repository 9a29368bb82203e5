/* Agent panel: sign-in, state, screen pop, call controls, dial pad, script, wrap-up.
 *
 * Vanilla JS, no build step, no CDN. Talks to the REST API and the /ws WebSocket
 * described in docs/api.md. The WebSocket reconnects with backoff and restores the
 * whole state from the `snapshot` the server sends on every (re)connect, so a
 * missed message is never a missed pop. Texts come from /static/i18n/agent.<lang>.json.
 * The softphone page (Salesforce Open CTI) loads this same file and listens to the
 * `cti:*` DOM events it dispatches; `window.CTIAgent` is its small API.
 */
(function () {
  "use strict";

  const TOKEN_KEY = "cti.token";
  const LANG_KEY = "cti.lang";
  const $ = (sel) => document.querySelector(sel);
  const $$ = (sel) => Array.from(document.querySelectorAll(sel));

  const S = {
    token: null, lang: "en", dict: {}, me: null, agent: null,
    calls: new Map(),      // call_id -> CallView (calls I can see that are not finished)
    pops: new Map(),       // call_id -> screen_pop message
    monitors: new Map(),   // call_id -> monitor message
    wrap: null,            // {call_id, until, dispositions}
    current: null,         // call_id shown in the call pane
    ws: null, wsAttempts: 0, wsTimer: null, pingTimer: null, stopped: false,
    dispositions: [], vmMessages: [],
    dropped: new Set(),    // calls handed to a voicemail drop: no longer the agent's concern
    ended: new Set(),      // finished calls whose pop is kept for the wrap-up
  };

  // ------------------------------------------------------------------ helpers

  function t(key, vars) {
    let s = S.dict[key] != null ? S.dict[key] : key;
    for (const [k, v] of Object.entries(vars || {})) s = s.split(`{${k}}`).join(v == null ? "" : String(v));
    return s;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  function show(node, yes) { if (node) node.hidden = !yes; }
  function emit(name, detail) { window.dispatchEvent(new CustomEvent(`cti:${name}`, { detail })); }

  function toast(msg, isError) {
    const box = $("#toasts");
    if (!box) return;
    const n = el("div", { class: isError ? "toast error" : "toast", role: isError ? "alert" : "status", text: msg });
    box.append(n);
    setTimeout(() => n.remove(), isError ? 7000 : 4000);
  }

  const fmtDur = (s) => {
    s = Math.max(0, Math.floor(s || 0));
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    const ss = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m % 60).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
  };
  const when = (iso) => (iso ? new Date(iso).toLocaleString(S.lang, { dateStyle: "short", timeStyle: "short" }) : "");

  // ------------------------------------------------------------------ i18n

  function pickLang() {
    const q = new URLSearchParams(location.search).get("lang");
    if (q === "en" || q === "fr") return q;
    const stored = localStorage.getItem(LANG_KEY);
    if (stored === "en" || stored === "fr") return stored;
    return (navigator.language || "en").toLowerCase().startsWith("fr") ? "fr" : "en";
  }

  async function loadLang(lang) {
    try {
      const r = await fetch(`/static/i18n/agent.${lang}.json`, { cache: "no-cache" });
      S.dict = r.ok ? await r.json() : {};
    } catch (_) { S.dict = {}; }
    S.lang = lang;
    document.documentElement.lang = lang;
    $$("[data-i18n]").forEach((n) => { if (S.dict[n.dataset.i18n]) n.textContent = S.dict[n.dataset.i18n]; });
    if ($("#lang")) $("#lang").value = lang;
    render();
  }

  // ------------------------------------------------------------------ REST

  class ApiError extends Error {
    constructor(status, message, body) { super(message); this.status = status; this.body = body; }
  }

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${S.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let r;
    try {
      r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, t("err_network"));
    }
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    if (!r.ok) {
      const msg = (data && data.error && data.error.message) || `${r.status} ${r.statusText}`;
      if (r.status === 401) signOut(t("err_token"));
      throw new ApiError(r.status, msg, data);
    }
    return data;
  }

  async function act(callId, action, body) {
    try {
      const out = await api("POST", `/api/v1/calls/${encodeURIComponent(callId)}/${action}`, body || {});
      return out;
    } catch (e) {
      toast(t("err_action", { action: t(`action_${action}`), message: e.message }), true);
      return null;
    }
  }

  // ------------------------------------------------------------------ sign-in

  async function signIn(token) {
    S.token = token;
    S.stopped = false;
    try {
      S.me = await api("GET", "/api/v1/me");
    } catch (e) {
      S.token = null;
      localStorage.removeItem(TOKEN_KEY);
      const err = $("#signin-error");
      if (err) err.textContent = e.status === 401 ? t("err_token") : e.message;
      show($("#signin"), true);
      return false;
    }
    localStorage.setItem(TOKEN_KEY, token);
    show($("#signin"), false);
    show($("#app"), true);
    show($("#signout"), true);
    if ($("#who")) $("#who").textContent = (S.me.agent && S.me.agent.name) || S.me.user;
    S.agent = S.me.agent || null;
    loadLists();
    connect();
    emit("signed_in", S.me);
    return true;
  }

  function signOut(message) {
    S.stopped = true;
    S.token = null;
    localStorage.removeItem(TOKEN_KEY);
    clearTimeout(S.wsTimer);
    clearInterval(S.pingTimer);
    if (S.ws) { try { S.ws.close(1000); } catch (_) { /* closing anyway */ } }
    S.ws = null;
    S.calls.clear(); S.pops.clear(); S.monitors.clear(); S.wrap = null; S.current = null;
    show($("#app"), false);
    show($("#signout"), false);
    show($("#state-box"), false);
    show($("#signin"), true);
    const err = $("#signin-error");
    if (err) err.textContent = message || "";
    setConn("off");
  }

  async function loadLists() {
    try { S.dispositions = await api("GET", "/api/v1/dispositions"); } catch (_) { S.dispositions = []; }
    try { S.vmMessages = await api("GET", "/api/v1/voicemail-messages"); } catch (_) { S.vmMessages = []; }
    const sel = $("#vm-message");
    if (sel) {
      sel.replaceChildren(...S.vmMessages.map((m) => el("option", { value: m.id, text: m.name || m.id })));
    }
    render();
  }

  // ------------------------------------------------------------------ WebSocket

  function setConn(state) {
    const c = $("#conn");
    if (!c) return;
    c.className = `pill ${state === "on" ? "on" : state === "wait" ? "warn" : "off"}`;
    c.textContent = t(state === "on" ? "conn_online" : state === "wait" ? "conn_reconnecting" : "conn_offline");
    c.dataset.state = state;
  }

  function connect() {
    if (S.stopped || !S.token) return;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/ws?token=${encodeURIComponent(S.token)}`);
    S.ws = ws;
    setConn("wait");
    ws.onopen = () => {
      S.wsAttempts = 0;
      setConn("on");
      clearInterval(S.pingTimer);
      S.pingTimer = setInterval(() => { if (ws.readyState === 1) ws.send("ping"); }, 25000);
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      try { onMessage(msg); } catch (e) { console.error("cti: bad message", msg, e); }
    };
    ws.onclose = (ev) => {
      clearInterval(S.pingTimer);
      if (S.ws !== ws) return;
      S.ws = null;
      if (ev.code === 4401) { signOut(t("err_token")); return; }
      if (S.stopped) return;
      setConn("wait");
      // exponential backoff with jitter, capped: a restarting server is not stampeded
      const delay = Math.min(15000, 500 * 2 ** S.wsAttempts) * (0.8 + Math.random() * 0.4);
      S.wsAttempts += 1;
      clearTimeout(S.wsTimer);
      S.wsTimer = setTimeout(connect, delay);
    };
  }

  function onMessage(msg) {
    switch (msg.type) {
      case "snapshot": onSnapshot(msg); break;
      case "screen_pop": onPop(msg); break;
      case "call_update": onCall(msg.call); break;
      case "agent_state": onAgentState(msg); break;
      case "wrap_up": onWrapUp(msg); break;
      case "monitor": onMonitor(msg); break;
      case "error": toast(msg.message || (msg.error && msg.error.message) || "error", true); break;
      default: break;
    }
  }

  function onSnapshot(msg) {
    if (msg.agent) S.agent = msg.agent;
    S.calls.clear();
    for (const c of msg.calls || []) if (!S.dropped.has(c.call_id)) S.calls.set(c.call_id, c);
    S.pops.clear();
    for (const p of msg.pops || []) S.pops.set(p.call_id, p);
    S.monitors.clear();
    for (const m of msg.monitors || []) {
      if (m.agent === myId() && m.mode) S.monitors.set(m.call_id, { ...m, active: true });
    }
    // keep a wrap-up the agent was filling in if its call is gone from the active list
    pickCurrent();
    render();
    emit("snapshot", msg);
  }

  function myId() { return (S.agent && S.agent.id) || (S.me && S.me.user); }

  function onPop(msg) {
    if (msg.agent && msg.agent !== myId()) return;
    if (!msg.update) {
      for (const id of S.ended) {  // pops of finished calls go once another call rings
        if (!S.wrap || S.wrap.call_id !== id) { S.pops.delete(id); S.ended.delete(id); }
      }
    }
    S.pops.set(msg.call_id, msg);
    if (!msg.update || !S.current) S.current = msg.call_id;
    render();
    emit("pop", msg);
  }

  function onCall(call) {
    if (!call || !call.call_id) return;
    if (call.agent && call.agent !== myId() && !S.calls.has(call.call_id) && !S.pops.has(call.call_id)) return;
    if (call.agent && call.agent !== myId() && S.pops.has(call.call_id)) {
      // ring-all: someone else took it
      S.pops.delete(call.call_id);
      S.calls.delete(call.call_id);
      if (S.current === call.call_id) S.current = null;
      pickCurrent(); render();
      return;
    }
    if (S.dropped.has(call.call_id)) {
      if (call.state === "ended") S.dropped.delete(call.call_id);
      return; // the message plays on its own; the agent already moved on
    }
    if (call.state === "ended") {
      S.calls.delete(call.call_id);
      S.monitors.delete(call.call_id);
      // keep its pop: the wrap-up (which comes next) shows who the call was with
      S.ended.add(call.call_id);
      if (S.current === call.call_id) S.current = null;
      pickCurrent();
    } else {
      S.calls.set(call.call_id, call);
      if (!S.current || !S.calls.has(S.current)) S.current = call.call_id;
    }
    render();
    emit("call", call);
  }

  function pickCurrent() {
    if (S.current && S.calls.has(S.current)) return;
    const live = Array.from(S.calls.values()).filter((c) => c.state !== "ended");
    live.sort((a, b) => String(b.ringing_at || b.created_at || "").localeCompare(String(a.ringing_at || a.created_at || "")));
    S.current = live.length ? live[0].call_id : (S.wrap ? S.wrap.call_id : null);
  }

  function onAgentState(msg) {
    if (msg.agent !== myId()) return;
    S.agent = { ...(S.agent || { id: msg.agent }), state: msg.state, reason: msg.reason, since: msg.since };
    renderState();
    emit("agent_state", msg);
  }

  function onWrapUp(msg) {
    if (msg.agent && msg.agent !== myId()) return;
    // a deadline already past (or no timed after-call work): no countdown
    const timed = msg.until && new Date(msg.until).getTime() - Date.now() > 1000;
    S.wrap = { call_id: msg.call_id, until: timed ? msg.until : null, dispositions: msg.dispositions || S.dispositions };
    const notes = $("#notes");
    if (notes) notes.value = "";
    render();
  }

  function onMonitor(msg) {
    if (msg.agent !== myId()) return;
    if (msg.active) S.monitors.set(msg.call_id, msg); else S.monitors.delete(msg.call_id);
    renderCall();
  }

  // ------------------------------------------------------------------ rendering

  function render() {
    renderState();
    renderCall();
    renderPop();
    renderWrap();
  }

  function renderState() {
    const box = $("#state-box");
    if (!box) return;
    show(box, !!S.agent);
    if (!S.agent) return;
    const st = S.agent.state || "offline";
    const now = $("#state-now");
    now.className = `pill state-${st}`;
    now.textContent = t(`state_${st}`) + (st === "away" && S.agent.reason ? ` · ${t(`reason_${S.agent.reason}`)}` : "");
    now.dataset.state = st;
    const sel = $("#state");
    if (["available", "away", "offline"].includes(st) && document.activeElement !== sel) sel.value = st;
    show($("#away-reason"), sel.value === "away");
  }

  function renderCall() {
    const call = S.current ? S.calls.get(S.current) : null;
    show($("#no-call"), !call);
    show($("#call"), !!call);
    if (!call) { show($("#vm-form"), false); return; }
    const other = call.direction === "outbound" ? call.to_number : call.from_number;
    const pop = S.pops.get(call.call_id);
    $("#call-dir").textContent = t(`dir_${call.direction}`);
    $("#call-number").textContent = (pop && pop.contact && pop.contact.name) || (pop && pop.from_display) || other || "";
    const st = $("#call-state");
    st.textContent = t(`call_${call.state}`);
    st.dataset.state = call.state;
    const rec = call.recording_state === "recording";
    show($("#rec"), rec);
    $("#btn-record").textContent = t(rec ? "record_stop" : "record_start");
    const mon = S.monitors.get(call.call_id);
    const coach = $("#coach");
    if (mon && mon.active !== false && mon.mode && mon.mode !== "stop") {
      coach.textContent = t(mon.mode === "listen" ? "listened_by" : "coached_by", { name: mon.supervisor });
      coach.dataset.mode = mon.mode;
      show(coach, true);
    } else show(coach, false);
    const prio = $("#prio");
    if (pop && pop.priority > 0) {
      prio.textContent = (pop.priority_reasons || []).join(", ").toUpperCase() || `+${pop.priority}`;
      show(prio, true);
    } else show(prio, false);
    const ringing = call.state === "ringing" || call.state === "new" || call.state === "queued";
    const talking = call.state === "answered" || call.state === "held";
    show($("#btn-answer"), ringing && call.direction !== "outbound");
    $("#btn-hangup").disabled = false;
    show($("#btn-hold"), call.state !== "held");
    show($("#btn-unhold"), call.state === "held");
    $("#btn-hold").disabled = call.state !== "answered";
    $("#btn-record").disabled = !talking;
    $$("#transfer-form button, #transfer-form input, #transfer-form select").forEach((n) => { n.disabled = !talking; });
    show($("#vm-form"), call.direction === "outbound" && S.vmMessages.length > 0);
    tick();
  }

  function tick() {
    const call = S.current ? S.calls.get(S.current) : null;
    if (call) {
      const from = call.answered_at || call.ringing_at || call.created_at;
      const secs = from ? (Date.now() - new Date(from).getTime()) / 1000 : 0;
      $("#call-timer").textContent = fmtDur(secs);
    }
    if (S.wrap && S.wrap.until) {
      const left = (new Date(S.wrap.until).getTime() - Date.now()) / 1000;
      const cd = $("#wrapup-countdown");
      if (cd) {
        cd.textContent = left > 0 ? t("wrap_up_left", { time: fmtDur(left) }) : t("wrap_up_over");
        show(cd, true);
      }
    }
  }

  function contactDetails(c) {
    const rows = [];
    const add = (label, value) => { if (value) rows.push(el("dt", { text: t(label) }), el("dd", { text: value })); };
    add("role", c.role);
    add("email", c.email);
    add("owner", c.owner);
    add("phone", (c.phones || []).join(", "));
    add("kind", c.kind && c.kind !== "contact" ? t(`kind_${c.kind}`) : null);
    return rows;
  }

  function renderPop() {
    const id = S.current || (S.wrap && S.wrap.call_id);
    const pop = id ? S.pops.get(id) : null;
    show($("#pop-empty"), !pop);
    const lookup = $("#lookup");
    show(lookup, !!pop && pop.lookup !== "ok");
    if (pop && pop.lookup !== "ok") {
      lookup.textContent = t(`lookup_${pop.lookup}`);
      lookup.dataset.lookup = pop.lookup;
    }
    const c = pop && pop.contact;
    show($("#contact-card"), !!c);
    if (c) {
      const a = $("#pop-name");
      a.textContent = c.name;
      // only web links: a CRM record's url is data, never script (javascript:, data:)
      if (c.url && /^https?:\/\//i.test(c.url)) a.href = c.url; else a.removeAttribute("href");
      $("#pop-account").textContent = c.account_name || "";
      $("#pop-details").replaceChildren(...contactDetails(c));
    }
    const several = !!pop && !c && (pop.matches || []).length > 1;
    show($("#chooser"), several);
    if (several) {
      $("#chooser-list").replaceChildren(...pop.matches.map((m) => el("li", {},
        el("button", { type: "button", "data-id": m.id, onclick: () => choose(pop, m) },
          el("strong", { text: m.name }), " ", el("span", { class: "muted", text: [m.account_name, m.role].filter(Boolean).join(" · ") })))));
    }
    const form = $("#new-contact");
    const wantsNew = !!pop && !!pop.new_contact && !c;
    show(form, wantsNew);
    if (wantsNew && form.dataset.callId !== pop.call_id) {
      form.reset();
      form.elements.phone.value = pop.new_contact.phone || "";
      form.dataset.callId = pop.call_id;
    }
    $("#prio-reasons").textContent = pop && pop.priority > 0
      ? t("priority_line", { boost: pop.priority, reasons: (pop.priority_reasons || []).join(", ") }) : "";
    const hist = (pop && pop.history) || [];
    show($("#history-box"), hist.length > 0);
    $("#history").replaceChildren(...hist.map((h) => el("li", {},
      el("span", { text: when(h.at) }), el("span", { text: t(`dir_${h.direction}`) }),
      el("span", { text: h.outcome ? t(`outcome_${h.outcome}`) : "" }), el("span", { text: fmtDur(h.duration_s) }),
      el("span", { class: "muted", text: [h.agent, h.disposition].filter(Boolean).join(" · ") }))));
    const sum = pop && pop.last_summary;
    const points = (sum && (sum.key_points || [])) || [];
    show($("#summary-box"), points.length > 0);
    $("#summary").replaceChildren(...points.map((p) => el("li", { text: typeof p === "string" ? p : JSON.stringify(p) })));
    const script = pop && pop.script;
    show($("#script-box"), !!script);
    if ($("#script")) $("#script").textContent = script || "";
  }

  function renderWrap() {
    const form = $("#wrapup");
    if (!form) return;
    show(form, !!S.wrap);
    if (!S.wrap) return;
    const sel = $("#disposition");
    const list = (S.wrap.dispositions && S.wrap.dispositions.length ? S.wrap.dispositions : S.dispositions) || [];
    if (sel.dataset.for !== S.wrap.call_id || sel.options.length !== list.length + 1) {
      sel.replaceChildren(el("option", { value: "", text: t("choose") }),
        ...list.map((d) => el("option", { value: d, text: S.dict[`disp_${d}`] || d })));
      sel.dataset.for = S.wrap.call_id;
    }
    const pop = S.pops.get(S.wrap.call_id);
    $("#wrapup-call").textContent = pop ? ((pop.contact && pop.contact.name) || pop.from_display || "") : "";
    show($("#wrapup-countdown"), !!S.wrap.until);
    tick();
  }

  // ------------------------------------------------------------------ actions

  async function choose(pop, contact) {
    try {
      await api("PUT", `/api/v1/calls/${encodeURIComponent(pop.call_id)}/contact`, { contact_id: contact.id, account_id: contact.account_id });
    } catch (e) {
      toast(t("err_choose", { message: e.message }), true);
    }
    S.pops.set(pop.call_id, { ...pop, contact, matches: [contact] });
    render();
  }

  async function createContact(ev) {
    ev.preventDefault();
    const form = ev.target;
    const id = form.dataset.callId;
    const data = Object.fromEntries(new FormData(form).entries());
    data.call_id = id;
    try {
      const c = await api("POST", "/api/v1/contacts", data);
      const pop = S.pops.get(id);
      if (pop) S.pops.set(id, { ...pop, contact: c, matches: [c], new_contact: null, lookup: "ok" });
      toast(t("contact_created", { name: c.name }));
      render();
    } catch (e) {
      toast(t("err_create_contact", { message: e.message }), true);
    }
  }

  async function dial(number) {
    number = String(number || "").trim();
    if (!number) return null;
    try {
      const out = await api("POST", "/api/v1/calls", { to: number });
      toast(t("dialing", { number }));
      emit("dialed", out);
      return out;
    } catch (e) {
      toast(e.status === 429 ? t("err_rate_limit") : t("err_dial", { number, message: e.message }), true);
      return null;
    }
  }

  async function setState() {
    const state = $("#state").value;
    show($("#away-reason"), state === "away");
    const body = { state };
    if (state === "away") body.reason = $("#away-reason").value;
    try {
      const out = await api("PUT", `/api/v1/agents/${encodeURIComponent(myId())}/state`, body);
      S.agent = { ...(S.agent || {}), state: out.state, reason: out.reason, since: out.since };
    } catch (e) {
      toast(e.status === 409 ? t("err_state_conflict", { current: t(`state_${(e.body && e.body.error && e.body.error.current) || ""}`) })
        : e.message, true);
    }
    renderState();
  }

  async function saveWrapUp(ev) {
    ev.preventDefault();
    if (!S.wrap) return;
    const disposition = $("#disposition").value || null;
    if (!disposition) { toast(t("err_disposition"), true); return; }
    const notes = $("#notes").value || null;
    const id = S.wrap.call_id;
    const out = await act(id, "wrap-up", { disposition, notes });
    if (out) {
      toast(t("wrap_up_saved"));
      S.wrap = null;
      S.pops.delete(id);
      S.ended.delete(id);
      if (S.current === id) S.current = null;
      pickCurrent();
      render();
      emit("wrap_up_saved", { call_id: id, disposition });
    }
  }

  function buildDialpad() {
    const pad = $("#dialpad");
    if (!pad) return;
    for (const k of ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"]) {
      pad.append(el("button", { type: "button", "data-key": k, text: k, onclick: () => pressKey(k) }));
    }
  }

  function pressKey(k) {
    const call = S.current ? S.calls.get(S.current) : null;
    if (call && call.state === "answered") { act(call.call_id, "dtmf", { digits: k }); return; }
    const input = $("#dial-number");
    input.value += k;
    input.focus();
  }

  function wire() {
    const on = (sel, evt, fn) => { const n = $(sel); if (n) n.addEventListener(evt, fn); };
    on("#signin-form", "submit", (ev) => { ev.preventDefault(); signIn($("#token").value.trim()); });
    on("#signout", "click", () => signOut(""));
    on("#lang", "change", (ev) => { localStorage.setItem(LANG_KEY, ev.target.value); loadLang(ev.target.value); });
    on("#state", "change", setState);
    on("#away-reason", "change", setState);
    on("#btn-answer", "click", () => S.current && act(S.current, "answer"));
    on("#btn-hangup", "click", () => S.current && act(S.current, "hangup"));
    on("#btn-hold", "click", () => S.current && act(S.current, "hold"));
    on("#btn-unhold", "click", () => S.current && act(S.current, "unhold"));
    on("#btn-record", "click", () => {
      const call = S.current && S.calls.get(S.current);
      if (call) act(call.call_id, "record", { action: call.recording_state === "recording" ? "stop" : "start" });
    });
    on("#transfer-form", "submit", (ev) => {
      ev.preventDefault();
      const target = $("#transfer-target").value.trim();
      if (S.current && target) act(S.current, "transfer", { target, mode: $("#transfer-mode").value });
    });
    on("#vm-form", "submit", async (ev) => {
      ev.preventDefault();
      const id = S.current;
      const message = $("#vm-message").value;
      if (!id || !message) return;
      if (await act(id, "voicemail-drop", { message })) {
        toast(t("voicemail_dropped"));
        // the message plays on its own: the agent is free at once
        S.dropped.add(id);
        S.calls.delete(id); S.pops.delete(id);
        S.current = null; pickCurrent(); render();
      }
    });
    on("#dial-form", "submit", async (ev) => {
      ev.preventDefault();
      const input = $("#dial-number");
      if (await dial(input.value)) input.value = "";
    });
    on("#new-contact", "submit", createContact);
    on("#wrapup", "submit", saveWrapUp);
    setInterval(tick, 1000);
  }

  async function start() {
    wire();
    buildDialpad();
    await loadLang(pickLang());
    const params = new URLSearchParams(location.search);
    const fromUrl = params.get("token");
    if (fromUrl) {
      // a token in the URL (demo links) is moved to localStorage and out of the address bar
      params.delete("token");
      const q = params.toString();
      history.replaceState(null, "", location.pathname + (q ? `?${q}` : "") + location.hash);
    }
    const token = fromUrl || localStorage.getItem(TOKEN_KEY);
    if (token) await signIn(token); else signOut("");
  }

  window.CTIAgent = {
    dial, signIn, signOut, state: S,
    current: () => (S.current ? { call: S.calls.get(S.current) || null, pop: S.pops.get(S.current) || null } : null),
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
