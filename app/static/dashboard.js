// The dashboard's code (served from /static: the page's CSP runs no inline script, app/pages.py).
const $ = (id) => document.getElementById(id);
const money = (c) => "$" + (c / 100).toFixed(2);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (ch) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[ch]));
let token = sessionStorage.getItem("lw-token");
let challenge = null;

async function gql(query, variables = {}) {
  const headers = {"Content-Type": "application/json"};
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch("/graphql", {method: "POST", headers, body: JSON.stringify({query, variables})});
  const body = await response.json();
  if (body.errors) throw new Error(body.errors.map((e) => `${e.extensions?.code}: ${e.message}`).join("; "));
  return body.data;
}

$("login").onsubmit = async (e) => {
  e.preventDefault();
  try {
    const data = await gql("mutation($e: String!, $p: String!) { login(email: $e, password: $p) { challenge } }",
                           {e: $("email").value, p: $("password").value});
    challenge = data.login.challenge; $("login").hidden = true; $("mfa").hidden = false; $("error").textContent = "";
    $("code").focus();
  } catch (err) { $("error").textContent = err.message; }
};
$("mfa").onsubmit = async (e) => {
  e.preventDefault();
  try {
    const data = await gql("mutation($c: String!, $k: String!) { verifyMfa(challenge: $c, code: $k) { token } }",
                           {c: challenge, k: $("code").value});
    token = data.verifyMfa.token; sessionStorage.setItem("lw-token", token); start();
  } catch (err) { $("error").textContent = err.message; }
};

async function refresh() {
  // the providers with their subscriptions and caps are a document of their own: the cost limit
  const [d] = await Promise.all([gql(`{ me { label } niches { id name levelStrategy nextStartLevel { name }
      levels { name orderPosition priceCents maxRecipients active } }
    leads(first: 12) { edges { node { id status distributionAttempts niche { name } runs { status } } } }
    deadLetters(first: 20) { id leadId attempts error }
    distributionStats { nicheName levels { levelName spread providers { providerId received } } } }`), refreshProviders()]);
  $("who").textContent = d.me.label;
  $("niches").innerHTML = "<tr><th>niche</th><th>levels (price × recipients)</th><th>next start</th></tr>" +
    d.niches.map((n) => `<tr><td>${esc(n.name)}<div class="muted">${n.levelStrategy}</div></td><td>` +
      n.levels.map((l) => `<span class="${l.active ? "" : "muted"}">${l.orderPosition}. ${esc(l.name)} ${money(l.priceCents)} × ${l.maxRecipients}</span>`).join("<br>") +
      `</td><td>${esc(n.nextStartLevel?.name ?? "—")}</td></tr>`).join("");
  $("leads").innerHTML = "<tr><th>lead</th><th>niche</th><th>status</th><th>runs</th></tr>" +
    d.leads.edges.map(({node: l}) => `<tr><td>${l.id.slice(0, 8)}</td><td>${esc(l.niche?.name)}</td>` +
      `<td class="${l.status === "DISTRIBUTED" ? "ok" : l.status === "FAILED" ? "bad" : ""}">${l.status}</td>` +
      `<td>${l.runs.map((r) => r.status).join(", ")}</td></tr>`).join("");
  $("dead").innerHTML = d.deadLetters.length ? "<tr><th>run</th><th>attempts</th><th>error</th><th></th></tr>" +
    d.deadLetters.map((r) => `<tr><td>${r.id.slice(0, 8)}</td><td>${r.attempts}</td><td class="bad">${esc(r.error).slice(0, 80)}</td>` +
      `<td><button data-run="${r.id}">Retry</button></td></tr>`).join("") : "<tr><td class='muted'>none</td></tr>";
  $("fairness").innerHTML = d.distributionStats.map((s) => `<strong>${esc(s.nicheName)}</strong>` +
    s.levels.map((l) => `<div>${esc(l.levelName)}: spread ${l.spread} — ` +
      l.providers.map((p) => p.received).join(" · ") + "</div>").join("")).join("");
  document.querySelectorAll("button[data-run]").forEach((b) => b.onclick = async () => {
    b.disabled = true;
    await gql("mutation($id: UUID!) { retryDistribution(runId: $id) { status } }", {id: b.dataset.run});
    refresh();
  });
  await refreshWebhooks();  // static/webhooks.js
  return d.niches;
}

// Balances, and each subscription's state: status, cap usage in the current period and whether its
// schedule lets leads in now and until when (in the provider's time zone), through Controls
// (controls.js). Pages of 25 providers ("More" adds one; each refresh reads the pages shown): with
// their subscriptions and caps, a page of 50 would pass half the query cost limit.
const PROVIDERS = `query($after: String) { providers(first: 25, after: $after) { pageInfo { hasNextPage endCursor }
  edges { node { id name status balanceCents timezone caps { period maxLeads maxSpendCents usedLeads usedSpendCents }
    subscriptions { id status pausedByOperator openNow scheduleChangesAt schedule { blackoutDates }
      caps { period maxLeads maxSpendCents usedLeads usedSpendCents } competitionLevel { name niche { name } } } } } } }`;
let providerPages = 1;
async function refreshProviders() {
  const shown = [];
  let after = null, more = false;
  for (let page = 0; page < providerPages; page++) {
    const d = await gql(PROVIDERS, {after});
    shown.push(...d.providers.edges.map((e) => e.node));
    ({hasNextPage: more, endCursor: after} = d.providers.pageInfo);
    if (!more) break;
  }
  $("providers").innerHTML = "<tr><th>provider</th><th>status</th><th>balance</th><th>subscriptions: status, caps, schedule</th></tr>" +
    shown.map((p) => `<tr data-provider="${p.id}"><td>${esc(p.name)}<div class="muted">${esc(p.timezone)}</div></td>` +
      `<td>${p.status}</td><td>${money(p.balanceCents)}</td><td>` +
      (p.caps.length ? `<div class="subscription">all: ${Controls.caps(p.caps)}</div>` : "") +
      p.subscriptions.map((s) => `<div class="subscription" data-subscription="${s.id}">` +
        `<strong>${esc(s.competitionLevel?.niche?.name)} · ${esc(s.competitionLevel?.name)}</strong> ` +
        `<span class="${s.status === "ACTIVE" ? "ok" : s.status === "PAUSED" ? "warn" : "bad"}">${s.status}` +
        `${s.pausedByOperator ? " (by an operator)" : ""}</span> · ${Controls.schedule(s, p.timezone)}` +
        (s.caps.length ? " · " + Controls.caps(s.caps) : "") + "</div>").join("") + "</td></tr>").join("");
  $("providers-more").hidden = !more;
}
$("providers-more").onclick = () => { providerPages++; refreshProviders(); };

function subscribeNiches(niches) {
  const ws = new WebSocket(location.origin.replace("http", "ws") + "/graphql", "graphql-transport-ws");
  ws.onopen = () => ws.send(JSON.stringify({type: "connection_init", payload: {authorization: "Bearer " + token}}));
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === "connection_ack") {
      niches.forEach((n, i) => ws.send(JSON.stringify({id: String(i), type: "subscribe", payload: {
        query: `subscription($n: UUID!) { nicheActivity(nicheId: $n) { runId leadId seq type levelName providerId priceCents reason outcome at } }`,
        variables: {n: n.id}}})));
    } else if (msg.type === "next") {
      const e = msg.payload.data.nicheActivity;
      const li = document.createElement("li");
      const what = e.type === "ASSIGNED" ? `${esc(e.levelName)} → ${e.providerId.slice(0, 8)} ${money(e.priceCents)}`
        : e.type === "SKIPPED" ? `${esc(e.levelName)} skipped ${e.providerId.slice(0, 8)}: ${e.reason}`
        : e.type === "COMPLETED" ? `COMPLETED ${e.outcome}` : e.type;
      li.className = e.type === "COMPLETED" ? "ok" : e.type === "FAILED" ? "bad" : e.type === "SKIPPED" ? "warn" : "";
      li.textContent = `${e.at.slice(11, 19)} lead ${e.leadId.slice(0, 8)} #${e.seq} ${what}`;
      $("feed").prepend(li);
      if (e.type === "COMPLETED" || e.type === "FAILED") refresh();
    } else if (msg.type === "ping") { ws.send(JSON.stringify({type: "pong"})); }
  };
  ws.onclose = () => setTimeout(() => subscribeNiches(niches), 2000);  // reconnect
}

// two views on one page: the live one and the analytics (app/static/analytics.js), by the URL's hash
const currentView = () => location.hash === "#analytics" ? "analytics" : "live";
function show(view) {
  $("app").hidden = view !== "live";
  $("analytics").hidden = view !== "analytics";
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("current", a.hash === "#" + view));
  if (view === "analytics") openAnalytics();
}
window.addEventListener("hashchange", () => { if (!$("nav").hidden) show(currentView()); });

async function start() {
  try {
    const niches = await refresh();
    $("signin").hidden = true; $("nav").hidden = false;
    show(currentView());
    subscribeNiches(niches);
    setInterval(refresh, 10000);
  } catch (err) {
    sessionStorage.removeItem("lw-token"); token = null;
    $("signin").hidden = false; $("app").hidden = true; $("nav").hidden = true;
    $("error").textContent = err.message;
  }
}
// after every script of the page has run (analytics.js defines openAnalytics)
document.addEventListener("DOMContentLoaded", () => { if (token) start(); });
