/**
 * What `npm run bench:compare` writes (bench/results/compare.json) and how it
 * is shown: the console table, and the section of docs/performance.md between
 * the markers below, rendered from the JSON alone (no I/O here). The unit test
 * test/unit/bench-compare-docs.test.ts checks that the section matches the
 * committed JSON; `npm run docs:compare` (or `npm run bench:compare --
 * --write-docs`) rewrites it.
 */
import { spliceRegion } from '../../src/config/docs.js';
import { round, stats, type Stats } from '../lib/stats.js';
import { table } from '../lib/text-table.js';

/** One contender's samples of one piece of work, ms. */
export interface Figure {
  /** Who does the work, and from when to when it is timed. */
  label: string;
  samples: number[];
  stats: Stats;
  /** What else was counted (transactions, processes, commands...). */
  notes?: Record<string, unknown>;
}

/** The same work done by kvmnftd and by one contender, in one lab. */
export interface Comparison {
  id: string;
  /** The work, and where it ran. */
  work: string;
  /** Versions inside the lab (libvirt, nft, node). */
  lab: Record<string, string>;
  kvmnftd: Figure;
  contender: Figure;
  /** kvmnftd's time divided by the contender's: below 1, kvmnftd is faster. */
  ratio: { p50: number; p99: number };
}

export interface CompareResults {
  /** Samples per figure (BENCH_COMPARE_RUNS). */
  runs: number;
  /** The machine: date, os, kernel, cpus, node, nft, libvirt..., loadavgAtStart. */
  facts: Record<string, string | number>;
  loadavgAtEnd: string;
  totalS: number;
  comparisons: Comparison[];
}

/** The comparisons every full run and every smoke run makes, in this order. */
export const COMPARISON_IDS = [
  'network-start-libvirt9',
  'network-start-libvirt11-nftables',
  'drift-flush',
  'batch-1',
  'batch-100',
] as const;

export function figure(label: string, samples: readonly number[], notes?: Record<string, unknown>): Figure {
  return { label, samples: samples.map((x) => round(x, 1)), stats: stats(samples), ...(notes ? { notes } : {}) };
}

export function comparison(
  id: string,
  work: string,
  lab: Record<string, string>,
  kvmnftd: Figure,
  contender: Figure,
): Comparison {
  const ratio = (a: number, b: number) => round(a / b, 2);
  return {
    id,
    work,
    lab,
    kvmnftd,
    contender,
    ratio: { p50: ratio(kvmnftd.stats.p50, contender.stats.p50), p99: ratio(kvmnftd.stats.p99, contender.stats.p99) },
  };
}

const ms = (x: number): string => x.toFixed(1);
const ratioText = (x: number): string => x.toFixed(2);

/** The console table: one row per contender, kvmnftd first in each group. */
export function consoleTable(r: CompareResults): string {
  const rows: string[][] = [];
  for (const c of r.comparisons) {
    rows.push([c.work, '', '', '', '', '']);
    rows.push([
      `  ${c.kvmnftd.label}`,
      String(c.kvmnftd.stats.n),
      ms(c.kvmnftd.stats.p50),
      ms(c.kvmnftd.stats.p99),
      '',
      '',
    ]);
    rows.push([
      `  ${c.contender.label}`,
      String(c.contender.stats.n),
      ms(c.contender.stats.p50),
      ms(c.contender.stats.p99),
      ratioText(c.ratio.p50),
      ratioText(c.ratio.p99),
    ]);
  }
  return table(['contender', 'n', 'p50 ms', 'p99 ms', 'kvmnftd ratio p50', 'p99'], rows);
}

export const DOC_MARKERS: [string, string] = [
  '<!-- BEGIN generated bench:compare: npm run docs:compare (bench/results/compare.json) -->',
  '<!-- END generated bench:compare -->',
];

const escapeCell = (s: string): string => s.replace(/\|/g, '\\|');

/** The generated part of docs/performance.md: the run's facts and the table, from the JSON alone. */
export function docSection(r: CompareResults): string {
  const f = r.facts;
  const labs = r.comparisons
    .filter((c) => c.id.startsWith('network-start-'))
    .map((c) => `${c.work.replace(/^A network start: /, '')}: ${Object.values(c.lab).join(', ')}`);
  const out: string[] = [
    `${String(f['date']).slice(0, 16).replace('T', ' ')} UTC, ${String(f['os'])} (kernel ${String(f['kernel'])}), ` +
      `${String(f['cpus'])} cores (${String(f['cpuModel'])}), Node ${String(f['node'])}, ${String(f['nft'])}; ` +
      `load average ${String(f['loadavgAtStart'])} at the start, ${r.loadavgAtEnd} at the end ` +
      `(1, 5, 15 min); ${r.runs} samples per contender; ${Math.round(r.totalS / 60)} minutes in all.`,
    `Labs: ${labs.join('; ')}.`,
    '',
    '| work | contender | p50 ms | p99 ms | kvmnftd ratio p50 | p99 |',
    '|---|---|---:|---:|---:|---:|',
  ];
  for (const c of r.comparisons) {
    out.push(
      `| ${escapeCell(c.work)} | ${escapeCell(c.kvmnftd.label)} | ${ms(c.kvmnftd.stats.p50)} | ` +
        `${ms(c.kvmnftd.stats.p99)} | | |`,
    );
    out.push(
      `| | ${escapeCell(c.contender.label)} | ${ms(c.contender.stats.p50)} | ${ms(c.contender.stats.p99)} | ` +
        `**${ratioText(c.ratio.p50)}** | **${ratioText(c.ratio.p99)}** |`,
    );
  }
  return `${out.join('\n')}\n`;
}

/** `doc` (docs/performance.md's text) with its generated section replaced by the one `r` renders. */
export function withDocSection(doc: string, r: CompareResults): string {
  return spliceRegion(doc, DOC_MARKERS, docSection(r));
}
