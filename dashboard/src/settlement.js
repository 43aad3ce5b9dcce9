// GB settlement periods: half hours of the UK local day, 1 from local midnight, so a day has 46
// periods when the clocks go forward and 50 when they go back. Shared by the dashboard and
// ./flux demo; the database's flux.settlement_period is the authority the dashboard checks.
const HOUR = 3_600_000;
export const PERIOD_MS = HOUR / 2;

const londonDay = new Intl.DateTimeFormat('en-GB', {
  timeZone: 'Europe/London', year: 'numeric', month: '2-digit', day: '2-digit',
});

/** The UK local date (YYYY-MM-DD) of instant t (ms). */
export function ukDate(t) {
  const p = Object.fromEntries(londonDay.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day}`;
}

/** The instant (ms) at which UK local day `date` (YYYY-MM-DD) begins. */
export function ukDayStart(date) {
  const midnightUtc = Date.parse(`${date}T00:00:00Z`);
  // UK local midnight is 00:00 UTC in winter (GMT) and 23:00 UTC the day before in summer (BST).
  return ukDate(midnightUtc - HOUR) === date ? midnightUtc - HOUR : midnightUtc;
}

/** The next calendar date after `date`. */
export function nextDate(date) {
  return new Date(Date.parse(`${date}T00:00:00Z`) + 24 * HOUR).toISOString().slice(0, 10);
}

/** The settlement date and period of instant t. */
export function settlementPeriod(t) {
  const date = ukDate(t);
  return { date, period: Math.floor((t - ukDayStart(date)) / PERIOD_MS) + 1 };
}

/** The number of settlement periods of UK local day `date`. */
export function periodsInDay(date) {
  return (ukDayStart(nextDate(date)) - ukDayStart(date)) / PERIOD_MS;
}
