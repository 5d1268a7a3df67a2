// The post-flush detector against real captured rulesets (test/fixtures,
// from ../shared/samples: libvirt 9 iptables-nft, libvirt 11 nftables and
// libvirt 11 iptables-nft backends).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import type { Network } from '../../src/libvirt/model.js';
import { libvirtBackendsPresent, libvirtChainsMissing } from '../../src/nft/libvirt-chains.js';
import { indexRuleset, tableKey } from '../../src/nft/ruleset.js';

const fixture = (f: string) =>
  indexRuleset(JSON.parse(readFileSync(join(import.meta.dirname, '..', 'fixtures', f), 'utf8')));
const net = (xml: string): Network => {
  const r = parseNetworkXml(readFileSync(join(import.meta.dirname, '..', 'golden', xml), 'utf8'));
  if (r.kind !== 'ok') throw new Error('fixture');
  return r.network;
};

describe('libvirt chains after a flush', () => {
  const nat = net('nat-default/default.xml');
  const open = net('open/open.xml');

  it.each([
    ['live-libvirt9.json', ['iptables']],
    ['live-libvirt11.json', ['nftables']],
    ['live-libvirt11-iptables.json', ['iptables']],
  ])("finds libvirt's chains in %s", (file, backends) => {
    const live = fixture(file);
    expect(libvirtBackendsPresent(live)).toEqual(backends);
    expect(libvirtChainsMissing(live, [nat])).toBe(false);
  });

  it('sees them missing after a flush while a network runs, and only then', () => {
    const flushed = fixture('live-libvirt9.json');
    for (const key of [...flushed.tables.keys()]) if (key !== tableKey('inet', 'filter')) flushed.tables.delete(key);
    expect(libvirtChainsMissing(flushed, [nat])).toBe(true);
    expect(libvirtChainsMissing(flushed, [])).toBe(false);
    // libvirt writes no rules for forward mode 'open'
    expect(libvirtChainsMissing(flushed, [open])).toBe(false);
  });
});
