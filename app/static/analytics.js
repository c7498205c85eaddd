// The analytics view of the dashboard: charts over distributionStats for a date range, drawn by the
// vendored Chart.js (app/static/vendor/chart.js: no CDN, the page works offline), and the CSV export
// of the range. Uses gql, token, $ and money from dashboard.js.

const OUTCOMES = [  // stacking order and colours of the hourly chart
  ["SUCCESS", "#137333"], ["PARTIAL", "#e0a100"], ["NO_ELIGIBLE", "#9aa0a6"], ["FAILED", "#b3261e"],
  ["QUEUED", "#8ab4f8"], ["RUNNING", "#1a73e8"],
];
const STATS = `query($n: UUID, $from: DateTime!, $to: DateTime!) {
  distributionStats(nicheId: $n, from: $from, to: $to) {
    nicheId nicheName successRate revenueCents assignments
    runsByOutcome { status count } runsByHour { hour status count }
    levels { levelName spread }
    returnRate returnsRequested returnsApproved refundedCents } }`;
const HOUR = 3600 * 1000;
const charts = {};
let analyticsReady = false;
let loads = 0;  // only the latest load draws: an earlier answer arriving late is dropped

const isoDay = (date) => date.toISOString().slice(0, 10);
const addDays = (day, n) => isoDay(new Date(Date.parse(day + "T00:00:00Z") + n * 24 * HOUR));

// the chosen range as [from, to) instants: whole UTC days, both ends included
function chosenRange() {
  return {from: $("from").value + "T00:00:00Z", to: addDays($("to").value, 1) + "T00:00:00Z"};
}

async function openAnalytics() {
  if (!analyticsReady) {
    analyticsReady = true;
    const today = isoDay(new Date());
    $("to").value = today;
    $("from").value = addDays(today, -6);
    try {
      const d = await gql("{ niches { id name } }");
      for (const n of d.niches) $("niche").add(new Option(n.name, n.id));
    } catch (err) { $("analytics-error").textContent = err.message; }
    $("range").onsubmit = (e) => { e.preventDefault(); loadAnalytics(); };
    $("csv").onclick = downloadCsv;
  }
  await loadAnalytics();
}

function draw(id, config) {
  charts[id]?.destroy();
  charts[id] = new Chart($(id), {
    ...config,
    options: {animation: false, maintainAspectRatio: false, plugins: {legend: {display: false}}, ...config.options},
  });
}

function bars(id, labels, values, colour) {
  draw(id, {type: "bar", data: {labels, datasets: [{data: values, backgroundColor: colour}]},
            options: {scales: {y: {beginAtZero: true}}}});
}

async function loadAnalytics() {
  const load = ++loads;
  $("analytics-error").textContent = "";
  const range = chosenRange();
  let stats;
  try {
    stats = (await gql(STATS, {...range, n: $("niche").value || null})).distributionStats;
  } catch (err) { if (load === loads) $("analytics-error").textContent = err.message; return; }
  if (load !== loads) return;

  // one bar per hour of the range, zero where no run was created; statuses summed over the niches
  const start = Date.parse(range.from), hours = (Date.parse(range.to) - start) / HOUR;
  const labels = Array.from({length: hours}, (_, i) => new Date(start + i * HOUR).toISOString().slice(5, 13).replace("T", " ") + "h");
  const counts = Object.fromEntries(OUTCOMES.map(([status]) => [status, new Array(hours).fill(0)]));
  for (const s of stats) for (const h of s.runsByHour) counts[h.status][(Date.parse(h.hour) - start) / HOUR] += h.count;
  const present = OUTCOMES.filter(([status]) => counts[status].some((c) => c > 0));
  draw("chart-hourly", {
    type: "bar",
    data: {labels, datasets: present.map(([status, colour]) => ({label: status, data: counts[status], backgroundColor: colour}))},
    options: {plugins: {legend: {display: true}}, scales: {x: {stacked: true, ticks: {maxTicksLimit: 14}}, y: {stacked: true, beginAtZero: true}}},
  });

  const names = stats.map((s) => s.nicheName);
  bars("chart-success", names, stats.map((s) => s.successRate === null ? null : Math.round(s.successRate * 1000) / 10), "#137333");
  bars("chart-revenue", names, stats.map((s) => s.revenueCents / 100), "#1a73e8");
  const levels = stats.flatMap((s) => s.levels.map((l) => ({label: `${s.nicheName} · ${l.levelName}`, spread: l.spread})));
  bars("chart-fairness", levels.map((l) => l.label), levels.map((l) => l.spread), "#a15c00");
  // approved returns of the range's assignments (SPEC §8), whenever they were asked or decided
  bars("chart-returns", names, stats.map((s) => s.returnRate === null ? null : Math.round(s.returnRate * 1000) / 10), "#b3261e");
  const requested = stats.reduce((n, s) => n + s.returnsRequested, 0);
  const approved = stats.reduce((n, s) => n + s.returnsApproved, 0);
  const refunded = stats.reduce((n, s) => n + s.refundedCents, 0);
  $("returns-note").textContent = `${approved} approved of ${requested} returns asked, ${money(refunded)} refunded`;

  const runs = stats.reduce((n, s) => n + s.runsByOutcome.reduce((m, o) => m + o.count, 0), 0);
  const revenue = stats.reduce((n, s) => n + s.revenueCents, 0);
  const assigned = stats.reduce((n, s) => n + s.assignments, 0);
  $("summary").textContent = `${range.from.slice(0, 10)} to ${$("to").value} (UTC): ${runs} runs, ` +
    `${assigned} assignments, ${money(revenue)} revenue`;
}

// the export wants the Authorization header, which a plain link cannot send: fetch it, then save it
async function downloadCsv() {
  const range = chosenRange();
  const params = new URLSearchParams(range);
  if ($("niche").value) params.set("nicheId", $("niche").value);
  try {
    const response = await fetch("/exports/assignments.csv?" + params, {headers: {Authorization: "Bearer " + token}});
    if (!response.ok) throw new Error((await response.json()).errors.map((e) => e.message).join("; "));
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = `assignments-${$("from").value}-to-${$("to").value}.csv`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  } catch (err) { $("analytics-error").textContent = err.message; }
}
