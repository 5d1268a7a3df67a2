// When the daemon logged a record, on this process's performance.now() clock,
// the clock the benches' monitors and observers stamp with. The daemon's JSON
// log gives `time` as an ISO 8601 date (ms); a number is read as epoch ms.
export function loggedAt(record: { readonly [key: string]: unknown }): number {
  const t = record['time'];
  return (typeof t === 'number' ? t : Date.parse(String(t))) - performance.timeOrigin;
}
