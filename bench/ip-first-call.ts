/**
 * The first address parsed in a process: how long the first
 * `ipFamily('fe80::1')` takes in a fresh node. Not a test: prints figures.
 * node:net's isIPv6 compiled a large regular expression on its first call,
 * paid once by every kvmnftd process (the CLI's `apply` on its critical path);
 * src/net/ip.ts now scans the text itself.
 *
 *   npm run bench:ip-first-call                  (builds, then N = 20)
 *   npx tsx bench/ip-first-call.ts [N] [path/to/dist/net/ip.js]
 *
 * Each of N node processes, run one after the other, imports the built ip.js
 * and times the one call with process.hrtime (the import is not counted).
 * The second argument measures another build, e.g. one from before the change.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { percentile, round } from './lib/stats.js';

const runs = Number(process.argv[2] ?? 20);
if (!Number.isInteger(runs) || runs < 1) throw new Error(`N must be a positive integer, got ${process.argv[2]}`);
const ipJs = resolve(process.argv[3] ?? fileURLToPath(new URL('../dist/net/ip.js', import.meta.url)));
if (!existsSync(ipJs)) throw new Error(`${ipJs} is missing: run npm run build first`);

const child = `
const { ipFamily } = await import(${JSON.stringify(pathToFileURL(ipJs).href)});
const t0 = process.hrtime.bigint();
const family = ipFamily('fe80::1');
const t1 = process.hrtime.bigint();
if (family !== 6) throw new Error('ipFamily(fe80::1) gave ' + family);
process.stdout.write(String(Number(t1 - t0) / 1e6));
`;

const ms: number[] = [];
for (let i = 0; i < runs; i++) {
  ms.push(Number(execFileSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8' })));
}
const fmt = (p: number): string => round(percentile(ms, p), 3).toFixed(3);
console.log(`${ipJs}`);
console.log(
  `first ipFamily('fe80::1'), ${runs} fresh node ${process.version} processes: p50 ${fmt(50)} ms, p99 ${fmt(99)} ms`,
);
