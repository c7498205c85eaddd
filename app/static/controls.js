// Caps and delivery schedules as both pages show them (the buyers' /portal and the operators'
// /dashboard): each cap's usage in its current period, and whether a subscription's schedule lets
// leads in now and when that changes, in the provider's own time zone. One object, so nothing here
// clashes with a page's own globals ($, money, esc). Returns HTML with every API string escaped.
const Controls = (() => {
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (ch) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[ch]));
  const money = (c) => (Number(c) < 0 ? "−$" : "$") + (Math.abs(Number(c)) / 100).toFixed(2);
  const PERIOD = {DAY: "today", WEEK: "this week", MONTH: "this month", TOTAL: "in total"};
  const formats = new Map();

  function format(timezone) {
    if (!formats.has(timezone)) {
      const options = {weekday: "short", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23"};
      let made;
      try { made = new Intl.DateTimeFormat("en-GB", {...options, timeZone: timezone}); }
      catch { made = new Intl.DateTimeFormat("en-GB", {...options, timeZone: "UTC"}); }  // a zone this browser lacks
      formats.set(timezone, made);
    }
    return formats.get(timezone);
  }

  // "2026-12-03 14:05" (or "Thu 2026-12-03 14:05") in `timezone`
  function when(iso, timezone, withDay = false) {
    if (!iso) return "—";
    const p = Object.fromEntries(format(timezone).formatToParts(new Date(iso)).map((x) => [x.type, x.value]));
    return `${withDay ? p.weekday + " " : ""}${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`;
  }

  const reached = (c) => (c.maxLeads !== null && c.usedLeads >= c.maxLeads) ||
    (c.maxSpendCents !== null && c.usedSpendCents >= c.maxSpendCents);

  // "today: 1/5 leads, $15.00/$100.00"
  function cap(c) {
    const parts = [];
    if (c.maxLeads !== null) parts.push(`${c.usedLeads}/${c.maxLeads} leads`);
    if (c.maxSpendCents !== null) parts.push(`${money(c.usedSpendCents)}/${money(c.maxSpendCents)}`);
    const full = reached(c);
    return `<span class="cap${full ? " bad" : ""}" data-period="${esc(c.period)}">${PERIOD[c.period] ?? esc(c.period)}: ` +
      `${parts.join(", ")}${full ? " (reached)" : ""}</span>`;
  }

  const caps = (list) => list.map(cap).join("");

  const DAYS = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
  const dayName = (d) => d.charAt(0) + d.slice(1).toLowerCase();
  function windowText(w) {
    const days = [...w.days].sort((a, b) => DAYS.indexOf(a) - DAYS.indexOf(b)).map(dayName).join(" ");
    return `${days} ${w.from}–${w.to}`;
  }

  // open / closed now, when that changes, and the windows: a subscription's schedule
  function schedule(s, timezone) {
    if (!s.schedule) return `<span class="ok schedule-state">open</span> <span class="muted">(no schedule: always)</span>`;
    const state = s.openNow ? `<span class="ok schedule-state">open now</span>` : `<span class="warn schedule-state">closed now</span>`;
    const change = s.scheduleChangesAt
      ? ` <span class="muted">${s.openNow ? "closes" : "opens"} ${when(s.scheduleChangesAt, timezone, true)}</span>` : "";
    if (!s.schedule.windows) return state + change;  // the page did not ask for the windows
    const windows = s.schedule.windows.map(windowText).join("; ") || "no windows: all day";
    const blackouts = s.schedule.blackoutDates?.length ? `; closed on ${s.schedule.blackoutDates.join(", ")}` : "";
    return `${state}${change}<div class="muted">${esc(windows + blackouts)}</div>`;
  }

  return {esc, money, when, cap, caps, reached, schedule, PERIOD, DAYS, dayName};
})();
