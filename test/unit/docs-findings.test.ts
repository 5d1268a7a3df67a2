// docs/troubleshooting.md lists every doctor finding exactly once in its
// table, and nothing else; docs/operation.md documents every command.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMMANDS } from '../../src/cli/args.js';
import { FINDING_ALIASES, FINDING_IDS } from '../../src/doctor/types.js';
import { REPO_ROOT } from '../helpers/cli.js';

const read = (name: string): string => readFileSync(join(REPO_ROOT, 'docs', name), 'utf8');

describe('docs', () => {
  it('troubleshooting.md: one table row per doctor finding', () => {
    const table = read('troubleshooting.md').split('## Every doctor finding')[1] ?? '';
    const rows = [...table.matchAll(/^\| `([a-z0-9-]+)` \|/gm)].map((m) => m[1]);
    expect([...rows].sort()).toEqual([...FINDING_IDS].sort());
  });
  it('troubleshooting.md: every finding a symptom section refers to exists', () => {
    const body = read('troubleshooting.md').split('## Every doctor finding')[0] ?? '';
    const cited = new Set(
      [...body.matchAll(/`([a-z0-9]+(?:-[a-z0-9]+)+)`/g)]
        .map((m) => m[1]!)
        .filter((id) => /^(foreign|rules|admin|ipv|br|libvirt|nft|ip|firewalld|iptables|network|ruleset)-/.test(id)),
    );
    for (const id of cited) expect(FINDING_IDS as readonly string[], id).toContain(id);
    expect(cited.size).toBeGreaterThan(10);
  });
  it('renamed findings: both docs name the new id with the old one it is still reported under', () => {
    const table = read('troubleshooting.md').split('## Every doctor finding')[1] ?? '';
    const operation = read('operation.md');
    expect(Object.keys(FINDING_ALIASES).length).toBeGreaterThan(0);
    for (const [id, old] of Object.entries(FINDING_ALIASES)) {
      const row = table.split('\n').find((l) => l.startsWith(`| \`${id}\` |`)) ?? '';
      expect(row, id).toContain(`\`${old}\``);
      expect(operation, id).toContain(`\`${id}\` (was \`${old}\`)`);
    }
  });
  it('operation.md documents every command', () => {
    const text = read('operation.md');
    for (const cmd of COMMANDS.filter((c) => c !== 'run' && c !== 'reload'))
      expect(text, cmd).toContain(`kvmnftd ${cmd} `);
  });
});
