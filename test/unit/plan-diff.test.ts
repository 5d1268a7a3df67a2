// plan --diff: the batch played against the live ruleset, shown per chain.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config/config.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { planDiff, renderDiff } from '../../src/nft/diff.js';
import { describeRule } from '../../src/nft/render-text.js';
import { plan } from '../../src/nft/plan.js';
import { tableKey } from '../../src/nft/ruleset.js';
import { fixture } from '../helpers/cli.js';
import { goldenCases, LIVE_LIBVIRT9, loadCase } from '../helpers/golden.js';
import { applyBatch } from '../../src/nft/batch-model.js';
import { cloneRuleset } from '../../src/nft/ruleset.js';

const DEFAULT = parseNetworkXml(readFileSync(fixture('default.xml'), 'utf8'), 'default.xml');
const config = defaultConfig();

describe('plan --diff', () => {
  it('shows only additions before the first apply, with the jump above the admin rules', () => {
    const text = renderDiff(planDiff(LIVE_LIBVIRT9, plan([DEFAULT], config, LIVE_LIBVIRT9).batch));
    const lines = text.split('\n').filter((l) => l !== '');
    expect(lines.every((l) => l.startsWith('+') || l.startsWith(' '))).toBe(true);
    expect(text).toContain('+ table inet kvmnftd\n');
    expect(text).toContain(
      '  table inet filter\n    chain input { type filter hook input priority 0; policy drop; }\n+     jump kvmnftd_input comment "kvmnftd"\n      ... 4 unchanged rules\n',
    );
    expect(text).toContain('+     iifname "virbr0" udp dport 67 counter accept comment "kvmnftd net=default"');
    expect(text).not.toContain('LIBVIRT'); // untouched tables are not shown
  });

  it('is empty once applied, for every golden case', () => {
    for (const name of goldenCases()) {
      const c = loadCase(name);
      const first = plan(c.inputs, c.config, c.live);
      const after = applyBatch(c.live, first.batch);
      expect(planDiff(after, plan(c.inputs, c.config, after).batch), name).toEqual([]);
    }
  });

  it('shows a removed network as - lines and a deleted jump as one + line', () => {
    const after = applyBatch(LIVE_LIBVIRT9, plan([DEFAULT], config, LIVE_LIBVIRT9).batch);
    const removal = renderDiff(planDiff(after, plan([], config, after).batch));
    expect(removal).toContain('- table inet kvmnftd\n');
    expect(removal).toContain('-   chain kvmnftd_forward\n');
    expect(removal).toContain('-     jump kvmnftd_input comment "kvmnftd"\n');
    expect(removal.split('\n').some((l) => l.startsWith('+'))).toBe(false);

    const broken = cloneRuleset(after);
    const fwd = broken.tables.get(tableKey('inet', 'filter'))!.chains.get('forward')!;
    fwd.rules = [];
    expect(renderDiff(planDiff(broken, plan([DEFAULT], config, broken).batch))).toBe(
      '  table inet filter\n    chain forward { type filter hook forward priority 0; policy drop; }\n+     jump kvmnftd_forward comment "kvmnftd"\n',
    );
  });

  it('describes rules the text renderer does not know (iptables-nft xt statements)', () => {
    expect(
      describeRule([
        { match: { op: '==', left: { meta: { key: 'oifname' } }, right: 'docker0' } },
        { counter: { packets: 1, bytes: 2 } },
        { xt: { type: 'target', name: 'REJECT' } },
      ]),
    ).toBe('oifname "docker0" counter xt target REJECT');
    expect(describeRule([{ drop: null }], 'x')).toBe('drop comment "x"');
  });
});
