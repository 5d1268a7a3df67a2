// The table-by-table read's own logic (src/nft/table-by-table.ts), fed the
// text nft prints; the integration test owner-table-read.test.ts runs it
// against real nft.
import { describe, expect, it } from 'vitest';
import { parseTableList, readTableByTable } from '../../src/nft/table-by-table.js';

const meta = { metainfo: { version: '1.0.6' } };
const listing = (family: string, name: string) =>
  JSON.stringify({ nftables: [meta, { table: { family, name, handle: 1 } }] });

describe('table by table', () => {
  it('parses `nft list tables`, and refuses a line it does not know rather than skip a table', () => {
    expect(parseTableList('table inet filter\ntable ip nat\n\ntable netdev x\n')).toEqual([
      { family: 'inet', name: 'filter' },
      { family: 'ip', name: 'nat' },
      { family: 'netdev', name: 'x' },
    ]);
    expect(() => parseTableList('table inet filter\ntable inet "odd name"\n')).toThrow(
      'nft list tables printed an unexpected line: "table inet \\"odd name\\""',
    );
    expect(() => parseTableList('table ipx t\n')).toThrow(/unexpected line/);
  });

  it('lists each table tersely, in full when terse prints no JSON, and keeps the order of `list tables`', async () => {
    const asked: string[] = [];
    const doc = await readTableByTable((args) => {
      asked.push(args.join(' '));
      if (args[1] === 'tables') return Promise.resolve('table inet filter\ntable ip nat\ntable ip6 x\n');
      const [family, name] = args.slice(-2) as [string, string];
      const misprints = name === 'filter' && args.includes('-t');
      return Promise.resolve(misprints ? '{"nftables": [{"table": {"flags": ' : listing(family, name));
    });
    expect(doc.nftables.filter((i) => !('metainfo' in (i as object)))).toEqual([
      { table: { family: 'inet', name: 'filter', handle: 1 } },
      { table: { family: 'ip', name: 'nat', handle: 1 } },
      { table: { family: 'ip6', name: 'x', handle: 1 } },
    ]);
    expect(asked.filter((a) => a.endsWith('inet filter'))).toEqual([
      '-j -t list table inet filter',
      '-j list table inet filter',
    ]);
    expect(asked.filter((a) => a.endsWith('ip nat'))).toEqual(['-j -t list table ip nat']);
  });

  it('a full read (terse = false) asks in full twice; an nft error is not swallowed', async () => {
    const asked: string[] = [];
    await expect(
      readTableByTable((args) => {
        asked.push(args.join(' '));
        return Promise.resolve(args[1] === 'tables' ? 'table inet filter\n' : '');
      }, false),
    ).rejects.toThrow('nft prints no JSON for table inet filter, not even listed alone');
    expect(asked).toEqual(['list tables', '-j list table inet filter', '-j list table inet filter']);
    await expect(
      readTableByTable((args) =>
        args[1] === 'tables'
          ? Promise.resolve('table ip t\n')
          : Promise.reject(new Error('nft failed reading the ruleset: Error: x')),
      ),
    ).rejects.toThrow('nft failed reading the ruleset: Error: x');
  });
});
