// Golden files: one folder per case under test/golden with libvirt network
// XML (and optionally config.toml); expected.nft beside them is the batch the
// planner must produce against a real captured ruleset (the admin's
// drop-policy table plus libvirt 9's iptables-nft tables). The expected files
// double as documentation (a case may bring its own live.json ruleset): docs/rules.md is checked against them.
// Regenerate after an intended change with: UPDATE_GOLDEN=1 npx vitest run test/unit/golden.test.ts
import { readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configFromObject, defaultConfig } from '../../src/config/config.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { plan } from '../../src/nft/plan.js';
import { renderBatch } from '../../src/nft/render-text.js';
import { indexRuleset } from '../../src/nft/ruleset.js';
import { parse as parseToml } from 'smol-toml';

const GOLDEN = join(import.meta.dirname, '..', 'golden');
const LIVE = indexRuleset(JSON.parse(readFileSync(join(import.meta.dirname, '..', 'fixtures', 'live-libvirt9.json'), 'utf8')));

export function goldenCases(): string[] {
  return readdirSync(GOLDEN, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
}

export function renderCase(name: string): string {
  const dir = join(GOLDEN, name);
  const files = readdirSync(dir).filter((f) => f.endsWith('.xml')).sort();
  const configFile = join(dir, 'config.toml');
  const config = existsSync(configFile) ? configFromObject(parseToml(readFileSync(configFile, 'utf8')) as Record<string, unknown>, configFile) : defaultConfig();
  const inputs = files.map((f) => parseNetworkXml(readFileSync(join(dir, f), 'utf8'), f));
  const liveFile = join(dir, 'live.json');
  const live = existsSync(liveFile) ? indexRuleset(JSON.parse(readFileSync(liveFile, 'utf8'))) : LIVE;
  const result = plan(inputs, config, live);
  const notes = result.notes.map((n) => `# ${n.level}: ${n.network ? `network ${n.network}: ` : ''}${n.message}\n`).join('');
  return `${notes}${renderBatch(result.batch.nftables)}`;
}

describe('golden plans', () => {
  it('has the cases the project promises', () => {
    expect(goldenCases()).toEqual(
      expect.arrayContaining(['nat-default', 'nat-forward-dev', 'nat-address-port', 'route', 'open', 'isolated', 'ipv6-routed', 'ipv6-nat', 'two-networks', 'hostile']),
    );
  });

  for (const name of goldenCases()) {
    it(name, () => {
      const actual = renderCase(name);
      const file = join(GOLDEN, name, 'expected.nft');
      if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(file, actual);
      expect(existsSync(file), `${file} missing: run with UPDATE_GOLDEN=1 and review it`).toBe(true);
      expect(actual).toBe(readFileSync(file, 'utf8'));
    });
  }
});
