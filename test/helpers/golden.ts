// Loading and rendering the golden cases (test/golden/<case>/): shared by the
// golden test, the planner property tests and the docs/rules.md check.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { configFromObject, defaultConfig, type Config } from '../../src/config/config.js';
import type { NetworkParse } from '../../src/libvirt/model.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { plan, type PlanFacts } from '../../src/nft/plan.js';
import { renderBatch } from '../../src/nft/render-text.js';
import { indexRuleset, type Ruleset } from '../../src/nft/ruleset.js';

export const GOLDEN_DIR = join(import.meta.dirname, '..', 'golden');
export const LIVE_LIBVIRT9 = indexRuleset(
  JSON.parse(readFileSync(join(import.meta.dirname, '..', 'fixtures', 'live-libvirt9.json'), 'utf8')),
);

export interface GoldenCase {
  name: string;
  inputs: NetworkParse[];
  config: Config;
  live: Ruleset;
  xmlFiles: string[];
  /** bridge-ports.json (isolate_guests' input: bridge -> its ports), when the case has one. */
  facts: PlanFacts;
}

export function goldenCases(): string[] {
  return readdirSync(GOLDEN_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
}

export function loadCase(name: string): GoldenCase {
  const dir = join(GOLDEN_DIR, name);
  const cfg = join(dir, 'config.toml');
  const config = existsSync(cfg) ? configFromObject(parseToml(readFileSync(cfg, 'utf8')), cfg) : defaultConfig();
  const liveFile = join(dir, 'live.json');
  const live = existsSync(liveFile) ? indexRuleset(JSON.parse(readFileSync(liveFile, 'utf8'))) : LIVE_LIBVIRT9;
  const xmlFiles = readdirSync(dir)
    .filter((f) => f.endsWith('.xml'))
    .sort();
  const inputs = xmlFiles.map((f) => parseNetworkXml(readFileSync(join(dir, f), 'utf8'), f));
  const portsFile = join(dir, 'bridge-ports.json');
  const facts: PlanFacts = existsSync(portsFile)
    ? { bridgePorts: JSON.parse(readFileSync(portsFile, 'utf8')) as Record<string, string[]> }
    : {};
  return { name, inputs, config, live, xmlFiles, facts };
}

/** The case's plan as text: notes as `#` comment lines, then the batch. */
export function renderCase(name: string): string {
  const c = loadCase(name);
  const result = plan(c.inputs, c.config, c.live, c.facts);
  const notes = result.notes
    .map((n) => `# ${n.level}: ${n.network ? `network ${n.network}: ` : ''}${n.message}\n`)
    .join('');
  return `${notes}${renderBatch(result.batch.nftables)}`;
}

export function expectedFile(name: string): string {
  return join(GOLDEN_DIR, name, 'expected.nft');
}
