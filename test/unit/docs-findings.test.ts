// docs/troubleshooting.md lists every doctor finding exactly once in its
// table, and nothing else; docs/operation.md documents every command of the
// CLI's own table (COMMANDS), run and reload included: its synopsis is the
// command's usage line, and the prose describes it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMMANDS } from '../../src/cli/args.js';
import { COMMAND_HELP } from '../../src/cli/help.js';
import { FINDING_ALIASES, FINDING_IDS } from '../../src/doctor/types.js';
import { REPO_ROOT } from '../helpers/cli.js';

const read = (name: string): string => readFileSync(join(REPO_ROOT, 'docs', name), 'utf8');
const squash = (s: string): string => s.trim().replace(/\s+/g, ' ');

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

  describe('operation.md documents every command', () => {
    const text = read('operation.md');
    const commands = text.split('\n## ')[1] ?? '';
    // The synopsis: the first indented block of "## Commands", one `kvmnftd CMD ...` line per command.
    const block = /^(?: {4}.*\n)+/m.exec(commands)?.[0] ?? '';
    const synopsis = new Map(
      [...block.matchAll(/^ {4}kvmnftd ([a-z]+)(.*)$/gm)].map((m) => [m[1]!, squash(`kvmnftd ${m[1]} ${m[2]}`)]),
    );

    it('the command table is the one the CLI parses, run and reload included', () => {
      expect(COMMANDS).toEqual(expect.arrayContaining(['run', 'reload']));
      expect(Object.keys(COMMAND_HELP).sort()).toEqual([...COMMANDS].sort());
    });

    it.each(COMMANDS)('%s: its synopsis line is its usage line (plus the common --config)', (cmd) => {
      const usage = /^Usage: (.*)$/m.exec(COMMAND_HELP[cmd])?.[1];
      expect(usage, `kvmnftd help ${cmd} has a Usage: line`).toBeDefined();
      expect(synopsis.get(cmd)?.replace(/ \[--config PATH\]$/, ''), `operation.md synopsis of ${cmd}`).toBe(
        squash(usage!),
      );
    });

    it.each(COMMANDS)('%s: described in the prose (a bullet or a section of its own)', (cmd) => {
      const described = new RegExp(`^(- \`${cmd}\` |#{3,4} \`${cmd}\`)`, 'm');
      expect(commands, `operation.md "## Commands" describes ${cmd}`).toMatch(described);
    });
  });
});
