// Regenerates the live.json of the golden cases with foreign chains (Docker,
// ufw, an admin's second table), and of those that start from kvmnftd's own
// rules already in place (edit-*), from real nft and real iptables-nft, in a
// network namespace this script creates and deletes:
//
//   tsx test/golden/make-foreign-live.ts [CASE...]       (as root; no CASE: all)
//
// Each ruleset starts from test/fixtures/live-libvirt11.json (the admin's
// drop-policy table and libvirt 11's nftables backend, as captured in the
// Debian 13 lab), then loads the recipe's iptables-save files with
// iptables-nft-restore (ip6tables-nft-restore), nft files, and kvmnftd's
// own plan for a network applied with nft. Review the diff.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultConfig } from '../../src/config/config.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { plan } from '../../src/nft/plan.js';
import { indexRuleset } from '../../src/nft/ruleset.js';
import { nsRunOk, runOk } from '../helpers/netns.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const GOLDEN = import.meta.dirname;

type Step =
  | { iptables: string; family: 4 | 6; noflush?: boolean }
  | { nft: string }
  | { kvmnftd: string /* network XML under test/golden */ };

const DOCKER: Step = { iptables: 'docker-20.10.rules', family: 4 };
const UFW: Step[] = [
  { iptables: 'ufw-0.36.2.rules', family: 4 },
  { iptables: 'ufw-0.36.2.rules6', family: 6 },
];
const OTHER_TABLE = [
  'table inet other {',
  '  chain forward {',
  '    type filter hook forward priority 0; policy drop;',
  '  }',
  '}',
  '',
].join('\n');

const RECIPES: Record<string, Step[]> = {
  'foreign-docker': [DOCKER],
  'foreign-ufw': UFW,
  // ufw at boot, Docker later: Docker's rules go beside ufw's in the same tables.
  'foreign-both': [...UFW, { ...DOCKER, noflush: true }],
  'foreign-report': [DOCKER],
  'foreign-extra': [{ nft: OTHER_TABLE }],
  'foreign-stale': [DOCKER, { kvmnftd: 'nat-default/default.xml' }],
  // kvmnftd already applied the default network; then another network starts,
  // or a port forward is configured: the batch edits kvmnftd's chains in place.
  'edit-add-network': [{ kvmnftd: 'nat-default/default.xml' }],
  'edit-port-forward': [{ kvmnftd: 'nat-default/default.xml' }],
};

async function main(): Promise<void> {
  const ns = `kvg-${process.pid}`;
  const tmp = `/tmp/kvg-${process.pid}.json`;
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((n) => !(n in RECIPES));
  if (unknown.length > 0) throw new Error(`no recipe for ${unknown.join(', ')}: ${Object.keys(RECIPES).join(', ')}`);
  for (const [name, steps] of Object.entries(RECIPES)) {
    if (wanted.length > 0 && !wanted.includes(name)) continue;
    await runOk('ip', ['netns', 'add', ns]);
    try {
      // libvirt 11's rules match the bridge by index (meta iif): it must exist.
      await nsRunOk(ns, 'ip', ['link', 'add', 'virbr0', 'type', 'bridge']);
      const base = JSON.parse(readFileSync(join(FIXTURES, 'live-libvirt11.json'), 'utf8')) as {
        nftables: Array<Record<string, Record<string, unknown>>>;
      };
      const adds = base.nftables
        .filter((o) => !('metainfo' in o))
        .map((o) => {
          const [[kind, body]] = Object.entries(o) as [[string, Record<string, unknown>]];
          const { handle: _handle, ...rest } = body;
          return { add: { [kind]: rest } };
        });
      writeFileSync(tmp, JSON.stringify({ nftables: adds }));
      await nsRunOk(ns, 'nft', ['-j', '-f', tmp]);
      for (const step of steps) {
        if ('iptables' in step) {
          const bin = step.family === 4 ? 'iptables-nft-restore' : 'ip6tables-nft-restore';
          await nsRunOk(ns, bin, [...(step.noflush ? ['--noflush'] : []), join(FIXTURES, step.iptables)]);
        } else if ('nft' in step) {
          writeFileSync(tmp, step.nft);
          await nsRunOk(ns, 'nft', ['-f', tmp]);
        } else {
          const live = indexRuleset(JSON.parse((await nsRunOk(ns, 'nft', ['-j', 'list', 'ruleset'])).stdout));
          const xml = readFileSync(join(GOLDEN, step.kvmnftd), 'utf8');
          const batch = plan([parseNetworkXml(xml, step.kvmnftd)], defaultConfig(), live).batch;
          writeFileSync(tmp, JSON.stringify(batch));
          await nsRunOk(ns, 'nft', ['-j', '-f', tmp]);
        }
      }
      const out = JSON.parse((await nsRunOk(ns, 'nft', ['-j', 'list', 'ruleset'])).stdout) as { nftables: unknown[] };
      // One object per line: a reviewer reads the diff of a regenerated file.
      const text = `{"nftables": [\n${out.nftables.map((o) => JSON.stringify(o)).join(',\n')}\n]}\n`;
      writeFileSync(join(GOLDEN, name, 'live.json'), text);
      process.stdout.write(`${name}: ${out.nftables.length} objects\n`);
    } finally {
      await runOk('ip', ['netns', 'delete', ns]);
    }
  }
}

await main();
