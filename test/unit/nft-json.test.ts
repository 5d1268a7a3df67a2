// The statement builders write what nft lists back (measured with nft 1.0.6),
// and the text renderer prints it in a form nft reads.
import { describe, expect, it } from 'vitest';
import { s } from '../../src/nft/json.js';
import { renderRule } from '../../src/nft/render-text.js';

describe('snat', () => {
  it.each([
    [{ start: '198.51.100.10', end: '198.51.100.10' }, '198.51.100.10'],
    [{ start: '198.51.100.16', end: '198.51.100.31' }, { prefix: { addr: '198.51.100.16', len: 28 } }],
    [{ start: '10.0.0.4', end: '10.0.0.7' }, { prefix: { addr: '10.0.0.4', len: 30 } }],
    [{ start: '10.0.0.5', end: '10.0.0.6' }, { range: ['10.0.0.5', '10.0.0.6'] }],
    [{ start: '198.51.100.10', end: '198.51.100.20' }, { range: ['198.51.100.10', '198.51.100.20'] }],
  ])('writes the address range %j as nft lists it: %j', (range, addr) => {
    expect(s.snat('ip', range)).toEqual({ snat: { family: 'ip', addr } });
  });

  it('prints a prefix block as a range, which nft reads back with ports too', () => {
    const rule = [s.snat('ip', { start: '10.0.0.4', end: '10.0.0.7' }, { start: 1024, end: 65535 })];
    expect(renderRule(rule)).toBe('snat ip to 10.0.0.4-10.0.0.7:1024-65535');
  });
});
