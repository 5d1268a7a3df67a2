// `kvmnftd metrics` and the daemon's [metrics] textfile: the figures as
// Prometheus text exposition (format 0.0.4). Pure: the rule counters come as
// a tally (nft/rule-kind.ts), the daemon's own figures from its state (the
// daemon) or its state file (the CLI). METRIC_FAMILIES is the one list of
// names: docs/operation.md's table is rendered from it (npm run docs:config).
import { RULE_KINDS, type CounterTally } from '../nft/rule-kind.js';

/** The daemon's own figures since it started (daemon/state.ts keeps them). */
export interface DaemonFigures {
  /** Passes that ended (read, plan, maybe apply), successful or not. */
  passes: number;
  /** nft transactions applied. */
  transactions: number;
  /** Transactions that changed no network or forward: they repaired someone else's change. */
  driftRepairs: number;
  /** FirewallD1.Reloaded broadcasts sent so that libvirt re-creates its chains. */
  libvirtRestores: number;
  /** How long the last pass took, in milliseconds; undefined before the first. */
  lastPassMs: number | undefined;
  /** Whether the daemon is degraded (its STATUS line says why). */
  degraded: boolean;
}

export interface MetricsInputs {
  /** The rule counters per network and kind; undefined when the ruleset could not be read. */
  tally: CounterTally | undefined;
  /** The running daemon's figures; undefined when no daemon runs. */
  daemon: DaemonFigures | undefined;
}

export interface MetricFamily {
  name: string;
  type: 'counter' | 'gauge';
  help: string;
  labels: readonly string[];
}

const family = (name: string, type: MetricFamily['type'], help: string, labels: string[] = []): MetricFamily => ({
  name,
  type,
  help,
  labels,
});

export const METRIC_FAMILIES = {
  daemonUp: family('kvmnftd_daemon_up', 'gauge', 'Whether a kvmnftd daemon runs (1) or not (0).'),
  rulesetReadable: family(
    'kvmnftd_ruleset_readable',
    'gauge',
    'Whether the ruleset could be read for the rule counters (1) or not (0).',
  ),
  rulePackets: family(
    'kvmnftd_rule_packets_total',
    'counter',
    "Packets counted by kvmnftd's rules, per libvirt network and kind of rule.",
    ['network', 'kind'],
  ),
  ruleBytes: family(
    'kvmnftd_rule_bytes_total',
    'counter',
    "Bytes counted by kvmnftd's rules, per libvirt network and kind of rule.",
    ['network', 'kind'],
  ),
  passes: family('kvmnftd_passes_total', 'counter', 'Passes (read, plan, apply if needed) the daemon ran.'),
  transactions: family('kvmnftd_transactions_total', 'counter', 'nft transactions the daemon applied.'),
  driftRepairs: family(
    'kvmnftd_drift_repairs_total',
    'counter',
    "Transactions that repaired someone else's change to the ruleset (no network or forward changed).",
  ),
  libvirtRestores: family(
    'kvmnftd_libvirt_restores_total',
    'counter',
    'FirewallD1.Reloaded broadcasts sent so that libvirt re-creates its own chains.',
  ),
  lastPassDuration: family('kvmnftd_last_pass_duration_seconds', 'gauge', "The daemon's last pass took this long."),
  degraded: family('kvmnftd_degraded', 'gauge', 'Whether the daemon is degraded (1; its status says why) or not (0).'),
} as const;

/** A HELP text: backslash and line feed escaped. */
export function escapeHelp(s: string): string {
  return s.replaceAll('\\', '\\\\').replaceAll('\n', '\\n');
}

/** A label value: backslash, double quote and line feed escaped. */
export function escapeLabelValue(s: string): string {
  return s.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n');
}

function sampleValue(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

type Sample = { labels?: Record<string, string>; value: number };

function block(f: MetricFamily, samples: readonly Sample[]): string {
  const lines = [`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`];
  for (const s of samples) {
    const labels = Object.entries(s.labels ?? {})
      .map(([k, v]) => `${k}="${escapeLabelValue(v)}"`)
      .join(',');
    lines.push(`${f.name}${labels === '' ? '' : `{${labels}}`} ${sampleValue(s.value)}`);
  }
  return lines.join('\n') + '\n';
}

/**
 * The exposition. Families without a sample are left out (no rule counters when the ruleset could not be
 * read, no daemon figures when no daemon runs); the two `_up`-like gauges are always there.
 */
export function renderMetrics(inputs: MetricsInputs): string {
  const F = METRIC_FAMILIES;
  const out: string[] = [
    block(F.daemonUp, [{ value: inputs.daemon ? 1 : 0 }]),
    block(F.rulesetReadable, [{ value: inputs.tally ? 1 : 0 }]),
  ];
  if (inputs.tally && inputs.tally.size > 0) {
    const packets: Sample[] = [];
    const bytes: Sample[] = [];
    for (const [network, kinds] of inputs.tally)
      for (const kind of RULE_KINDS) {
        const t = kinds.get(kind);
        if (!t) continue;
        packets.push({ labels: { network, kind }, value: t.packets });
        bytes.push({ labels: { network, kind }, value: t.bytes });
      }
    out.push(block(F.rulePackets, packets), block(F.ruleBytes, bytes));
  }
  const d = inputs.daemon;
  if (d) {
    out.push(
      block(F.passes, [{ value: d.passes }]),
      block(F.transactions, [{ value: d.transactions }]),
      block(F.driftRepairs, [{ value: d.driftRepairs }]),
      block(F.libvirtRestores, [{ value: d.libvirtRestores }]),
    );
    if (d.lastPassMs !== undefined) out.push(block(F.lastPassDuration, [{ value: d.lastPassMs / 1000 }]));
    out.push(block(F.degraded, [{ value: d.degraded ? 1 : 0 }]));
  }
  return out.join('');
}

/** docs/operation.md's table of the metric names (a test keeps it equal to METRIC_FAMILIES). */
export function metricsDocTable(): string {
  const rows = Object.values(METRIC_FAMILIES).map(
    (f) =>
      `| \`${f.name}\` | ${f.type} | ${f.labels.map((l) => `\`${l}\``).join(', ') || '–'} | ${f.help.replaceAll('|', '\\|')} |`,
  );
  const kinds = RULE_KINDS.map((k) => `\`${k}\``).join(', ');
  return [
    '| Metric | Type | Labels | Meaning |',
    '| --- | --- | --- | --- |',
    ...rows,
    '',
    `\`kind\` is one of ${kinds}.`,
    '',
  ].join('\n');
}
