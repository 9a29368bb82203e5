/* CTI managers' and supervisors' dashboard.
 *
 * Historical figures come from GET /api/v1/stats/... (docs/metrics.md); the live
 * part (queue wall, agents, calls in progress) from the WebSocket /ws (messages
 * snapshot, live, call_update, agent_state, monitor). No framework; Chart.js is
 * vendored in /static/vendor/. The token is kept in localStorage.
 */
(() => {
  "use strict";

  const TOKEN_KEY = "cti.token";
  const LANG_KEY = "cti.lang";
  const WEEKDAYS = { en: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], fr: ["lun", "mar", "mer", "jeu", "ven", "sam", "dim"] };
  const STATE_COLORS = { available: "#2e9d5b", ringing: "#e0a100", on_call: "#2f6fd6", wrap_up: "#8a5cd0", away: "#999", offline: "#ccc" };

  const S = {
    token: null, lang: "en", dict: {}, me: null,
    live: { queues: [], agents: [], calls: [] }, clockOffset: 0,
    charts: {}, monitor: null, ws: null, wsRetry: 0, liveUpdates: 0,
    refreshTimer: null, lastParams: null,
  };
  window.ctiDashboard = S; // for debugging and the browser tests

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  // ------------------------------------------------------------------ i18n
  function t(key, vars) {
    let s = S.dict[key] != null ? S.dict[key] : key;
    if (vars) for (const [k, v] of Object.entries(vars)) s = s.replace(`{${k}}`, v);
    return s;
  }

  function pickLang() {
    const url = new URLSearchParams(location.search).get("lang");
    const stored = localStorage.getItem(LANG_KEY);
    const nav = (navigator.language || "en").slice(0, 2).toLowerCase();
    for (const cand of [url, stored, nav]) if (cand === "en" || cand === "fr") return cand;
    return "en";
  }

  async function loadLang(lang) {
    const r = await fetch(`/static/i18n/dashboard.${lang}.json`);
    S.dict = r.ok ? await r.json() : {};
    S.lang = lang;
    document.documentElement.lang = lang;
    document.title = t("title");
    $$("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    $("#lang").value = lang;
  }

  // ------------------------------------------------------------------ formatting
  const num = (v) => (v == null ? "–" : new Intl.NumberFormat(S.lang).format(v));
  const pct = (v) => (v == null ? "–" : new Intl.NumberFormat(S.lang, { style: "percent", maximumFractionDigits: 1 }).format(v));
  function dur(s) {
    if (s == null || isNaN(s)) return "–";
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(sec).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }
  const when = (iso) => (iso ? new Date(iso).toLocaleString(S.lang, { dateStyle: "short", timeStyle: "short" }) : "–");
  const serverNow = () => Date.now() + S.clockOffset;
  const since = (iso) => (iso ? (serverNow() - Date.parse(iso)) / 1000 : null);
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v != null) e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return e;
  }

  // ------------------------------------------------------------------ API
  class AuthError extends Error {}

  async function api(path, opts = {}) {
    const r = await fetch(path, {
      ...opts,
      headers: { Authorization: `Bearer ${S.token}`, "Content-Type": "application/json", ...(opts.headers || {}) },
    });
    if (r.status === 401) throw new AuthError("unauthorized");
    return r;
  }

  async function apiJson(path, opts) {
    const r = await api(path, opts);
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      const err = new Error((body.error && body.error.message) || r.statusText);
      err.status = r.status;
      err.field = body.error && body.error.field;
      throw err;
    }
    return body;
  }

  // ------------------------------------------------------------------ sign-in
  function showSignin(message) {
    $("#signin").hidden = false;
    $("#app").hidden = true;
    $("#signout").hidden = true;
    $("#signin-error").textContent = message || "";
  }

  async function signIn(token) {
    S.token = token;
    try {
      const r = await api("/api/v1/me");
      S.me = r.ok ? await r.json() : { user: "?", role: "admin" };
    } catch (e) {
      localStorage.removeItem(TOKEN_KEY);
      S.token = null;
      showSignin(t("bad_token"));
      return false;
    }
    localStorage.setItem(TOKEN_KEY, token);
    $("#signin").hidden = true;
    $("#app").hidden = false;
    $("#signout").hidden = false;
    $("#whoami").textContent = `${S.me.user} (${t("role_" + S.me.role)})`;
    return true;
  }

  function signOut() {
    localStorage.removeItem(TOKEN_KEY);
    S.token = null;
    if (S.ws) { S.ws.onclose = null; S.ws.close(); S.ws = null; }
    setLiveStatus(false);
    showSignin("");
  }

  // ------------------------------------------------------------------ filters
  function isoDate(d) {
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  }

  function initFilters() {
    const f = $("#filters");
    const today = new Date();
    const start = new Date(today.getTime() - 6 * 86400000);
    const q = new URLSearchParams(location.search);
    f.from.value = q.get("from") || isoDate(start);
    f.to.value = q.get("to") || isoDate(today);
    if (q.get("bucket")) f.bucket.value = q.get("bucket");
    $("#contacted-form").date.value = isoDate(start);
  }

  function filterParams() {
    const f = $("#filters");
    const p = new URLSearchParams();
    for (const name of ["from", "to", "bucket", "queue", "team", "agent", "direction"]) {
      if (f[name].value) p.set(name, f[name].value);
    }
    return p;
  }

  function fillSelect(sel, values, labels = {}) {
    const cur = sel.value;
    const keep = sel.options[0];
    sel.replaceChildren(keep);
    for (const v of values) sel.append(el("option", { value: v }, labels[v] || v));
    sel.value = values.includes(cur) ? cur : "";
  }

  // ------------------------------------------------------------------ charts
  function chart(id, config) {
    if (S.charts[id]) {
      S.charts[id].data = config.data;
      S.charts[id].update();
      return S.charts[id];
    }
    if (!window.Chart) return null;
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
    S.charts[id] = new window.Chart(document.getElementById(id), config);
    return S.charts[id];
  }

  function renderAgentsChart(rows) {
    const labels = rows.map((r) => r.name || r.agent);
    chart("chart-agents", {
      type: "bar",
      data: {
        labels,
        datasets: [
          { label: t("handled_inbound"), data: rows.map((r) => r.handled_inbound), backgroundColor: "#2f6fd6", stack: "h" },
          { label: t("handled_outbound"), data: rows.map((r) => r.handled_outbound), backgroundColor: "#45b0a8", stack: "h" },
          { label: t("missed"), data: rows.map((r) => r.missed), backgroundColor: "#e0603a", stack: "m" },
        ],
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }

  function renderSeries(rows) {
    const bucket = $("#filters").bucket.value;
    const fmt = bucket === "hour" ? { dateStyle: "short", timeStyle: "short" } : { dateStyle: "short" };
    const labels = rows.map((r) => new Date(r.bucket).toLocaleString(S.lang, fmt));
    const sum = (k) => rows.reduce((a, r) => a + (r[k] || 0), 0);
    chart("chart-answered", {
      type: "doughnut",
      data: { labels: [t("answered"), t("not_answered")],
        datasets: [{ data: [sum("answered"), sum("not_answered")], backgroundColor: ["#2e9d5b", "#e0603a"] }] },
    });
    chart("chart-direction", {
      type: "doughnut",
      data: { labels: [t("inbound"), t("outbound")],
        datasets: [{ data: [sum("inbound"), sum("outbound")], backgroundColor: ["#2f6fd6", "#45b0a8"] }] },
    });
    chart("chart-sl", {
      data: {
        labels,
        datasets: [
          { type: "line", label: t("service_level") + " (%)", yAxisID: "sl", borderColor: "#8a5cd0", backgroundColor: "#8a5cd0",
            data: rows.map((r) => (r.service_level == null ? null : Math.round(r.service_level * 1000) / 10)), spanGaps: true },
          { type: "bar", label: t("answered"), yAxisID: "n", data: rows.map((r) => r.answered), backgroundColor: "#2e9d5b88", stack: "c" },
          { type: "bar", label: t("not_answered"), yAxisID: "n", data: rows.map((r) => r.not_answered), backgroundColor: "#e0603a88", stack: "c" },
        ],
      },
      options: { scales: {
        sl: { position: "right", min: 0, max: 100, title: { display: true, text: "%" } },
        n: { position: "left", beginAtZero: true, stacked: true, ticks: { precision: 0 } },
        x: { stacked: true },
      } },
    });
  }

  function renderHeatmap(cells) {
    S.typology = cells;
    const metric = $("#heatmap-metric").value;
    const grid = {};
    let max = 0;
    for (const c of cells) { grid[`${c.weekday}:${c.hour}`] = c; max = Math.max(max, c[metric]); }
    const table = el("table", { class: "heat" });
    const head = el("tr", {}, el("th"));
    for (let h = 0; h < 24; h++) head.append(el("th", {}, String(h)));
    table.append(head);
    WEEKDAYS[S.lang].forEach((name, d) => {
      const tr = el("tr", {}, el("th", {}, name));
      for (let h = 0; h < 24; h++) {
        const c = grid[`${d}:${h}`] || { calls: 0, answered: 0, not_answered: 0, inbound: 0, outbound: 0 };
        const v = c[metric];
        const alpha = max ? 0.08 + 0.92 * (v / max) : 0;
        const td = el("td", {
          style: `background: rgba(47,111,214,${v ? alpha.toFixed(3) : 0})`,
          title: `${name} ${h}h — ${t("calls")}: ${c.calls}, ${t("answered")}: ${c.answered}, ${t("not_answered")}: ${c.not_answered}`,
          "data-value": v,
        }, v ? String(v) : "");
        if (alpha > 0.55) td.classList.add("dark");
        tr.append(td);
      }
      table.append(tr);
    });
    $("#heatmap").replaceChildren(table);
  }

  // ------------------------------------------------------------------ tables
  function renderQueues(rows) {
    const cols = ["queue", "offered", "answered", "abandoned", "short_abandoned", "service_level", "asa_s", "longest_wait_s",
      "callbacks_requested", "callbacks_done"];
    $("#queue-table thead").replaceChildren(el("tr", {}, ...cols.map((c) => el("th", {}, t(c)))));
    const body = rows.map((r) => el("tr", { class: r.queue == null ? "total" : "" }, ...cols.map((c) => {
      const v = r[c];
      if (c === "queue") return el("td", {}, v == null ? t("total") : v);
      if (c === "service_level") return el("td", { class: "n" }, pct(v));
      if (c.endsWith("_s")) return el("td", { class: "n" }, dur(v));
      return el("td", { class: "n" }, num(v));
    })));
    $("#queue-table tbody").replaceChildren(...body);
    const total = rows.find((r) => r.queue == null);
    if (total) {
      $("#kpi-sl").textContent = pct(total.service_level);
      $("#kpi-asa").textContent = dur(total.asa_s);
      $("#kpi-abandoned").textContent = num(total.abandoned);
    }
  }

  function renderAgentStats(rows) {
    const cols = ["agent", "team", "handled_inbound", "handled_outbound", "missed", "talk_s", "talk_mean_s", "hold_s",
      "wrap_up_s", "aht_s", "occupancy", "logged_in_s"];
    $("#agent-stats-table thead").replaceChildren(el("tr", {}, ...cols.map((c) => el("th", {}, t("col_" + c)))));
    $("#agent-stats-table tbody").replaceChildren(...rows.map((r) => el("tr", { "data-agent": r.agent }, ...cols.map((c) => {
      if (c === "agent") return el("td", {}, r.name || r.agent);
      if (c === "team") return el("td", {}, r.team || "–");
      if (c === "occupancy") return el("td", { class: "n" }, pct(r.occupancy));
      if (c.endsWith("_s")) return el("td", { class: "n" }, dur(r[c]));
      return el("td", { class: "n" }, num(r[c]));
    }))));
  }

  function renderCallbacks(rows) {
    $("#callback-table tbody").replaceChildren(...rows.slice(0, 50).map((r) => el("tr", {},
      el("td", {}, when(r.at)), el("td", {}, t(r.kind) + (r.short_abandon ? ` (${t("short")})` : "")),
      el("td", {}, r.queue || "–"), el("td", {}, r.from_number || "–"),
      el("td", {}, r.contact ? `${r.contact.name || r.contact.id}${r.contact.account_name ? " — " + r.contact.account_name : ""}` : "–"),
      el("td", { class: "n" }, dur(r.wait_s)))));
  }

  function renderRisk(rows) {
    $("#risk-table tbody").replaceChildren(...rows.slice(0, 20).map((r) => el("tr", {},
      el("td", {}, r.rank), el("td", {}, r.name || r.account_id), el("td", { class: "n" }, r.risk_score),
      el("td", { class: "n" }, r.calls),
      el("td", {}, r.reasons.map((x) => `${t("reason_" + x.reason)} ×${x.count}`).join(", ")))));
  }

  function renderContacted(rows) {
    $("#contacted-table tbody").replaceChildren(...rows.slice(0, 200).map((r) => el("tr", {},
      el("td", {}, r.name || r.contact_id), el("td", {}, r.account_name || "–"),
      el("td", {}, when(r.last_contact_at)), el("td", { class: "n" }, r.calls_since))));
  }

  // ------------------------------------------------------------------ historical load
  async function loadHistorical() {
    const p = filterParams();
    S.lastParams = p;
    $("#filters-error").textContent = "";
    const get = (report, extra = "") => apiJson(`/api/v1/stats/${report}?${p}${extra}`);
    const soft = (promise) => promise.catch((e) => { if (e instanceof AuthError || e.status === 422) throw e; return null; });
    try {
      const [agents, queues, series, typology, callsList, risk] = await Promise.all([
        get("agents", "&median=false"), soft(get("queues")), get("hourly"), get("typology"),
        soft(get("calls-list", "&pending=true&limit=200")), soft(get("at-risk")),
      ]);
      renderAgentsChart(agents.rows);
      renderAgentStats(agents.rows);
      renderSeries(series.rows);
      renderHeatmap(typology.rows);
      const calls = series.rows.reduce((a, r) => a + r.calls, 0);
      const answered = series.rows.reduce((a, r) => a + r.answered, 0);
      $("#kpi-calls").textContent = num(calls);
      $("#kpi-answered").textContent = num(answered);
      $("#kpi-not-answered").textContent = num(calls - answered);
      if (queues) {
        renderQueues(queues.rows);
        fillSelect($("#filters").queue, queues.rows.filter((r) => r.queue != null).map((r) => r.queue));
      }
      $$("section.card").forEach((s) => { if (s.querySelector("#queue-table")) s.hidden = !queues; });
      if (callsList) renderCallbacks(callsList.rows);
      if (risk) renderRisk(risk.rows);
      $("#risk-table").closest("section").hidden = !risk;
      if (!$("#filters").agent.value && !$("#filters").team.value) {
        const names = {};
        agents.rows.forEach((r) => { names[r.agent] = r.name; });
        fillSelect($("#filters").agent, agents.rows.map((r) => r.agent), names);
        fillSelect($("#filters").team, [...new Set(agents.rows.map((r) => r.team).filter(Boolean))].sort());
      }
      document.body.dataset.loaded = String(Date.now());
    } catch (e) {
      if (e instanceof AuthError) return signOut();
      $("#filters-error").textContent = e.field ? `${t(e.field)}: ${e.message}` : e.message;
    }
  }

  function scheduleRefresh(delayMs) {
    clearTimeout(S.refreshTimer);
    S.refreshTimer = setTimeout(loadHistorical, delayMs);
  }

  // ------------------------------------------------------------------ live
  function applyLive(msg) {
    if (!msg) return;
    if (msg.at) S.clockOffset = Date.parse(msg.at) - Date.now();
    // a live message without calls keeps the call wall fed by call_update messages
    S.live = { queues: msg.queues || [], agents: msg.agents || S.live.agents, calls: msg.calls || S.live.calls,
      totals: msg.totals };
    renderLive();
  }

  function agentName(id) {
    const a = S.live.agents.find((x) => x.id === id);
    return a ? a.name || id : id || "–";
  }

  function renderLive() {
    $("#queue-wall").replaceChildren(...S.live.queues.map((q) => {
      const agents = q.agents || {};
      return el("div", { class: "qcard" + (q.waiting ? " busy" : ""), "data-queue": q.name },
        el("div", { class: "qname" }, q.name),
        el("div", { class: "qwait" }, el("span", { class: "big" }, q.waiting), " ", t("waiting")),
        el("div", {}, `${t("oldest_wait")}: `, el("span", { class: "oldest", "data-since": q.oldest_wait_s }, dur(q.oldest_wait_s))),
        el("div", { class: "qagents" }, ...["available", "on_call", "wrap_up", "away"].map((s) =>
          el("span", { class: "dot", style: `--c:${STATE_COLORS[s]}`, title: t("state_" + s) }, `${t("state_" + s)} ${agents[s] || 0}`))));
    }));
    const rows = [...S.live.agents].sort((a, b) => String(a.name || a.id).localeCompare(String(b.name || b.id)));
    $("#agent-table tbody").replaceChildren(...rows.map((a) => el("tr", { "data-agent": a.id },
      el("td", {}, a.name || a.id), el("td", {}, a.team || "–"),
      el("td", {}, el("span", { class: "state", style: `--c:${STATE_COLORS[a.state] || "#ccc"}` }, t("state_" + a.state)),
        a.reason ? ` (${a.reason})` : ""),
      el("td", { class: "n tick", "data-since": a.since || "" }, dur(since(a.since))))));
    renderCallWall();
  }

  function renderCallWall() {
    const canMonitor = S.me && (S.me.role === "supervisor" || S.me.role === "admin");
    $("#call-wall tbody").replaceChildren(...S.live.calls.map((c) => {
      const customer = (c.contact && (c.contact.name || c.contact.account_name)) ||
        (c.direction === "outbound" ? c.to_number : c.from_number) || "–";
      const start = c.answered_at || c.queued_at || c.created_at;
      const buttons = el("td", { class: "actions" });
      if (canMonitor && c.answered_at) {
        for (const mode of ["listen", "whisper", "barge"]) {
          const active = S.monitor && S.monitor.call_id === c.call_id && S.monitor.mode === mode;
          buttons.append(el("button", { type: "button", class: "mon" + (active ? " active" : ""), "data-mode": mode,
            onclick: () => monitor(c.call_id, mode) }, t(mode)));
        }
      }
      return el("tr", { "data-call": c.call_id },
        el("td", {}, agentName(c.agent)), el("td", {}, customer), el("td", {}, c.queue || "–"),
        el("td", {}, t("call_" + c.state)),
        el("td", { class: "n tick", "data-since": start || "" }, dur(since(start))), buttons);
    }));
    const ms = $("#monitor-status");
    if (S.monitor) {
      ms.hidden = false;
      $("#monitor-stop").hidden = false;
      const call = S.live.calls.find((c) => c.call_id === S.monitor.call_id);
      ms.textContent = t("monitoring", { mode: t(S.monitor.mode), agent: agentName((call && call.agent) || S.monitor.agent) });
    } else {
      ms.hidden = true;
      $("#monitor-stop").hidden = true;
    }
  }

  async function monitor(callId, mode) {
    $("#monitor-error").textContent = "";
    try {
      await apiJson(`/api/v1/calls/${encodeURIComponent(callId)}/monitor`, { method: "POST", body: JSON.stringify({ mode }) });
      S.monitor = mode === "stop" ? null : { call_id: callId, mode };
    } catch (e) {
      if (e instanceof AuthError) return signOut();
      $("#monitor-error").textContent = e.message;
    }
    renderCallWall();
  }

  function tick() {
    $$(".tick").forEach((td) => { if (td.dataset.since) td.textContent = dur(since(td.dataset.since)); });
  }

  function onMessage(msg) {
    switch (msg.type) {
      case "snapshot":
        if (msg.live) applyLive(msg.live);
        if (msg.live && !msg.live.calls && msg.calls) { S.live.calls = msg.calls.filter((c) => c.state !== "ended"); renderCallWall(); }
        for (const m of msg.monitors || []) {
          if (S.me && m.supervisor === S.me.user && !m.ended_at) S.monitor = { call_id: m.call_id, mode: m.mode, agent: m.agent };
        }
        break;
      case "live":
        S.liveUpdates++;
        applyLive(msg);
        break;
      case "call_update": {
        S.liveUpdates++;
        const c = msg.call;
        const i = S.live.calls.findIndex((x) => x.call_id === c.call_id);
        if (c.state === "ended") {
          if (i >= 0) S.live.calls.splice(i, 1);
          if (S.monitor && S.monitor.call_id === c.call_id) S.monitor = null;
          scheduleRefresh(5000);
        } else if (i >= 0) S.live.calls[i] = c;
        else S.live.calls.push(c);
        renderCallWall();
        break;
      }
      case "agent_state": {
        S.liveUpdates++;
        const a = S.live.agents.find((x) => x.id === msg.agent);
        if (a) Object.assign(a, { state: msg.state, reason: msg.reason, since: msg.since });
        renderLive();
        break;
      }
      case "monitor":
        if (S.me && msg.supervisor === S.me.user) {
          S.monitor = msg.active ? { call_id: msg.call_id, mode: msg.mode, agent: msg.agent } : null;
          renderCallWall();
        }
        break;
      default:
        break;
    }
    document.body.dataset.liveUpdates = String(S.liveUpdates);
  }

  function setLiveStatus(on) {
    const p = $("#live-status");
    p.classList.toggle("off", !on);
    p.classList.toggle("on", on);
    p.textContent = t(on ? "ws_live" : "ws_offline");
  }

  function connect() {
    if (!S.token) return;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/ws?token=${encodeURIComponent(S.token)}`);
    S.ws = ws;
    ws.onopen = () => { S.wsRetry = 0; setLiveStatus(true); };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      try { onMessage(msg); } catch (e) { console.error("dashboard message failed", msg.type, e); }
    };
    ws.onclose = (ev) => {
      setLiveStatus(false);
      if (ev.code === 4401) return signOut();
      const delay = Math.min(15000, 500 * 2 ** S.wsRetry++) * (0.7 + Math.random() * 0.6);
      setTimeout(connect, delay);
    };
  }

  // ------------------------------------------------------------------ exports
  async function download(url, fallbackName) {
    try {
      const r = await api(url);
      if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error?.message || r.statusText);
      const blob = await r.blob();
      const cd = r.headers.get("Content-Disposition") || "";
      const m = /filename="([^"]+)"/.exec(cd);
      const a = el("a", { href: URL.createObjectURL(blob), download: m ? m[1] : fallbackName });
      document.body.append(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    } catch (e) {
      if (e instanceof AuthError) return signOut();
      $("#filters-error").textContent = e.message;
    }
  }

  function exportUrl(report, extra) {
    const p = filterParams();
    p.set("format", "csv");
    if (extra) new URLSearchParams(extra).forEach((v, k) => p.set(k, v));
    return `/api/v1/stats/${report}?${p}`;
  }

  function contactedParams() {
    const f = $("#contacted-form");
    const p = new URLSearchParams();
    p.set(f.mode.value, f.date.value);
    return p;
  }

  // ------------------------------------------------------------------ start
  async function start() {
    await loadLang(pickLang());
    initFilters();
    $("#lang").addEventListener("change", async (e) => {
      localStorage.setItem(LANG_KEY, e.target.value);
      await loadLang(e.target.value);
      if (S.token) { renderLive(); loadHistorical(); }
    });
    $("#signout").addEventListener("click", signOut);
    $("#signin-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      if (await signIn($("#token-input").value.trim())) boot();
    });
    $("#filters").addEventListener("submit", (e) => { e.preventDefault(); loadHistorical(); });
    $("#heatmap-metric").addEventListener("change", () => renderHeatmap(S.typology || []));
    $("#monitor-stop").addEventListener("click", () => S.monitor && monitor(S.monitor.call_id, "stop"));
    $$("a.export").forEach((a) => {
      a.href = "#";
      a.addEventListener("click", (e) => { e.preventDefault(); download(exportUrl(a.dataset.report, a.dataset.extra), `${a.dataset.report}.csv`); });
    });
    $("#contacted-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        renderContacted((await apiJson(`/api/v1/stats/contacted?${contactedParams()}`)).rows);
      } catch (err) {
        if (err instanceof AuthError) return signOut();
        $("#filters-error").textContent = err.message;
      }
    });
    $("#contacted-export").addEventListener("click", () => {
      const p = contactedParams();
      p.set("format", "csv");
      download(`/api/v1/stats/contacted?${p}`, "contacted.csv");
    });
    setInterval(tick, 1000);

    const url = new URL(location.href);
    const fromUrl = url.searchParams.get("token");
    if (fromUrl) { // keep it out of the address bar and history
      url.searchParams.delete("token");
      history.replaceState(null, "", url.toString());
    }
    const token = fromUrl || localStorage.getItem(TOKEN_KEY);
    if (token && (await signIn(token))) boot();
    else if (!token) showSignin("");
  }

  async function boot() {
    if (S.booted) { loadHistorical(); connect(); return; }
    S.booted = true;
    try {
      applyLive(await apiJson("/api/v1/stats/live"));
    } catch (e) {
      if (e instanceof AuthError) return signOut();
    }
    loadHistorical();
    connect();
    setInterval(() => { if (S.token) loadHistorical(); }, 60000);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
