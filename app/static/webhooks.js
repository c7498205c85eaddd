// The dashboard's webhook section (uses gql, $ and esc of dashboard.js): endpoints the sender
// disabled (flagged) with a button to enable them again (their backlog goes out oldest first),
// endpoints failing now with their next try, and the latest deliveries that failed every attempt,
// with a button to send them again.
async function refreshWebhooks() {
  const w = (await gql(`{ webhookOverview(failures: 10) { pendingDeliveries disabledEndpoints
      flaggedEndpoints { id providerId url consecutiveFailures disabledAt }
      failingEndpoints { id providerId url consecutiveFailures retryAt }
      recentFailures { id endpointId eventType attemptCount lastStatusCode lastError createdAt } } }`)).webhookOverview;
  $("webhook-counts").textContent = `${w.pendingDeliveries} waiting, ${w.disabledEndpoints} endpoints disabled`;
  $("webhook-flagged").innerHTML = w.flaggedEndpoints.length
    ? "<tr><th>flagged endpoint</th><th>provider</th><th>failures</th><th></th></tr>" + w.flaggedEndpoints.map((e) =>
      `<tr><td class="bad">${esc(e.url)}</td><td>${e.providerId.slice(0, 8)}</td><td>${e.consecutiveFailures}</td>` +
      `<td><button data-endpoint="${e.id}">Re-enable</button></td></tr>`).join("")
    : "<tr><td class='muted'>no flagged endpoint</td></tr>";
  $("webhook-failing").innerHTML = w.failingEndpoints.length
    ? "<tr><th>failing endpoint</th><th>provider</th><th>failures in a row</th><th>next try</th></tr>" +
      w.failingEndpoints.map((e) =>
        `<tr><td class="bad">${esc(e.url)}</td><td>${e.providerId.slice(0, 8)}</td><td>${e.consecutiveFailures}</td>` +
        `<td>${e.retryAt && new Date(e.retryAt) > new Date() ? new Date(e.retryAt).toLocaleTimeString() : "now"}</td></tr>`).join("")
    : "<tr><td class='muted'>no failing endpoint</td></tr>";
  $("webhook-failed").innerHTML = w.recentFailures.length
    ? "<tr><th>failed delivery</th><th>event</th><th>attempts</th><th>last error</th><th></th></tr>" + w.recentFailures.map((d) =>
      `<tr><td>${d.id.slice(0, 8)}</td><td>${esc(d.eventType)}</td><td>${d.attemptCount}</td>` +
      `<td class="bad">${esc(d.lastError).slice(0, 80)}</td><td><button data-delivery="${d.id}">Send again</button></td></tr>`).join("")
    : "<tr><td class='muted'>no failed delivery</td></tr>";
  const act = (b, query, id) => b.onclick = async () => {
    b.disabled = true;
    try { await gql(query, {id}); $("webhook-error").textContent = ""; }
    catch (err) { $("webhook-error").textContent = err.message; }
    refreshWebhooks();
  };
  document.querySelectorAll("button[data-endpoint]").forEach((b) => act(b,
    "mutation($id: UUID!) { updateWebhookEndpoint(id: $id, input: {enabled: true}) { enabled } }", b.dataset.endpoint));
  document.querySelectorAll("button[data-delivery]").forEach((b) => act(b,
    "mutation($id: UUID!) { redeliverWebhook(deliveryId: $id) { status } }", b.dataset.delivery));
}
