// Golden files: one folder per case under test/golden with libvirt network
// XML (optionally config.toml and its own live.json ruleset); expected.nft
// beside them is the batch the planner must produce against a real captured
// ruleset (the admin's drop-policy table plus libvirt 9's iptables-nft
// tables). They double as documentation: docs/rules.md is generated from them.
// After an intended change: npm run golden:update, review the diff.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { expectedFile, goldenCases, renderCase } from '../helpers/golden.js';

describe('golden plans', () => {
  it('has the cases the project promises', () => {
    expect(goldenCases()).toEqual(
      expect.arrayContaining([
        'nat-default',
        'nat-forward-dev',
        'nat-address-port',
        'route',
        'open',
        'isolated',
        'ipv6-routed',
        'ipv6-nat',
        'two-networks',
        'hostile',
        // Docker's and ufw's drop-policy chains (filter.foreign_chains), from real iptables-nft:
        // test/golden/make-foreign-live.ts regenerates their live.json.
        'foreign-docker',
        'foreign-ufw',
        'foreign-both',
        'foreign-report',
        'foreign-extra',
        'foreign-stale',
        // kvmnftd's rules already in place (live.json from real nft, make-foreign-live.ts): the narrow edit.
        'edit-add-network',
        'edit-port-forward',
        // [networks.<name>] (issue 14): every key, the mode errors, filter.family = "ip", beside Docker.
        'policy-host-services',
        'policy-isolate',
        'policy-egress',
        'policy-egress-empty',
        'policy-log-drops',
        'policy-modes',
        'policy-ip-family',
        'policy-foreign',
      ]),
    );
  });

  for (const name of goldenCases()) {
    it(name, () => {
      const actual = renderCase(name);
      const file = expectedFile(name);
      if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(file, actual);
      expect(existsSync(file), `${file} missing: run npm run golden:update and review it`).toBe(true);
      expect(actual).toBe(readFileSync(file, 'utf8'));
    });
  }
});
