// `kvmnftd status` as text for a terminal. The JSON form is the report itself.
import { RULE_KINDS } from '../nft/rule-kind.js';
import type { CounterValues, ForwardStatus, NetworkStatus, StatusReport } from './evaluate.js';

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
}

const packets = (c: CounterValues | null): string => (c === null ? '-' : String(c.packets));

/** The forwards' table; under it, why each one that is not active waits or is invalid. */
function forwardLines(forwards: readonly ForwardStatus[]): string[] {
  const host = (f: ForwardStatus): string =>
    `${f.host_address === null ? '' : f.host_address.includes(':') ? `[${f.host_address}]:` : `${f.host_address}:`}${f.host_port}`;
  const rows = forwards.map((f) => [
    f.name,
    `${f.proto} ${host(f)}`,
    `${f.to} (${f.network})`,
    f.target.length > 0 ? f.target.map((a) => `${a.includes(':') ? `[${a}]` : a}:${f.to_port}`).join(',') : '-',
    f.state === 'active' && f.rules !== 'ok' ? `active, rules ${f.rules}` : f.state,
    packets(f.counters.dnat),
    packets(f.counters.accept),
  ]);
  return [
    ...table([['FORWARD', 'HOST', 'TO', 'TARGET', 'STATE', 'DNAT PKTS', 'ACCEPT PKTS'], ...rows]),
    ...forwards.filter((f) => f.reason !== null).map((f) => `  ${f.name}: ${f.reason ?? ''}`),
  ];
}

/** Packets per network and kind of rule (bytes: --json or kvmnftd metrics); "-" where it has no such rule. */
function counterLines(networks: readonly NetworkStatus[]): string[] {
  const head = ['PACKETS', ...RULE_KINDS.map((k) => k.toUpperCase())];
  return table([head, ...networks.map((n) => [n.name, ...RULE_KINDS.map((k) => packets(n.counters[k]))])]);
}

function daemonLine(d: StatusReport['daemon']): string {
  let text: string;
  if (d.running === true) {
    const parts = [
      d.pid !== null ? `PID ${d.pid}` : undefined,
      d.transport ? `events via ${d.transport === 'dbus' ? 'libvirt-dbus' : 'virsh net-event'}` : undefined,
    ].filter((x) => x !== undefined);
    text = `running${parts.length > 0 ? ` (${parts.join(', ')})` : ''}`;
    if (d.last_pass_at) text += `, last pass ${d.last_pass_at}`;
    if (d.status_text) text += `; "${d.status_text}"`;
    if (d.metrics_error) text += `; metrics textfile FAILING`;
  } else if (d.running === false) text = 'not running';
  else text = 'unknown';
  const sd = d.systemd;
  const unit = sd.available
    ? `kvmnftd.service ${sd.active_state ?? 'unknown'}${sd.sub_state ? ` (${sd.sub_state})` : ''}`
    : `unknown${sd.error ? ` (${sd.error})` : ' (systemd is not running)'}`;
  return `daemon:  ${text}; systemd: ${unit}`;
}

export function renderStatus(r: StatusReport): string {
  const out: string[] = [];
  out.push(
    r.ok
      ? 'kvmnftd status: OK, every rule is as planned'
      : r.exit_code === 1
        ? 'kvmnftd status: INCOMPLETE, could not read everything'
        : 'kvmnftd status: NOT AS PLANNED',
  );
  out.push(daemonLine(r.daemon));
  out.push(
    `libvirt: ${r.libvirt.reachable ? `${r.networks.length + r.skipped.length} active network(s)${r.libvirt.source === 'xml-files' ? ' (from --from-xml files)' : ''}` : `unreachable: ${r.libvirt.error ?? 'unknown'}`}`,
  );
  if (r.ruleset.readable) {
    out.push(
      `ruleset: admin table ${r.config.admin_table}${r.ruleset.admin_table_present === false ? ' MISSING' : ''}; jumps: input ${r.jumps.input}, forward ${r.jumps.forward}; NAT in ${r.config.nat_table}`,
    );
  } else out.push(`ruleset: unreadable: ${r.ruleset.error ?? 'unknown'}`);
  const f = r.foreign_chains;
  if (f.handled.length + f.pending.length > 0)
    out.push(`foreign: mark accepts in ${[...f.handled, ...f.pending.map((c) => `${c} (MISSING)`)].join(', ')}`);
  if (!r.libvirt.reachable && r.ruleset.networks_with_rules.length > 0)
    out.push(`         rules present for: ${r.ruleset.networks_with_rules.join(', ')}`);
  if (r.networks.length > 0) {
    out.push('');
    out.push(
      ...table([
        ['NETWORK', 'BRIDGE', 'MODE', 'SUBNETS', 'NAT', 'INPUT', 'FORWARD', ''],
        ...r.networks.map((n) => [
          n.name,
          n.bridge,
          n.mode,
          n.subnets.join(',') || '-',
          n.nat,
          n.input,
          n.forward,
          n.ok ? 'ok' : 'NOT OK',
        ]),
      ]),
    );
  }
  if (r.networks.length > 0) out.push('', ...counterLines(r.networks));
  if (r.forwards.length > 0) out.push('', ...forwardLines(r.forwards));
  for (const s of r.skipped) out.push(`skipped: ${s.name}: ${s.reason}`);
  if (r.problems.length > 0) {
    out.push('', 'problems:');
    out.push(...r.problems.map((p) => `  - ${p}`));
    if (r.exit_code === 3)
      out.push('', 'Fix: kvmnftd apply (or start the daemon: systemctl start kvmnftd); kvmnftd doctor looks further.');
  }
  return `${out.join('\n')}\n`;
}
