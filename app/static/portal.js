// The buyers' portal (/portal): a provider user enrolls from its invite link or signs in (password,
// then a TOTP code), follows the leads sold to it live (myAssignments over graphql-transport-ws,
// snapshot first), reads its balance and ledger, its subscriptions with cap usage and schedule,
// pauses and resumes them, sets its time zone, caps, delivery schedules and eligibility filters, asks
// for returns and reads the decisions, and runs its webhook endpoints (add one, rotate its secret: the
// secret shown once; enable, disable, delete; send a test event; the delivery log, a failed delivery
// sent again). Served from /static:
// the page's CSP runs no inline script (app/pages.py). What the API sends is shown through esc()
// or textContent only. Uses Controls from controls.js.
const $ = (id) => document.getElementById(id);
const {esc, money} = Controls;
const TOKEN_KEY = "lw-portal-token";  // sessionStorage, as the dashboard keeps its own: gone with the tab
let token = sessionStorage.getItem(TOKEN_KEY);
let challenge = null;  // between the password and the code
let invite = null, enrollmentToken = null;  // between the invite link, the password and the first code
let me = null;  // {label, provider: {id, name}}
let timezone = "UTC";  // the provider's: its days, caps and windows
let leads = [];  // assignments shown, newest first
let subscriptions = [], providerCaps = [];
let returnsByAssignment = new Map();
let feed = null;  // the live WebSocket; null when signed out
let timer = null;
let ledgerAfter = null, ledgerLoads = 0;

class ApiError extends Error {
  constructor(code, message) { super(`${code}: ${message}`); this.code = code; }
}

async function gql(query, variables = {}) {
  const headers = {"Content-Type": "application/json"};
  if (token) headers.Authorization = "Bearer " + token;
  let response;
  try {
    response = await fetch("/graphql", {method: "POST", headers, body: JSON.stringify({query, variables})});
  } catch {
    throw new ApiError("UNAVAILABLE", "no answer from the server: check the connection and try again");
  }
  const body = await response.json().catch(() => ({errors: [{message: `HTTP ${response.status}`, extensions: {code: "UNAVAILABLE"}}]}));
  if (body.errors) {
    const error = new ApiError(body.errors[0].extensions?.code ?? "ERROR", body.errors.map((e) => e.message).join("; "));
    if (error.code === "UNAUTHENTICATED" && token && me) sessionEnded("Your session has ended: sign in again.");
    throw error;
  }
  return body.data;
}

// Errors go to the section's own line. A load clears only what a load wrote, so the answer to a
// button (FORBIDDEN, CONFLICT…) stays until the next action of that section.
function report(id, error, from = "load") {
  const line = $(id);
  if (error) { line.textContent = error.message; line.dataset.from = from; }
  else if (line.dataset.from === from) line.textContent = "";
}
const clear = (id) => { $(id).textContent = ""; };
const when = (iso, withDay = false) => Controls.when(iso, timezone, withDay);
const statusClass = (s) => ({ACTIVE: "ok", APPROVED: "ok", DELIVERED: "ok", PAUSED: "warn", REQUESTED: "warn",
  PENDING: "warn", INSUFFICIENT_FUNDS: "bad", REJECTED: "bad", FAILED: "bad"}[s] ?? "");

// ---- signing in -------------------------------------------------------------------------------

function showOnly(id) {
  for (const part of ["signin", "enroll", "portal"]) $(part).hidden = part !== id;
  $("signout").hidden = id !== "portal";
}

function showSignin(message = "") {
  showOnly("signin");
  $("login").hidden = false; $("mfa").hidden = true;
  $("password").value = ""; $("code").value = "";
  $("who").textContent = "";
  $("signin-error").textContent = message;
}

$("login").onsubmit = async (e) => {
  e.preventDefault();
  try {
    const d = await gql("mutation($e: String!, $p: String!) { login(email: $e, password: $p) { challenge } }",
                        {e: $("email").value.trim(), p: $("password").value});
    challenge = d.login.challenge;
    $("login").hidden = true; $("mfa").hidden = false; clear("signin-error");
    $("code").focus();
  } catch (err) { $("signin-error").textContent = err.message; }
};

$("mfa").onsubmit = async (e) => {
  e.preventDefault();
  try {
    const d = await gql("mutation($c: String!, $k: String!) { verifyMfa(challenge: $c, code: $k) { token } }",
                        {c: challenge, k: $("code").value.trim()});
    signedIn(d.verifyMfa.token);
  } catch (err) { $("signin-error").textContent = err.message; }
};

$("mfa-back").onclick = () => showSignin();  // a new challenge (one expires after a few minutes)

// The invite link is PORTAL_URL#invite=<token>: a fragment, never sent to a server.
function showEnrollment(inviteToken) {
  invite = inviteToken; enrollmentToken = null;
  showOnly("enroll");
  $("accept").hidden = false; $("enrollment").hidden = true; clear("enroll-error");
}

function base64(text) {  // btoa takes Latin-1 only
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

$("accept").onsubmit = async (e) => {
  e.preventDefault();
  if ($("new-password").value !== $("new-password-again").value) {
    $("enroll-error").textContent = "The two passwords differ: type the same one twice.";
    return;
  }
  try {
    const d = await gql(`mutation($t: String!, $p: String!) { acceptInvite(token: $t, password: $p) {
        enrollmentToken provisioningUri qrSvg } }`, {t: invite, p: $("new-password").value});
    enrollmentToken = d.acceptInvite.enrollmentToken;
    history.replaceState(null, "", location.pathname + location.search);  // the invite is spent
    // the server's own SVG, shown as an image: an <img> never runs what an SVG holds
    $("qr").src = "data:image/svg+xml;base64," + base64(d.acceptInvite.qrSvg);
    $("uri").textContent = d.acceptInvite.provisioningUri;
    $("new-password").value = ""; $("new-password-again").value = "";
    $("accept").hidden = true; $("enrollment").hidden = false; clear("enroll-error");
    $("first-code").focus();
  } catch (err) { $("enroll-error").textContent = err.message; }
};

$("confirm").onsubmit = async (e) => {
  e.preventDefault();
  try {
    const d = await gql("mutation($t: String!, $c: String!) { confirmEnrollment(token: $t, code: $c) { token } }",
                        {t: enrollmentToken, c: $("first-code").value.trim()});
    invite = enrollmentToken = null;
    $("qr").removeAttribute("src"); $("uri").textContent = ""; $("first-code").value = "";
    signedIn(d.confirmEnrollment.token);
  } catch (err) { $("enroll-error").textContent = err.message; }
};

function signedIn(newToken) {
  token = newToken; challenge = null;
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
}

function stopLive() {
  const ws = feed;
  feed = null;  // first: its close is then not taken for a lost connection
  ws?.close(1000);
  clearInterval(timer); timer = null;
}

function forget() {
  stopLive();
  token = null; me = null; sessionStorage.removeItem(TOKEN_KEY);
  leads = []; subscriptions = []; providerCaps = []; returnsByAssignment = new Map();
  $("return-form").hidden = true; closeEditors();
  clearInterval(deliveryPoll); deliveryPoll = null; endpoints = []; hideSecret();
}

function sessionEnded(message) { forget(); showSignin(message); }

$("signout").onclick = async () => {
  stopLive();  // before logout, whose revocation closes the feed's socket from the server's side
  let message = "";
  try { await gql("mutation { logout }"); } catch (err) { message = `Signed out here, but the server answered ${err.message}`; }
  forget(); showSignin(message);
};

async function start() {
  try {
    const d = await gql("{ me { label providerId provider { id name timezone } } }");
    if (!d.me.providerId) {  // an operator's account: its page is /dashboard
      await gql("mutation { logout }").catch(() => {});
      forget(); showSignin("FORBIDDEN: this is the buyers' portal; operators sign in at /dashboard.");
      return;
    }
    me = d.me; timezone = d.me.provider.timezone;
  } catch (err) {
    if (token) { forget(); showSignin(err.message); }
    return;
  }
  showOnly("portal");
  $("who").textContent = `${me.provider.name} · ${me.label}`;
  showTimezone();
  renderLeads();
  await Promise.all([loadSubscriptions(), loadLedger(true), loadReturns(), loadWebhooks()]);
  connectFeed();
  // schedules turn, returns get decided, endpoints get flagged
  timer = setInterval(() => { loadSubscriptions(); loadReturns(); loadWebhooks(); }, 30_000);
}

// ---- my leads, live ---------------------------------------------------------------------------

// the documents are written out whole (no interpolation): tests/api/test_query_cost.py checks each one
const FEED = `subscription { myAssignments(recent: 20) { snapshot assignments { id priceChargedCents createdAt
  lead { id attributes } competitionLevel { name niche { name returnWindowHours } } } } }`;

function setLive(text, cls) { $("live").textContent = text; $("live").className = cls; }

function connectFeed() {
  const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/graphql", "graphql-transport-ws");
  feed = ws;
  setLive("(connecting…)", "muted");
  ws.onopen = () => ws.send(JSON.stringify({type: "connection_init", payload: {authorization: "Bearer " + token}}));
  ws.onmessage = (m) => {
    if (ws !== feed) return;
    const msg = JSON.parse(m.data);
    if (msg.type === "connection_ack") {
      ws.send(JSON.stringify({id: "leads", type: "subscribe", payload: {
        query: FEED}}));
    } else if (msg.type === "next") {
      if (msg.payload.errors) report("leads-error", new ApiError(msg.payload.errors[0].extensions?.code, msg.payload.errors[0].message));
      if (msg.payload.data) receive(msg.payload.data.myAssignments);
    } else if (msg.type === "error") {
      report("leads-error", new ApiError(msg.payload[0]?.extensions?.code ?? "ERROR", msg.payload.map((e) => e.message).join("; ")));
    } else if (msg.type === "ping") {
      ws.send(JSON.stringify({type: "pong"}));
    }
  };
  ws.onclose = (e) => {
    if (ws !== feed) return;  // signed out, or replaced
    feed = null;
    if (e.code === 4403 || e.code === 4401) { sessionEnded("Your session has ended: sign in again."); return; }
    setLive("(connection lost: reconnecting…)", "warn");
    setTimeout(() => { if (me && !feed) connectFeed(); }, 2000);
  };
}

function receive(message) {
  let fresh = new Set();
  if (message.snapshot) {
    leads = message.assignments;
    setLive("(live)", "ok");
    report("leads-error", null);
  } else {
    const known = new Set(leads.map((a) => a.id));
    const added = message.assignments.filter((a) => !known.has(a.id));
    fresh = new Set(added.map((a) => a.id));
    leads = [...added, ...leads];
    if (added.length) { loadLedger(true); loadSubscriptions(); loadDeliveries().then((waiting) => waiting && pollDeliveries()); }
    // ^ the charge, the caps' usage, the lead.assigned deliveries
  }
  renderLeads(fresh);
}

function leadLabel(attributes, id) {
  const a = attributes ?? {};
  return a.name ?? a.full_name ?? a.email ?? a.phone ?? `lead ${String(id).slice(0, 8)}`;
}

function attributesList(attributes) {
  const entries = Object.entries(attributes ?? {});
  if (!entries.length) return "<span class='muted'>no attributes</span>";
  return "<dl class='attrs'>" + entries.map(([k, v]) =>
    `<dt>${esc(k)}</dt><dd>${esc(v !== null && typeof v === "object" ? JSON.stringify(v) : v)}</dd>`).join("") + "</dl>";
}

function returnCell(a) {
  const requested = returnsByAssignment.get(a.id);
  if (requested) return `<span class="${statusClass(requested.status)}">return ${requested.status}</span>`;
  const hours = a.competitionLevel?.niche?.returnWindowHours ?? 0;
  if (!hours) return "<span class='muted'>no returns in this niche</span>";
  const until = Date.parse(a.createdAt) + hours * 3600_000;
  if (until <= Date.now()) return "<span class='muted'>return window closed</span>";
  return `<button type="button" data-return="${esc(a.id)}">Request return</button>` +
    `<div class="muted">until ${when(new Date(until).toISOString())}</div>`;
}

function renderLeads(fresh = new Set()) {
  if (!leads.length) {
    $("leads").innerHTML = "<tr><td class='muted'>No leads yet: each lead sold to you appears here at once.</td></tr>";
    return;
  }
  $("leads").innerHTML = "<tr><th>received</th><th>niche · level</th><th>price</th><th>lead</th><th>return</th></tr>" +
    leads.map((a) => `<tr data-assignment="${esc(a.id)}"${fresh.has(a.id) ? " class='new'" : ""}><td class="time">${when(a.createdAt)}</td>` +
      `<td>${esc(a.competitionLevel?.niche?.name)} · ${esc(a.competitionLevel?.name)}</td>` +
      `<td>${money(a.priceChargedCents)}</td><td>${attributesList(a.lead?.attributes)}</td><td>${returnCell(a)}</td></tr>`).join("");
  document.querySelectorAll("#leads button[data-return]").forEach((b) => b.onclick = () => openReturnForm(b.dataset.return));
}

function openReturnForm(assignmentId) {
  const a = leads.find((x) => x.id === assignmentId);
  if (!a) return;
  $("return-form").dataset.assignment = assignmentId;
  $("return-what").textContent = `Return ${leadLabel(a.lead?.attributes, a.lead?.id)} ` +
    `(${a.competitionLevel?.niche?.name} · ${a.competitionLevel?.name}, ${money(a.priceChargedCents)}, ${when(a.createdAt)})`;
  $("return-reason").value = "INVALID_CONTACT"; $("return-note").value = "";
  $("return-form").hidden = false;
  $("return-reason").focus();
}
$("return-cancel").onclick = () => { $("return-form").hidden = true; };
$("return-form").onsubmit = async (e) => {
  e.preventDefault();
  clear("leads-error");
  const note = $("return-note").value.trim();
  try {
    await gql("mutation($a: UUID!, $r: ReturnReason!, $n: String) { requestReturn(assignmentId: $a, reason: $r, note: $n) { id status } }",
              {a: $("return-form").dataset.assignment, r: $("return-reason").value, n: note || null});
    $("return-form").hidden = true;
  } catch (err) { report("leads-error", err, "action"); }
  await loadReturns();
};

// ---- returns ----------------------------------------------------------------------------------

async function loadReturns() {
  if (!me) return;  // signed out meanwhile
  let d;
  try {
    d = await gql(`{ returns(first: 50) { edges { node { id assignmentId status reason note decisionNote decidedAt createdAt
        refundEntry { amountCents } lead { id attributes } assignment { priceChargedCents competitionLevel { name niche { name } } } } } } }`);
  } catch (err) { report("returns-error", err); return; }
  report("returns-error", null);
  const returns = d.returns.edges.map((e) => e.node);
  returnsByAssignment = new Map(returns.map((r) => [r.assignmentId, r]));
  $("returns").innerHTML = returns.length
    ? "<tr><th>asked</th><th>lead</th><th>reason</th><th>status</th><th>decision</th></tr>" + returns.map((r) =>
      `<tr data-return="${esc(r.id)}"><td class="time">${when(r.createdAt)}</td><td>${esc(leadLabel(r.lead?.attributes, r.lead?.id))}` +
      `<div class="muted">${esc(r.assignment?.competitionLevel?.niche?.name)} · ${esc(r.assignment?.competitionLevel?.name)}, ` +
      `${money(r.assignment?.priceChargedCents ?? 0)}</div></td>` +
      `<td>${esc(r.reason)}${r.note ? `<div class="muted">${esc(r.note)}</div>` : ""}</td>` +
      `<td class="${statusClass(r.status)}">${esc(r.status)}</td>` +
      `<td>${r.decidedAt ? when(r.decidedAt) : ""}${r.refundEntry ? ` refunded ${money(r.refundEntry.amountCents)}` : ""}` +
      `${r.decisionNote ? `<div class="decision">${esc(r.decisionNote)}</div>` : ""}</td></tr>`).join("")
    : "<tr><td class='muted'>No return requests.</td></tr>";
  renderLeads();  // their return column
}

// ---- subscriptions and caps -------------------------------------------------------------------

const PERIODS = ["DAY", "WEEK", "MONTH", "TOTAL"];

async function loadSubscriptions() {
  if (!me) return;  // signed out meanwhile
  let d;
  try {
    d = await gql(`query($id: UUID!) { provider(id: $id) { timezone caps { period maxLeads maxSpendCents usedLeads usedSpendCents }
        subscriptions { id status pausedByOperator openNow scheduleChangesAt schedule { windows { days from to } blackoutDates } filters
          caps { period maxLeads maxSpendCents usedLeads usedSpendCents } competitionLevel { name priceCents niche { name } } } } }`, {id: me.provider.id});
  } catch (err) { report("subscriptions-error", err); return; }
  report("subscriptions-error", null);
  if (timezone !== d.provider.timezone) { timezone = d.provider.timezone; showTimezone(); renderLeads(); }
  providerCaps = d.provider.caps;
  subscriptions = d.provider.subscriptions.sort((a, b) =>
    `${a.competitionLevel?.niche?.name} ${a.competitionLevel?.name}`.localeCompare(`${b.competitionLevel?.niche?.name} ${b.competitionLevel?.name}`));
  $("provider-caps").innerHTML = (providerCaps.length
    ? `<strong>Across all subscriptions:</strong> ${providerCaps.map(Controls.cap).join(" · ")}`
    : "<span class='muted'>No cap across all subscriptions.</span>") +
    ` <button type="button" id="provider-caps-edit">Caps…</button>`;
  $("provider-caps-edit").onclick = () => openCaps(null);
  $("subscriptions").innerHTML = subscriptions.length
    ? "<tr><th>niche · level</th><th>price</th><th>status</th><th>caps</th><th>schedule</th><th>filters</th><th></th></tr>" +
      subscriptions.map((s) => `<tr data-subscription="${esc(s.id)}">` +
        `<td>${esc(s.competitionLevel?.niche?.name)} · ${esc(s.competitionLevel?.name)}</td>` +
        `<td>${money(s.competitionLevel?.priceCents ?? 0)}</td>` +
        `<td><span class="${statusClass(s.status)} status">${esc(s.status)}</span>` +
        `${s.pausedByOperator ? "<div class='muted'>paused by the operator</div>" : ""}` +
        `${s.status === "INSUFFICIENT_FUNDS" ? "<div class='muted'>top up to receive leads</div>" : ""}</td>` +
        `<td>${Controls.caps(s.caps) || "<span class='muted'>none</span>"}</td>` +
        `<td class="schedule">${Controls.schedule(s, timezone)}</td><td class="filters">${filtersText(s.filters)}</td>` +
        `<td>${s.status === "PAUSED" ? `<button type="button" data-resume="${esc(s.id)}">Resume</button>`
                                     : `<button type="button" data-pause="${esc(s.id)}">Pause</button>`}` +
        ` <button type="button" data-caps="${esc(s.id)}">Caps…</button>` +
        ` <button type="button" data-schedule="${esc(s.id)}">Schedule…</button>` +
        ` <button type="button" data-filters="${esc(s.id)}">Filters…</button></td></tr>`).join("")
    : "<tr><td class='muted'>No subscriptions: your operator subscribes you to niches.</td></tr>";
  document.querySelectorAll("#subscriptions button[data-pause]").forEach((b) => b.onclick = () => setPaused(b, b.dataset.pause, true));
  document.querySelectorAll("#subscriptions button[data-resume]").forEach((b) => b.onclick = () => setPaused(b, b.dataset.resume, false));
  document.querySelectorAll("#subscriptions button[data-caps]").forEach((b) => b.onclick = () => openCaps(b.dataset.caps));
  document.querySelectorAll("#subscriptions button[data-schedule]").forEach((b) => b.onclick = () => openSchedule(b.dataset.schedule));
  document.querySelectorAll("#subscriptions button[data-filters]").forEach((b) => b.onclick = () => openFilters(b.dataset.filters));
}

async function setPaused(button, id, pause) {
  button.disabled = true;
  clear("subscriptions-error");
  try {
    await gql(pause ? "mutation($id: UUID!) { pauseSubscription(id: $id) { id status } }"
                    : "mutation($id: UUID!) { resumeSubscription(id: $id) { id status } }", {id});
  } catch (err) { report("subscriptions-error", err, "action"); }
  await loadSubscriptions();
}

// one editor open at a time under the subscriptions: caps, schedule or filters
const EDITORS = ["caps-form", "schedule-form", "filters-form"];
function openEditor(id) { for (const form of EDITORS) $(form).hidden = form !== id; }
function closeEditors() { for (const form of EDITORS) $(form).hidden = true; }
const subscriptionName = (s) => `${s.competitionLevel?.niche?.name} · ${s.competitionLevel?.name}`;
// a row's Remove button in the schedule's windows or the filters' conditions
const removeRow = (e) => { if (e.target.classList.contains("remove")) e.target.closest("tr").remove(); };
// an editor's change: the editor closes, or stays open with the server's answer above the table
async function saveEditor(query, variables) {
  clear("subscriptions-error");
  try {
    await gql(query, variables);
    closeEditors();
  } catch (err) { report("subscriptions-error", err, "action"); }
  await loadSubscriptions();
}

// one small form for a subscription's caps or the provider-wide ones (subscriptionId null)
function openCaps(subscriptionId) {
  const s = subscriptions.find((x) => x.id === subscriptionId);
  const current = s ? s.caps : providerCaps;
  $("caps-form").dataset.subscription = subscriptionId ?? "";
  $("caps-what").textContent = s ? `Caps of ${s.competitionLevel?.niche?.name} · ${s.competitionLevel?.name}`
                                 : "Caps across all subscriptions";
  $("caps-rows").innerHTML = "<tr><th>period</th><th>max leads</th><th>max spend ($)</th></tr>" + PERIODS.map((p) => {
    const c = current.find((x) => x.period === p);
    return `<tr><td>${Controls.PERIOD[p]}</td>` +
      `<td><input id="caps-${p}-leads" type="number" min="0" step="1" value="${c?.maxLeads ?? ""}"></td>` +
      `<td><input id="caps-${p}-spend" type="number" min="0" step="0.01" value="${c?.maxSpendCents != null ? (c.maxSpendCents / 100).toFixed(2) : ""}"></td></tr>`;
  }).join("");
  openEditor("caps-form");
}
$("caps-cancel").onclick = closeEditors;
$("caps-form").onsubmit = async (e) => {
  e.preventDefault();
  const caps = [];
  for (const p of PERIODS) {
    const leadsValue = $(`caps-${p}-leads`).value.trim(), spendValue = $(`caps-${p}-spend`).value.trim();
    if (leadsValue === "" && spendValue === "") continue;
    caps.push({period: p, maxLeads: leadsValue === "" ? null : Number(leadsValue),
               maxSpendCents: spendValue === "" ? null : Math.round(Number(spendValue) * 100)});
  }
  const subscriptionId = $("caps-form").dataset.subscription;
  if (subscriptionId) {
    await saveEditor("mutation($id: UUID!, $caps: [CapInput!]!) { setSubscriptionCaps(subscriptionId: $id, caps: $caps) { id } }",
                     {id: subscriptionId, caps});
  } else {
    await saveEditor("mutation($id: UUID!, $caps: [CapInput!]!) { setProviderCaps(providerId: $id, caps: $caps) { id } }",
                     {id: me.provider.id, caps});
  }
};

// ---- time zone --------------------------------------------------------------------------------

function showTimezone() {
  $("zone").textContent = `Times in ${timezone}.`;
  if (document.activeElement !== $("zone-name")) $("zone-name").value = timezone;
}
// the names this browser knows, as suggestions only: the server decides what is a time zone
for (const name of new Set(["UTC", ...(Intl.supportedValuesOf?.("timeZone") ?? [])])) $("zone-names").append(new Option(name));

$("zone-form").onsubmit = async (e) => {
  e.preventDefault();
  clear("subscriptions-error");
  try {
    const d = await gql("mutation($id: UUID!, $tz: String!) { setProviderTimezone(providerId: $id, timezone: $tz) { timezone } }",
                        {id: me.provider.id, tz: $("zone-name").value.trim()});
    timezone = d.setProviderTimezone.timezone;
    $("zone-name").value = timezone;
    showTimezone();
  } catch (err) { report("subscriptions-error", err, "action"); return; }
  // every time shown, and the caps' current periods, are the new zone's
  await Promise.all([loadSubscriptions(), loadLedger(true), loadReturns(), loadWebhooks()]);
};

// ---- delivery schedule ------------------------------------------------------------------------

const WEEKDAYS = ["MON", "TUE", "WED", "THU", "FRI"];
function addWindow(w = {days: WEEKDAYS, from: "08:00", to: "18:00"}) {
  $("schedule-windows").insertAdjacentHTML("beforeend", "<tr class='window'><td>" + Controls.DAYS.map((d) =>
    `<label><input type="checkbox" data-day="${d}"${w.days.includes(d) ? " checked" : ""}>${Controls.dayName(d)}</label>`).join(" ") +
    `</td><td><label>from <input class="from" size="5" placeholder="HH:MM" value="${esc(w.from)}"></label> ` +
    `<label>to <input class="to" size="5" placeholder="HH:MM" value="${esc(w.to)}"></label></td>` +
    `<td><button type="button" class="remove">Remove</button></td></tr>`);
}

function openSchedule(subscriptionId) {
  const s = subscriptions.find((x) => x.id === subscriptionId);
  if (!s) return;
  $("schedule-form").dataset.subscription = subscriptionId;
  $("schedule-what").textContent = `Delivery schedule of ${subscriptionName(s)}, in ${timezone}`;
  $("schedule-always").checked = !s.schedule;
  $("schedule-fields").hidden = !s.schedule;
  $("schedule-windows").innerHTML = "";
  for (const w of s.schedule?.windows ?? []) addWindow(w);
  $("schedule-blackouts").value = (s.schedule?.blackoutDates ?? []).join(", ");
  openEditor("schedule-form");
}
$("schedule-always").onchange = () => {
  const always = $("schedule-always").checked;
  $("schedule-fields").hidden = always;
  if (!always && !$("schedule-windows").rows.length) addWindow();
};
$("window-add").onclick = () => addWindow();
$("schedule-windows").onclick = removeRow;
$("schedule-cancel").onclick = closeEditors;
$("schedule-form").onsubmit = async (e) => {
  e.preventDefault();
  const schedule = $("schedule-always").checked ? null : {
    windows: [...$("schedule-windows").rows].map((row) => ({
      days: [...row.querySelectorAll("input[data-day]:checked")].map((box) => box.dataset.day),
      from: row.querySelector(".from").value.trim(), to: row.querySelector(".to").value.trim()})),
    blackoutDates: $("schedule-blackouts").value.split(/[\s,]+/).filter(Boolean)};
  await saveEditor("mutation($id: UUID!, $s: DeliveryScheduleInput) { setSubscriptionSchedule(subscriptionId: $id, schedule: $s) { id } }",
                   {id: $("schedule-form").dataset.subscription, s: schedule});
};

// ---- eligibility filters ----------------------------------------------------------------------

const OPS = ["eq", "neq", "in", "not_in", "prefix", "gte", "lte", "exists"];
const valueText = (v) => (Array.isArray(v) ? v.join(", ") : String(v ?? ""));
function filtersText(filters) {
  if (!filters?.length) return "<span class='muted'>none: every lead</span>";
  return filters.map((f) => `<div class="filter">${esc(f.field)} ` + (f.op === "exists"
    ? (f.value === false ? "is absent" : "is present") : `${esc(f.op.replace("_", " "))} ${esc(valueText(f.value))}`) + "</div>").join("");
}

let filtersOpened = [];  // the conditions as the editor opened: a value left as it was is sent as it was
// eq, neq, in and not in compare with a value of the attribute's own kind ("12" is not 12): the buyer says which
const KINDS = {text: "text", number: "number", boolean: "yes/no"};
const kindOf = (v) => (Array.isArray(v) ? kindOf(v[0]) : typeof v === "number" ? "number" : typeof v === "boolean" ? "boolean" : "text");
function addCondition(f = {field: "", op: "eq", value: ""}, index = "") {
  const kind = kindOf(f.value);
  $("filter-rows").insertAdjacentHTML("beforeend", `<tr class="condition" data-index="${index}">` +
    `<td><input class="field" placeholder="field, e.g. state" value="${esc(f.field)}"></td>` +
    `<td><select class="op">${OPS.map((op) => `<option value="${op}"${op === f.op ? " selected" : ""}>${op.replace("_", " ")}</option>`).join("")}</select></td>` +
    `<td><input class="value" placeholder="value" size="28" value="${esc(valueText(f.value))}"></td>` +
    `<td><select class="kind" title="the kind of value the lead's attribute holds">${Object.entries(KINDS).map(([k, label]) =>
      `<option value="${k}"${k === kind ? " selected" : ""}>${label}</option>`).join("")}</select></td>` +
    `<td><button type="button" class="remove">Remove</button></td></tr>`);
  showKind($("filter-rows").lastElementChild);
}
// the kind matters only where the value is compared as it is; prefix is text, gte/lte numbers, exists yes/no
const KINDED = new Set(["eq", "neq", "in", "not_in"]);
function showKind(row) { row.querySelector(".kind").hidden = !KINDED.has(row.querySelector(".op").value); }

// a value that is not of its kind is refused here (sent as text, it would be a filter that never matches)
class NotOfKind extends Error {}
function typed(kind, text) {
  if (kind === "number") {
    if (text === "" || Number.isNaN(Number(text))) throw new NotOfKind(`“${text}” is not a number`);
    return Number(text);
  }
  if (kind === "boolean") {
    const value = {true: true, yes: true, false: false, no: false}[text.toLowerCase()];
    if (value === undefined) throw new NotOfKind(`“${text}” is not yes or no`);
    return value;
  }
  return text;
}
function conditionValue(op, text, kind, original) {
  if (original && original.op === op && valueText(original.value) === text && kindOf(original.value) === kind) return original.value;
  if (op === "in" || op === "not_in") return text.split(",").map((v) => v.trim()).filter(Boolean).map((v) => typed(kind, v));
  if (op === "eq" || op === "neq") return typed(kind, text);
  if (op === "gte" || op === "lte") return typed("number", text);
  if (op === "exists") return text === "" ? true : typed("boolean", text);
  return text;
}

function openFilters(subscriptionId) {
  const s = subscriptions.find((x) => x.id === subscriptionId);
  if (!s) return;
  $("filters-form").dataset.subscription = subscriptionId;
  $("filters-what").textContent = `Eligibility filters of ${subscriptionName(s)}`;
  filtersOpened = s.filters ?? [];
  $("filter-rows").innerHTML = "";
  filtersOpened.forEach((f, i) => addCondition(f, i));
  if (!filtersOpened.length) addCondition();
  openEditor("filters-form");
}
$("filter-add").onclick = () => addCondition();
$("filter-rows").onclick = removeRow;
$("filter-rows").onchange = (e) => { if (e.target.classList.contains("op")) showKind(e.target.closest("tr")); };
$("filters-cancel").onclick = closeEditors;
$("filters-form").onsubmit = async (e) => {
  e.preventDefault();
  const filled = [...$("filter-rows").rows].filter((row) => row.querySelector(".field").value.trim() || row.querySelector(".value").value.trim());
  let filters;
  try {
    filters = filled.map((row, i) => {
      const op = row.querySelector(".op").value, field = row.querySelector(".field").value.trim();
      try {
        return {field, op, value: conditionValue(op, row.querySelector(".value").value.trim(),
                                                 row.querySelector(".kind").value, filtersOpened[row.dataset.index])};
      } catch (err) {
        throw err instanceof NotOfKind ? new NotOfKind(`INVALID_INPUT: condition ${i + 1} (${field}): ${err.message}`) : err;
      }
    });
  } catch (err) {
    if (!(err instanceof NotOfKind)) throw err;
    report("subscriptions-error", err, "action");  // nothing sent, nothing written
    return;
  }
  await saveEditor("mutation($id: UUID!, $f: JSON!) { setSubscriptionFilters(subscriptionId: $id, filters: $f) { id } }",
                   {id: $("filters-form").dataset.subscription, f: filters});
};

// ---- balance and ledger -----------------------------------------------------------------------

const LEDGER_PAGE = 10;
// "lead:<uuid>" (a charge) reads as "lead 7937953f", the whole reference in its tooltip
function reference(text) {
  const found = /^([a-z_]+):([0-9a-f-]{36})$/.exec(text ?? "");
  return found ? `<span title="${esc(text)}">${esc(found[1])} ${esc(found[2].slice(0, 8))}</span>` : esc(text ?? "");
}

async function loadLedger(reset) {
  if (!me) return;  // signed out meanwhile
  const load = reset ? ++ledgerLoads : ledgerLoads;
  let d;
  try {
    d = await gql(`query($id: UUID!, $first: Int!, $after: String) { provider(id: $id) { balanceCents
        ledger(first: $first, after: $after) { edges { node { id kind amountCents balanceAfterCents reference note createdAt } }
          pageInfo { hasNextPage endCursor } } } }`, {id: me.provider.id, first: LEDGER_PAGE, after: reset ? null : ledgerAfter});
  } catch (err) { report("ledger-error", err); return; }
  if (load !== ledgerLoads) return;  // a newer first page is on its way
  report("ledger-error", null);
  $("balance").textContent = money(d.provider.balanceCents);
  const rows = d.provider.ledger.edges.map(({node: l}) => `<tr data-entry="${esc(l.id)}"><td class="time">${when(l.createdAt)}</td>` +
    `<td>${esc(l.kind)}</td><td class="num ${l.amountCents < 0 ? "bad" : "ok"}">${money(l.amountCents)}</td>` +
    `<td class="num">${money(l.balanceAfterCents)}</td><td>${reference(l.reference)}` +
    `${l.note ? `<div class="muted">${esc(l.note)}</div>` : ""}</td></tr>`).join("");
  if (reset) {
    $("ledger").innerHTML = "<tr><th>when</th><th>kind</th><th>amount</th><th>balance after</th><th>reference</th></tr>" + rows;
  } else {
    $("ledger").insertAdjacentHTML("beforeend", rows);
  }
  ledgerAfter = d.provider.ledger.pageInfo.endCursor;
  $("ledger-more").hidden = !d.provider.ledger.pageInfo.hasNextPage;
}
$("ledger-more").onclick = () => loadLedger(false);

// ---- webhooks ---------------------------------------------------------------------------------

const EVENT_NAMES = {LEAD_ASSIGNED: "lead.assigned", RETURN_DECIDED: "return.decided"};
let endpoints = [];
let deliveryPoll = null;

async function loadWebhooks() {
  if (!me) return;
  let d;
  try {
    d = await gql(`query($p: UUID!) { webhookEndpoints(providerId: $p) { id url description events enabled disabledReason
        disabledAt consecutiveFailures flagged } }`, {p: me.provider.id});
  } catch (err) { report("webhooks-error", err); return; }
  report("webhooks-error", null);
  endpoints = d.webhookEndpoints;
  $("endpoints").innerHTML = endpoints.length
    ? "<tr><th>endpoint</th><th>events</th><th>state</th><th></th></tr>" + endpoints.map((e) =>
      `<tr data-endpoint="${esc(e.id)}"><td>${esc(e.url)}${e.description ? `<div class="muted">${esc(e.description)}</div>` : ""}</td>` +
      `<td>${e.events.map((v) => esc(EVENT_NAMES[v] ?? v)).join(", ")}</td><td>${endpointState(e)}</td>` +
      `<td><button type="button" data-test="${esc(e.id)}">Send test event</button> ` +
      (e.enabled ? `<button type="button" data-disable="${esc(e.id)}">Disable</button>`
                 : `<button type="button" data-enable="${esc(e.id)}">Enable</button>`) +
      ` <button type="button" data-rotate="${esc(e.id)}">Rotate secret</button>` +
      ` <button type="button" data-delete="${esc(e.id)}">Delete</button></td></tr>`).join("")
    : "<tr><td class='muted'>No endpoints: add one to receive your leads in your own system.</td></tr>";
  document.querySelectorAll("#endpoints button[data-test]").forEach((b) => b.onclick = () => sendTest(b, b.dataset.test));
  document.querySelectorAll("#endpoints button[data-disable]").forEach((b) => b.onclick = () => setEnabled(b, b.dataset.disable, false));
  document.querySelectorAll("#endpoints button[data-enable]").forEach((b) => b.onclick = () => setEnabled(b, b.dataset.enable, true));
  document.querySelectorAll("#endpoints button[data-rotate]").forEach((b) => b.onclick = () => rotateSecret(b, b.dataset.rotate));
  document.querySelectorAll("#endpoints button[data-delete]").forEach((b) => b.onclick = () => deleteEndpoint(b, b.dataset.delete));
  await loadDeliveries();
}

function endpointState(e) {
  if (e.enabled) return `<span class="ok state">enabled</span>` +
    (e.consecutiveFailures ? `<div class="warn">${e.consecutiveFailures} failed attempts in a row</div>` : "");
  if (e.flagged) return `<span class="bad state">flagged</span><div class="muted">disabled ${when(e.disabledAt)} after ` +
    `${e.consecutiveFailures} failed attempts in a row: fix it, then enable it (what waits is sent, oldest first)</div>`;
  return `<span class="warn state">disabled</span><div class="muted">since ${when(e.disabledAt)}</div>`;
}


// the log, newest first; true while a delivery is still to be sent (the page then looks again soon)
async function loadDeliveries() {
  if (!me) return false;
  let d;
  try {
    d = await gql(`query($p: UUID!) { webhookDeliveries(providerId: $p, first: 20) { edges { node { id webhookId endpointId
        eventType status attemptCount nextAttemptAt deliveredAt createdAt attempts { attemptedAt outcome statusCode latencyMs error } } } } }`,
                  {p: me.provider.id});
  } catch (err) { report("webhooks-error", err); return false; }
  const deliveries = d.webhookDeliveries.edges.map((e) => e.node);
  const urls = new Map(endpoints.map((e) => [e.id, e.url]));
  $("deliveries").innerHTML = deliveries.length
    ? "<tr><th>created</th><th>event</th><th>endpoint</th><th>status</th><th>attempts (time, outcome, status, latency, error)</th></tr>" +
      deliveries.map((v) => `<tr data-delivery="${esc(v.id)}"><td class="time">${when(v.createdAt)}</td><td>${esc(v.eventType)}` +
        `<div class="muted" title="webhook-id">${esc(v.webhookId)}</div></td><td>${esc(urls.get(v.endpointId) ?? "a deleted endpoint")}</td>` +
        `<td class="${statusClass(v.status)} status">${esc(v.status)}` +
        (v.status === "PENDING" && v.nextAttemptAt ? `<div class="muted">next try ${when(v.nextAttemptAt)}</div>` : "") +
        (v.status === "FAILED" && urls.has(v.endpointId) ? `<div><button type="button" data-redeliver="${esc(v.id)}">Send again</button></div>` : "") + "</td>" +
        `<td>${v.attempts.length ? "<ol class='attempts'>" + v.attempts.map(attemptLine).join("") + "</ol>" : "<span class='muted'>not sent yet</span>"}</td></tr>`).join("")
    : "<tr><td class='muted'>Nothing sent yet.</td></tr>";
  document.querySelectorAll("#deliveries button[data-redeliver]").forEach((b) => b.onclick = () => redeliver(b, b.dataset.redeliver));
  return deliveries.some((v) => v.status === "PENDING");
}

function attemptLine(a) {
  const ok = a.outcome === "success";
  return `<li class="attempt"><span class="time">${when(a.attemptedAt)}</span> <span class="${ok ? "ok" : "bad"}">${esc(a.outcome)}</span>` +
    `${a.statusCode !== null ? ` HTTP ${esc(a.statusCode)}` : ""} · ${Math.round(a.latencyMs)} ms` +
    `${a.error ? ` · <span class="bad">${esc(a.error)}</span>` : ""}</li>`;
}

// after a change, look again every 2 s while something waits to be sent (at most a minute)
function pollDeliveries() {
  if (deliveryPoll) return;
  let left = 30;
  deliveryPoll = setInterval(async () => {
    const waiting = await loadDeliveries();
    if (!waiting || --left <= 0 || !me) { clearInterval(deliveryPoll); deliveryPoll = null; }
  }, 2000);
}

async function sendTest(button, endpointId) {
  button.disabled = true;
  clear("webhooks-error");
  try { await gql("mutation($id: UUID!) { sendTestWebhook(endpointId: $id) { id status } }", {id: endpointId}); }
  catch (err) { report("webhooks-error", err, "action"); }
  button.disabled = false;
  await loadDeliveries();
  pollDeliveries();
}

async function setEnabled(button, endpointId, enabled) {
  button.disabled = true;
  clear("webhooks-error");
  try {
    await gql("mutation($id: UUID!, $on: Boolean!) { updateWebhookEndpoint(id: $id, input: {enabled: $on}) { id enabled } }",
              {id: endpointId, on: enabled});
  } catch (err) { report("webhooks-error", err, "action"); }
  await loadWebhooks();
  if (enabled) pollDeliveries();  // its backlog goes out
}

// the same webhook-id and body, with a fresh set of attempts (the endpoint must be enabled)
async function redeliver(button, deliveryId) {
  button.disabled = true;
  clear("webhooks-error");
  try { await gql("mutation($id: UUID!) { redeliverWebhook(deliveryId: $id) { id status } }", {id: deliveryId}); }
  catch (err) { report("webhooks-error", err, "action"); }
  await loadDeliveries();
  pollDeliveries();
}

// a new secret signs from now on; the old one too for the server's overlap, so the receiver can switch
async function rotateSecret(button, endpointId) {
  // a secret still on show (a new endpoint's, another rotation's) is never shown again: keep it
  if (!$("secret-box").hidden && !confirm("The secret on show will not be shown again. Rotate anyway?")) return;
  button.disabled = true;
  clear("webhooks-error");
  try {
    const d = await gql("mutation($id: UUID!) { rotateWebhookSecret(id: $id) { secret endpoint { id url previousSecretExpiresAt } } }",
                        {id: endpointId});
    const {endpoint, secret} = d.rotateWebhookSecret;
    showSecret(endpoint.url, secret, "The new signing secret", endpoint.previousSecretExpiresAt
      ? `The previous secret signs too until ${when(endpoint.previousSecretExpiresAt)}: switch your receiver to this one before then.` : "");
  } catch (err) { report("webhooks-error", err, "action"); }
  await loadWebhooks();
}

async function deleteEndpoint(button, endpointId) {
  const url = endpoints.find((x) => x.id === endpointId)?.url ?? "this endpoint";
  if (!confirm(`Delete ${url}? It receives no more events, and what still waits for it is not sent.`)) return;
  button.disabled = true;
  clear("webhooks-error");
  try { await gql("mutation($id: UUID!) { deleteWebhookEndpoint(id: $id) { id } }", {id: endpointId}); }
  catch (err) { report("webhooks-error", err, "action"); }
  await loadWebhooks();
}

$("endpoint-form").onsubmit = async (e) => {
  e.preventDefault();
  clear("webhooks-error");
  const events = ["event-lead-assigned", "event-return-decided"].filter((id) => $(id).checked).map((id) => $(id).value);
  try {
    const d = await gql(`mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
        secret endpoint { id url } } }`,
      {input: {providerId: me.provider.id, url: $("endpoint-url").value.trim(), events,
               description: $("endpoint-description").value.trim()}});
    $("endpoint-url").value = ""; $("endpoint-description").value = "";
    showSecret(d.createWebhookEndpoint.endpoint.url, d.createWebhookEndpoint.secret);
  } catch (err) { report("webhooks-error", err, "action"); }
  await loadWebhooks();
};

// shown once (at creation and at rotation): kept only in the page until the buyer says it is stored
function showSecret(url, secret, which = "The signing secret", note = "") {
  $("secret-which").textContent = which;
  $("secret-url").textContent = url;
  $("secret").textContent = secret;
  $("secret-note").textContent = note;
  $("secret-copied").textContent = "";
  $("secret-box").hidden = false;
}
function hideSecret() { $("secret").textContent = ""; $("secret-note").textContent = ""; $("secret-box").hidden = true; }
$("secret-done").onclick = hideSecret;
$("secret-copy").onclick = async () => {
  try {
    await navigator.clipboard.writeText($("secret").textContent);
    $("secret-copied").textContent = "copied";
  } catch {  // no clipboard here (a page not served over https, a refusal): select it for Ctrl-C
    getSelection().selectAllChildren($("secret"));
    $("secret-copied").textContent = "selected: press Ctrl-C (⌘-C)";
  }
};
$("deliveries-refresh").onclick = () => loadWebhooks();

// ---- the page opens ---------------------------------------------------------------------------

function route() {
  const inviteToken = new URLSearchParams(location.hash.slice(1)).get("invite");
  if (inviteToken) {
    if (token) {  // another account was signed in here: sign it out first
      fetch("/graphql", {method: "POST", headers: {"Content-Type": "application/json", Authorization: "Bearer " + token},
                         body: JSON.stringify({query: "mutation { logout }"})}).catch(() => {});
      forget();
    }
    showEnrollment(inviteToken);
  }
  else if (token && !me) start();
  else if (!token) showSignin();
}
window.addEventListener("hashchange", route);
route();
