#!/usr/bin/env node
// Benchmark: one `kvmnftd apply --from-xml` for 1 and 100 networks, against a
// raw `nft -j -f` of the very same batch (the physical limit of one
// transaction); then a one-network change (a network added to 100 applied
// ones): the size of that batch and the time to apply it. Runs as root in a
// throwaway network namespace it deletes again. Prints medians; not a test,
// nothing is asserted.
//   npm run bench            (or: node bench/apply.mjs [runs] [options])
// Options (bench/compare uses them): --counts 1,100 (the network counts; default
// 1,100), --no-change (skip the one-network change), --json FILE (also write
// every sample, ms, as JSON).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const argv = process.argv.slice(2);
const option = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const RUNS = Number(/^\d+$/.test(argv[0] ?? '') ? argv[0] : 10);
const COUNTS = (option('--counts') ?? '1,100').split(',').map(Number);
const JSON_OUT = option('--json');
const CHANGE = !argv.includes('--no-change');
const CLI = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');
const NS = `kvmnftd-bench-${process.pid}`;
const work = mkdtempSync(join(tmpdir(), 'kvmnftd-bench-'));

const ADMIN = `flush ruleset
table inet filter {
  chain input { type filter hook input priority 0; policy drop; ct state invalid drop; ct state established,related accept; iifname "lo" accept; }
  chain forward { type filter hook forward priority 0; policy drop; }
  chain output { type filter hook output priority 0; policy accept; }
}
`;

function inNs(cmd, args, extraEnv = {}) {
  const r = spawnSync('ip', ['netns', 'exec', NS, cmd, ...args], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, KVMNFTD_RUNTIME_DIR: join(work, 'run'), ...extraEnv },
  });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

function networkXml(i) {
  return (
    `<network><name>bench${i}</name><forward mode='nat'/><bridge name='vbr${i}'/>` +
    `<ip address='10.${Math.floor(i / 250)}.${i % 250}.1' prefix='24'><dhcp><range start='10.${Math.floor(i / 250)}.${i % 250}.2' end='10.${Math.floor(i / 250)}.${i % 250}.254'/></dhcp></ip></network>`
  );
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function timed(fn) {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

function fromXmlArgs(count) {
  const files = [];
  for (let i = 0; i < count; i++) {
    const f = join(work, `net${i}.xml`);
    writeFileSync(f, networkXml(i));
    files.push(f);
  }
  return files.flatMap((f) => ['--from-xml', f]);
}

const adminFile = join(work, 'admin.nft');
const reset = () => inNs('nft', ['-f', adminFile]);

/** `kvmnftd plan --json` against the namespace's ruleset now, written compact (as kvmnftd writes it). */
function planFile(fromXml, name) {
  const file = join(work, name);
  const batch = JSON.stringify(
    JSON.parse(inNs('node', [CLI, 'plan', '--json', ...fromXml, '--log-level', 'error']).stdout),
  );
  writeFileSync(file, batch);
  return { file, bytes: Buffer.byteLength(batch), commands: JSON.parse(batch).nftables.length };
}

function durationOf(stderr) {
  const m = /"duration_ms":([\d.]+)/.exec(stderr);
  if (!m) throw new Error(`no duration in apply's log: ${stderr}`);
  return Number(m[1]);
}

function bench(count) {
  const fromXml = fromXmlArgs(count);
  reset();
  const { file: batchFile, bytes: batchBytes, commands } = planFile(fromXml, `batch${count}.json`);

  const cli = [];
  const internal = [];
  const raw = [];
  const noop = [];
  for (let r = 0; r < RUNS; r++) {
    reset();
    raw.push(timed(() => inNs('nft', ['-j', '-f', batchFile])));
    reset();
    let stderr = '';
    cli.push(timed(() => ({ stderr } = inNs('node', [CLI, 'apply', ...fromXml]))));
    // The daemon's cost: read ruleset + plan + nft transaction, without Node's start-up.
    internal.push(durationOf(stderr));
    noop.push(timed(() => inNs('node', [CLI, 'apply', ...fromXml, '--log-level', 'error'])));
  }
  return {
    count,
    commands,
    batchBytes,
    raw: median(raw),
    internal: median(internal),
    cli: median(cli),
    noop: median(noop),
    samples: { raw, internal, cli, noop },
  };
}

/**
 * One network added to `count` applied ones: the batch kvmnftd plans for it
 * (its size), nft applying that batch, and kvmnftd's read+plan+commit for it.
 */
function benchChange(count) {
  const before = fromXmlArgs(count);
  const after = fromXmlArgs(count + 1);
  reset();
  const { file: baseFile } = planFile(before, `base${count}.json`);
  const applyBase = () => {
    reset();
    inNs('nft', ['-j', '-f', baseFile]);
  };
  applyBase();
  const { file, bytes, commands } = planFile(after, `change${count}.json`);
  const raw = [];
  const internal = [];
  for (let r = 0; r < RUNS; r++) {
    applyBase();
    raw.push(timed(() => inNs('nft', ['-j', '-f', file])));
    applyBase();
    internal.push(durationOf(inNs('node', [CLI, 'apply', ...after]).stderr));
  }
  return { count, commands, bytes, raw: median(raw), internal: median(internal) };
}

try {
  execFileSync('ip', ['netns', 'add', NS]);
  writeFileSync(adminFile, ADMIN);
  const rows = COUNTS.map(bench);
  const change = CHANGE ? benchChange(100) : undefined;
  console.log(
    `kvmnftd apply benchmark: median of ${RUNS} runs, nft ${execFileSync('nft', ['--version'], { encoding: 'utf8' }).trim()}, node ${process.version}`,
  );
  console.log(
    'networks  commands  batch KiB  raw nft -j -f  apply: read+plan+commit  ratio  apply: whole process  no-op apply process',
  );
  for (const r of rows) {
    console.log(
      [
        String(r.count).padStart(8),
        String(r.commands).padStart(8),
        (r.batchBytes / 1024).toFixed(1).padStart(9),
        `${r.raw.toFixed(1).padStart(10)} ms`,
        `${r.internal.toFixed(1).padStart(20)} ms`,
        (r.internal / r.raw).toFixed(2).padStart(5),
        `${r.cli.toFixed(1).padStart(17)} ms`,
        `${r.noop.toFixed(1).padStart(16)} ms`,
      ].join('  '),
    );
  }
  console.log(
    'raw = nft alone applying the same batch file via `ip netns exec`; read+plan+commit = the duration kvmnftd logs',
  );
  if (change)
    console.log(
      `one network added to ${change.count}: ${change.commands} commands, ${(change.bytes / 1024).toFixed(1)} KiB; ` +
        `raw nft -j -f ${change.raw.toFixed(1)} ms; apply: read+plan+commit ${change.internal.toFixed(1)} ms`,
    );
  if (JSON_OUT) {
    const nft = execFileSync('nft', ['--version'], { encoding: 'utf8' }).trim();
    writeFileSync(JSON_OUT, `${JSON.stringify({ runs: RUNS, nft, node: process.version, rows, change }, null, 2)}\n`);
  }
} finally {
  spawnSync('ip', ['netns', 'del', NS]);
  rmSync(work, { recursive: true, force: true });
}
