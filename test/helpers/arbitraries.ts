// fast-check generators for hostile input: libvirt-shaped network XML with
// mutated values, configuration documents, and live rulesets (the admin's
// table with extra rules and chains, stray tagged jumps, foreign tables,
// kvmnftd's own table with foreign chains). Also the ownership checker used by
// the fuzz tests. Shared by test/unit/hostile-input.test.ts and
// test/integration/nft-check.test.ts.
import fc from 'fast-check';
import { configFromObject, type Config } from '../../src/config/config.js';
import type { NetworkParse } from '../../src/libvirt/model.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { formatIp, maskOf } from '../../src/net/ip.js';
import { OWN_FORWARD_CHAIN, OWN_INPUT_CHAIN, TAG } from '../../src/nft/ownership.js';
import type { Batch, Expr, Json } from '../../src/nft/json.js';
import { plan } from '../../src/nft/plan.js';
import { indexRuleset, ruleKey, tableKey, type Ruleset } from '../../src/nft/ruleset.js';
import { applyBatch } from '../../src/nft/batch-model.js';

// ---- seed and case counting ------------------------------------------------

/** FC_SEED=<int> re-runs a previous run exactly; otherwise a fresh seed (printed by the tests). */
export function fuzzSeed(): number {
  const fromEnv = process.env['FC_SEED'];
  if (fromEnv !== undefined && fromEnv !== '') {
    const n = Number(fromEnv);
    if (!Number.isInteger(n)) throw new Error(`FC_SEED must be an integer, got ${JSON.stringify(fromEnv)}`);
    return n | 0;
  }
  return (Date.now() ^ Math.floor(Math.random() * 0x7fffffff)) | 0;
}

// ---- strings ---------------------------------------------------------------

/** Hand-picked nasty fragments: nft/shell/XML metacharacters, entity-like text, unicode. */
export const NASTY = [
  '*',
  'v*',
  '"',
  "'",
  ' ',
  '\\',
  '\t',
  '\n',
  ';',
  '#',
  '{',
  '}',
  '$',
  '`',
  '&',
  '&amp;',
  '&quot;',
  '&#34;',
  '&#x22;',
  '&xxe;',
  '&lt;',
  ']]>',
  '<!--',
  '-->',
  '%',
  'eth0" accept; #',
  'é',
  'ü',
  '🙂',
  '\u200b',
  '\ufeff',
  '\u2028',
  'Ω',
  '中文',
  '\u0085',
  '\u00a0',
  'x'.repeat(16),
  'y'.repeat(300),
  '..',
  '.',
  '-',
  'lo',
  'virbr0',
  'kvmnftd',
  'kvmnftd_input',
  '0',
  '-1',
  '1e3',
  '0x10',
  '',
];

export const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NASTY) },
  { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom(...NASTY), { maxLength: 6 }).map((a) => a.join('')) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.constantFrom('a', 'é', '🙂', 'ab"'), fc.integer({ min: 100, max: 5000 }))
      .map(([s, n]) => s.repeat(n)),
  },
);

/** A value that is valid most of the time and hostile otherwise. */
function mostly<T>(valid: fc.Arbitrary<T>, hostile: fc.Arbitrary<T>, validWeight = 4): fc.Arbitrary<T> {
  return fc.oneof({ weight: validWeight, arbitrary: valid }, { weight: 1, arbitrary: hostile });
}

/** `arb` in `tenths` out of ten cases, undefined (the element or attribute is left out) otherwise. */
const maybe = <T>(arb: fc.Arbitrary<T>, tenths = 7): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: 10 - tenths, arbitrary: fc.constant(undefined) }, { weight: tenths, arbitrary: arb });

// ---- network XML -------------------------------------------------------------

export const NETWORK_NAMES = [
  'default',
  'routed',
  'net-a',
  'isol',
  'ünï-cødé',
  'n'.repeat(130),
  'é'.repeat(70),
  'a;b{c}#$',
];

const ifnameValid = fc.oneof(
  fc.constantFrom('virbr0', 'virbr1', 'virbr2', 'br-lan', 'kvmnftd_input', 'a', 'A.b-c_9', '-x', 'x'.repeat(15), '0'),
  fc.stringMatching(/^[A-Za-z0-9_.-]{1,15}$/).filter((s) => s !== '.' && s !== '..'),
);
export const ifnameArb = mostly(ifnameValid, hostileString, 5);

const ipv4 = fc.oneof(
  fc.ipV4(),
  fc.constantFrom('192.168.122.1', '10.0.0.1', '172.16.5.4', '0.0.0.0', '255.255.255.255', '224.0.0.1', '127.0.0.1'),
);
const ipv6 = fc.oneof(
  fc.ipV6(),
  fc.constantFrom('fd00::1', '2001:db8::1', '::', '::1', 'ff02::1', '::ffff:10.0.0.1', 'fe80::1'),
);
const badAddress = fc.oneof(
  fc.constantFrom(
    '256.1.1.1',
    '1.2.3',
    '1.2.3.4.5',
    '01.2.3.4',
    ' 10.0.0.1',
    '10.0.0.1 ',
    '10.0.0.1/24',
    'fe80::1%eth0',
    ':::',
    '1::2::3',
    'localhost',
    '::g',
    '1.2.3.-4',
    '๑.๒.๓.๔',
  ),
  hostileString,
);
const addressArb = fc.oneof(
  { weight: 4, arbitrary: ipv4 },
  { weight: 2, arbitrary: ipv6 },
  { weight: 1, arbitrary: badAddress },
);

const prefixArb = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 32 }).map(String) },
  { weight: 1, arbitrary: fc.integer({ min: -5, max: 200 }).map(String) },
  {
    weight: 1,
    arbitrary: fc.constantFrom('024', '+24', '24.0', '', ' 24', '1e1', '0x18', '0', '33', '128', '129', '9999'),
  },
);
const netmaskArb = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 32 }).map((p) => formatIp(4, maskOf(4, p))) },
  {
    weight: 1,
    arbitrary: fc.constantFrom('255.0.255.0', '255.255.255.1', '0.255.255.255', 'ffff:ffff::', '255.255.255.256', ''),
  },
  { weight: 1, arbitrary: badAddress },
);
const portArb = mostly(
  fc.integer({ min: 1, max: 65535 }).map(String),
  fc.oneof(
    fc.integer({ min: -10, max: 100_000 }).map(String),
    fc.constantFrom('', '080', '1024 ', '1e3', '65536', '0'),
  ),
  3,
);
const modeArb = fc.constantFrom(
  'nat',
  'nat',
  'nat',
  'route',
  'route',
  'open',
  'isolated',
  'bridge',
  'private',
  'vepa',
  'passthrough',
  'hostdev',
  'NAT',
  '',
  'nat ',
  'mode*',
  '__proto__',
  'constructor',
);

export interface IpSpec {
  address?: string | undefined;
  prefix?: string | undefined;
  netmask?: string | undefined;
  family?: string | undefined;
  dhcp?: Array<{ start?: string | undefined; end?: string | undefined }> | undefined;
  tftp?: boolean | undefined;
}

export interface NetSpec {
  names: string[]; // 0 = no <name>, 2 = duplicated
  uuid?: string | undefined;
  forward?:
    | {
        mode?: string | undefined;
        dev?: string | undefined;
        nat?:
          | {
              ipv6?: string | undefined;
              address?: { start?: string | undefined; end?: string | undefined } | undefined;
              port?: { start?: string | undefined; end?: string | undefined } | undefined;
            }
          | undefined;
      }
    | undefined;
  bridges: Array<{ name?: string | undefined }>;
  ips: IpSpec[];
  dns?: string | undefined;
  junk: Array<{ at: number; text: string }>;
  quote: '"' | "'";
  escape: boolean;
}

const ipSpecArb: fc.Arbitrary<IpSpec> = fc.oneof(
  // mostly coherent v4 or v6 entries...
  fc.record({
    address: mostly(ipv4, badAddress, 8),
    prefix: maybe(prefixArb, 7),
    netmask: maybe(netmaskArb, 2),
    family: maybe(fc.constantFrom('ipv4', 'ipv6', 'IPV4', ''), 2),
    dhcp: maybe(
      fc.array(
        fc.record({ start: maybe(mostly(ipv4, badAddress, 6), 9), end: maybe(mostly(ipv4, badAddress, 6), 8) }),
        { maxLength: 3 },
      ),
      4,
    ),
    tftp: fc.boolean(),
  }),
  fc.record({
    address: mostly(ipv6, badAddress, 8),
    prefix: maybe(fc.oneof(fc.integer({ min: 1, max: 128 }).map(String), prefixArb), 7),
    netmask: maybe(netmaskArb, 2),
    family: maybe(fc.constantFrom('ipv6', 'ipv4'), 4),
    dhcp: maybe(fc.array(fc.record({ start: maybe(ipv6), end: maybe(ipv6) }), { maxLength: 2 }), 2),
    tftp: fc.constant(false),
  }),
  // ...and anything at all.
  fc.record(
    {
      address: maybe(addressArb),
      prefix: maybe(prefixArb),
      netmask: maybe(netmaskArb),
      family: maybe(hostileString),
      dhcp: fc.constant(undefined),
      tftp: fc.boolean(),
    },
    { requiredKeys: [] },
  ),
);

const JUNK = [
  '&amp;',
  '&#0;',
  '&#xD800;',
  '&xxe;',
  '&lt;b&gt;',
  '<!-- a -- b -->',
  '<!-- c -->',
  '<![CDATA[<bridge name="evil*"/>]]>',
  '<?pi x?>',
  '<unknown a="1"/>',
  '<ip/>',
  '<ip>text</ip>',
  '<bridge/>',
  '<forward mode="route"/>',
  '<name/>',
  '<name>second</name>',
  '<dhcp/>',
  '<dns><host ip="1.2.3.4"/></dns>',
  '<port start="1" end="2"/>',
  '<nat/>',
  '<mac address="52:54:00:00:00:01"/>',
  '<!DOCTYPE network [<!ENTITY x "y">]>',
  '<!ENTITY e SYSTEM "file:///etc/passwd">',
  '&e;',
  '<constructor/>',
  '<__proto__ name="x"/>',
  '<toString/>',
  '<a:b xmlns:a="urn:x"/>',
];

export const netSpecArb: fc.Arbitrary<NetSpec> = fc.record({
  names: fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...NETWORK_NAMES).map((n) => [n]) },
    { weight: 1, arbitrary: fc.array(mostly(fc.constantFrom(...NETWORK_NAMES), hostileString, 1), { maxLength: 2 }) },
  ),
  uuid: maybe(mostly(fc.uuid(), hostileString, 3), 4),
  forward: maybe(
    fc.record({
      mode: maybe(modeArb, 9),
      dev: maybe(ifnameArb, 2),
      nat: maybe(
        fc.record({
          ipv6: maybe(fc.constantFrom('yes', 'no', 'YES', '', 'true'), 2),
          address: maybe(
            fc.record({ start: maybe(mostly(ipv4, addressArb, 4), 9), end: maybe(mostly(ipv4, addressArb, 4), 5) }),
            3,
          ),
          port: maybe(fc.record({ start: maybe(portArb, 9), end: maybe(portArb, 9) }), 3),
        }),
        5,
      ),
    }),
    8,
  ),
  bridges: fc.oneof(
    { weight: 8, arbitrary: fc.tuple(fc.record({ name: maybe(ifnameArb, 9) })).map((t) => [...t]) },
    { weight: 1, arbitrary: fc.array(fc.record({ name: maybe(ifnameArb, 7) }), { maxLength: 3 }) },
  ),
  ips: fc.array(ipSpecArb, { maxLength: 3 }),
  dns: maybe(fc.constantFrom('no', 'yes', 'NO', ''), 2),
  junk: fc.oneof(
    { weight: 5, arbitrary: fc.constant<Array<{ at: number; text: string }>>([]) },
    {
      weight: 1,
      arbitrary: fc.array(fc.record({ at: fc.nat(), text: mostly(fc.constantFrom(...JUNK), hostileString, 3) }), {
        maxLength: 3,
      }),
    },
  ),
  quote: fc.constantFrom('"' as const, "'" as const),
  escape: fc.boolean(),
});

function esc(value: string, spec: NetSpec, inAttr: boolean): string {
  if (!spec.escape) return value;
  let out = value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  if (inAttr) out = spec.quote === '"' ? out.replace(/"/g, '&quot;') : out.replace(/'/g, '&apos;');
  return out;
}

function attrs(spec: NetSpec, values: Record<string, string | undefined>): string {
  return Object.entries(values)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => ` ${k}=${spec.quote}${esc(v, spec, true)}${spec.quote}`)
    .join('');
}

/** Serialises a spec the way libvirt would, except for the hostile parts. */
export function networkXml(spec: NetSpec): string {
  const lines: string[] = ['<network>'];
  for (const n of spec.names) lines.push(`  <name>${esc(n, spec, false)}</name>`);
  if (spec.uuid !== undefined) lines.push(`  <uuid>${esc(spec.uuid, spec, false)}</uuid>`);
  const f = spec.forward;
  if (f) {
    const inner: string[] = [];
    if (f.nat) {
      const natInner: string[] = [];
      if (f.nat.address)
        natInner.push(`<address${attrs(spec, { start: f.nat.address.start, end: f.nat.address.end })}/>`);
      if (f.nat.port) natInner.push(`<port${attrs(spec, { start: f.nat.port.start, end: f.nat.port.end })}/>`);
      inner.push(`<nat${attrs(spec, { ipv6: f.nat.ipv6 })}>${natInner.join('')}</nat>`);
    }
    lines.push(`  <forward${attrs(spec, { mode: f.mode, dev: f.dev })}>${inner.join('')}</forward>`);
  }
  for (const b of spec.bridges) lines.push(`  <bridge${attrs(spec, { name: b.name })} stp='on' delay='0'/>`);
  if (spec.dns !== undefined) lines.push(`  <dns${attrs(spec, { enable: spec.dns })}/>`);
  for (const ip of spec.ips) {
    const inner: string[] = [];
    if (ip.dhcp)
      inner.push(
        `<dhcp>${ip.dhcp.map((r) => `<range${attrs(spec, { start: r.start, end: r.end })}/>`).join('')}</dhcp>`,
      );
    if (ip.tftp) inner.push(`<tftp root='/srv/tftp'/>`);
    lines.push(
      `  <ip${attrs(spec, { family: ip.family, address: ip.address, prefix: ip.prefix, netmask: ip.netmask })}>${inner.join('')}</ip>`,
    );
  }
  lines.push('</network>');
  for (const j of spec.junk) lines.splice(j.at % (lines.length + 1), 0, j.text);
  return lines.join('\n');
}

/** Raw strings that look more or less like XML. */
export const xmlishString: fc.Arbitrary<string> = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc
    .array(
      fc.oneof(
        fc.constantFrom(
          '<network>',
          '</network>',
          '<name>',
          '</name>',
          'default',
          '<bridge name="',
          '<ip address="',
          '" prefix="24"/>',
          '"/>',
          '<forward mode="nat"/>',
          '<forward>',
          '</forward>',
          '<nat>',
          '</nat>',
          '<',
          '>',
          '/',
          '"',
          "'",
          '&',
          '&amp;',
          '<!ENTITY',
          '<!DOCTYPE',
          '<![CDATA[',
          ']]>',
          '<!--',
          '-->',
          '<?xml version="1.0"?>',
          'virbr0',
          '192.168.1.1',
          ' ',
          '\n',
          '<network/>',
          '<__proto__>',
          '</__proto__>',
        ),
        hostileString,
      ),
      { maxLength: 40 },
    )
    .map((a) => a.join('')),
  // nesting far deeper than any parser should recurse
  fc.integer({ min: 100, max: 3000 }).map((n) => `<network>${'<a>'.repeat(n)}${'</a>'.repeat(n)}</network>`),
);

/** A well-formed-ish network XML with random characters deleted, duplicated or inserted. */
export const mutatedXml: fc.Arbitrary<string> = fc
  .tuple(
    netSpecArb,
    fc.array(
      fc.tuple(
        fc.nat(),
        fc.constantFrom('del', 'dup', 'ins'),
        fc.constantFrom('<', '>', '"', "'", '/', '&', '=', ' ', '!', '?', 'x'),
      ),
      { minLength: 1, maxLength: 5 },
    ),
  )
  .map(([spec, edits]) => {
    let xml = networkXml(spec);
    for (const [pos, op, ch] of edits) {
      const i = pos % (xml.length + 1);
      if (op === 'del') xml = xml.slice(0, i) + xml.slice(i + 1);
      else if (op === 'dup') xml = xml.slice(0, i) + xml.slice(i, i + 8) + xml.slice(i);
      else xml = xml.slice(0, i) + ch + xml.slice(i);
    }
    return xml;
  });

/**
 * The parse results of a set of active networks. libvirt network names are
 * unique, so later entries with an already used name are dropped.
 */
export function parseAll(specs: readonly NetSpec[]): NetworkParse[] {
  const seen = new Set<string>();
  const out: NetworkParse[] = [];
  specs.forEach((spec, i) => {
    const parsed = parseNetworkXml(networkXml(spec), `origin-${i}.xml`);
    const name = parsed.kind === 'ok' ? parsed.network.name : parsed.name;
    if (seen.has(name)) return;
    seen.add(name);
    out.push(parsed);
  });
  return out;
}

export const networksArb = fc.array(netSpecArb, { maxLength: 5 });

// ---- configuration -------------------------------------------------------------

const CHAIN_NAMES = ['input', 'forward', 'INPUT', 'FORWARD', 'in_filter', 'kvmnftd_input', 'kvmnftd_forward', 'output'];
const TABLE_NAMES = ['filter', 'kvmnftd', 'fw', 'nat', 'firewalld'];

/**
 * A [networks.<name>] table (issue 14). The planner gets no bridge ports here, so isolate_guests shows as its
 * routed guest-to-guest drop; the per-port drops are covered by the golden cases policy-isolate and
 * policy-log-drops, and by the isolation unit tests.
 */
const policyTableArb = fc.record(
  {
    host_services: fc.subarray(['tcp/22', 'udp/5353', 'tcp/8000-8010', 'tcp/22', 'udp/1-65535']),
    egress: fc.subarray([
      '10.0.0.0/8',
      '10.128.0.0/9',
      '192.0.2.1',
      'tcp/443',
      'udp/8000-8010',
      '203.0.113.7:tcp/25',
      '198.51.100.0/24:udp/53',
      '[2001:db8::1]:tcp/25',
      '2001:db8::/32',
      '::/0',
    ]),
    log_drops: fc.boolean(),
    isolate_guests: fc.boolean(),
  },
  { requiredKeys: [] },
);

/** Configuration documents built from valid values (names from small pools, so they collide). */
export const validConfigDocArb: fc.Arbitrary<Record<string, unknown>> = fc
  .record(
    {
      filter: fc.record(
        {
          family: fc.constantFrom('inet', 'inet', 'inet', 'ip', 'ip6'),
          table: fc.constantFrom(...TABLE_NAMES),
          input_chain: fc.oneof(
            { weight: 5, arbitrary: fc.constant('input') },
            { weight: 1, arbitrary: fc.constantFrom(...CHAIN_NAMES) },
          ),
          forward_chain: fc.oneof(
            { weight: 5, arbitrary: fc.constant('forward') },
            { weight: 1, arbitrary: fc.constantFrom(...CHAIN_NAMES) },
          ),
          jump: fc.constantFrom('first', 'last', 'none'),
          accept_open_networks: fc.subarray(NETWORK_NAMES),
        },
        { requiredKeys: [] },
      ),
      nat: fc.record(
        {
          table: fc.constantFrom(...TABLE_NAMES),
          priority: fc.oneof(fc.integer({ min: -400, max: 400 }), fc.bigInt({ min: -400n, max: 400n })),
        },
        { requiredKeys: [] },
      ),
      forwarding: fc.record({ manage_ipv4: fc.boolean() }, { requiredKeys: [] }),
      networks: fc.dictionary(fc.constantFrom('*', ...NETWORK_NAMES), policyTableArb, { maxKeys: 3 }),
    },
    { requiredKeys: [] },
  )
  .filter((doc) => {
    try {
      configFromObject(doc, 'fuzz.toml');
      return true;
    } catch {
      return false; // rules between keys (nat.table == filter.table, ...): rejected on purpose
    }
  });

/** Keys that exist on every JavaScript object: a plain-object schema lookup finds them. */
export const PROTO_KEYS = [
  'constructor',
  'toString',
  '__proto__',
  'hasOwnProperty',
  'valueOf',
  'name',
  'length',
  'call',
  'apply',
  'prototype',
  'isPrototypeOf',
];
const KNOWN_KEYS = [
  'libvirt_uri',
  'filter',
  'nat',
  'forwarding',
  'daemon',
  'family',
  'table',
  'input_chain',
  'forward_chain',
  'jump',
  'accept_open_networks',
  'priority',
  'manage_ipv4',
  'resync_interval',
  'restore_libvirt_rules',
];

const keyArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...KNOWN_KEYS) },
  { weight: 2, arbitrary: fc.constantFrom(...PROTO_KEYS) },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
);

const scalarArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    'inet',
    'ip',
    'ip6',
    'first',
    'last',
    'none',
    'filter',
    'kvmnftd',
    'qemu:///system',
    'x y',
    '',
    'input',
    true,
    false,
    0,
    -0,
    1,
    99,
    400,
    401,
    -401,
    -199,
    -200,
    86_400,
    86_401,
    1.5,
    NaN,
    Infinity,
    -Infinity,
    2 ** 53,
    100n,
    99n,
    -400n,
    10n ** 30n,
    -(10n ** 30n),
  ),
  fc.string({ maxLength: 20 }),
  fc.integer(),
  fc.double(),
  fc.bigInt(),
  fc.date({ noInvalidDate: false }),
);

/** Arbitrary documents: wrong types, unknown keys, prototype keys, bigints, nested tables. */
export const hostileConfigDocArb: fc.Arbitrary<Record<string, unknown>> = fc.letrec<{
  value: unknown;
  table: Record<string, unknown>;
}>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    scalarArb,
    fc.array(tie('value'), { maxLength: 3 }),
    tie('table'),
  ),
  table: fc.array(fc.tuple(keyArb, tie('value')), { maxLength: 5 }).chain((entries) =>
    fc.boolean().map((nullProto) => {
      // TOML parsers (smol-toml) hand out null-prototype objects with own "__proto__" keys.
      const obj: Record<string, unknown> = nullProto ? (Object.create(null) as Record<string, unknown>) : {};
      for (const [k, v] of entries)
        Object.defineProperty(obj, k, { value: v, enumerable: true, writable: true, configurable: true });
      return obj;
    }),
  ),
})).table;

// ---- live rulesets ---------------------------------------------------------------

type Obj = Record<string, Json>;

export interface LiveDoc {
  nftables: Obj[];
}

/** A generated live ruleset before handles: tables -> chains -> rules, in creation order. */
interface ChainDraft {
  name: string;
  base?: { type: string; hook: string; prio: number; policy: string };
  rules: Array<{ expr: Expr[]; comment?: string }>;
}
interface TableDraft {
  family: string;
  name: string;
  chains: ChainDraft[];
}

const CT = (state: string): Expr => ({ match: { op: 'in', left: { ct: { key: 'state' } }, right: state } });
const ADMIN_RULES: Expr[][] = [
  [CT('invalid'), { drop: null }],
  [CT('established'), { accept: null }],
  [CT('related'), { accept: null }],
  [{ match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'lo' } }, { accept: null }],
  [{ match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 22 } }, { accept: null }],
  [
    { match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'virbr0' } },
    { counter: { packets: 0, bytes: 0 } },
    { accept: null },
  ],
  [{ counter: { packets: 3, bytes: 120 } }],
  [{ log: { prefix: 'admin: ' } }],
  [{ drop: null }],
  [{ accept: null }],
];
const COMMENTS = [
  undefined,
  undefined,
  undefined,
  TAG,
  TAG,
  `${TAG} net=default`,
  `${TAG} net=routed`,
  `${TAG} x`,
  'admin ssh',
  'KVMNFTD',
  `${TAG} `,
];

export interface LiveRecipe {
  /** Which tables exist to begin with. */
  adminTable: boolean;
  adminBaseChains: [boolean, boolean];
  adminRules: Array<{ chain: 0 | 1 | 2; expr: number; comment: number; first: boolean }>;
  foreignTables: Array<{ family: 'ip' | 'ip6' | 'inet'; name: string; rules: number[] }>;
  /** A previous kvmnftd run with these networks and this jump setting. */
  previous?: { specs: NetSpec[]; jump: 'first' | 'last' | 'none'; priority: number; sameAdmin: boolean } | undefined;
  /** Random edits after that: new chains (maybe in our table), rules, stray tagged jumps. */
  edits: Array<{
    op: 'chain' | 'rule' | 'jump' | 'delete' | 'basechain';
    table: number;
    chain: number;
    target: number;
    expr: number;
    comment: number;
    first: boolean;
    name: string;
  }>;
}

export const liveRecipeArb: fc.Arbitrary<LiveRecipe> = fc.record({
  adminTable: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  adminBaseChains: fc.tuple(
    fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  ),
  adminRules: fc.array(
    fc.record({
      chain: fc.constantFrom(0 as const, 1 as const, 2 as const),
      expr: fc.nat(ADMIN_RULES.length - 1),
      comment: fc.constantFrom(0, 0, 0, 8),
      first: fc.boolean(),
    }),
    { maxLength: 5 },
  ),
  foreignTables: fc.array(
    fc.record({
      family: fc.constantFrom('ip' as const, 'ip6' as const, 'inet' as const),
      name: fc.constantFrom('nat', 'filter', 'kvmnftd', 'libvirt_network', 'other'),
      rules: fc.array(fc.nat(ADMIN_RULES.length - 1), { maxLength: 3 }),
    }),
    { maxLength: 2 },
  ),
  previous: maybe(
    fc.record({
      specs: networksArb,
      jump: fc.constantFrom('first' as const, 'last' as const, 'none' as const),
      priority: fc.constantFrom(99, 99, 50, 100),
      sameAdmin: fc.boolean(),
    }),
    7,
  ),
  edits: fc.array(
    fc.record({
      op: fc.constantFrom(
        'chain' as const,
        'chain' as const,
        'rule' as const,
        'jump' as const,
        'jump' as const,
        'delete' as const,
        'basechain' as const,
      ),
      table: fc.nat(),
      chain: fc.nat(),
      target: fc.nat(),
      expr: fc.nat(ADMIN_RULES.length - 1),
      comment: fc.nat(COMMENTS.length - 1),
      first: fc.boolean(),
      name: fc.constantFrom(
        'kvmnftd_input',
        'kvmnftd_forward',
        'postrouting',
        'nat_virbr0',
        'nat_virbr1',
        'foreign',
        'admin_vm',
        'input',
        'forward',
      ),
    }),
    { maxLength: 8 },
  ),
});

/** Builds the live ruleset a recipe describes, as `nft -j list ruleset` would print it (handles unique per table). */
export function buildLive(recipe: LiveRecipe, config: Config): LiveDoc {
  const { family, table, inputChain, forwardChain } = config.filter;
  const drafts: TableDraft[] = [];
  if (recipe.adminTable) {
    const hooks: Array<[string, string, boolean]> = [
      [inputChain, 'input', recipe.adminBaseChains[0]],
      [forwardChain, 'forward', recipe.adminBaseChains[1]],
      ['output', 'output', true],
    ];
    const chains: ChainDraft[] = [];
    for (const [name, hook, present] of hooks) {
      if (present && !chains.some((c) => c.name === name))
        chains.push({
          name,
          base: { type: 'filter', hook, prio: 0, policy: hook === 'output' ? 'accept' : 'drop' },
          rules: [],
        });
    }
    for (const r of recipe.adminRules) {
      const chain = chains[r.chain % Math.max(chains.length, 1)];
      if (!chain) continue;
      const rule = {
        expr: structuredClone(ADMIN_RULES[r.expr]!),
        ...(COMMENTS[r.comment] === undefined ? {} : { comment: COMMENTS[r.comment]! }),
      };
      if (r.first) chain.rules.unshift(rule);
      else chain.rules.push(rule);
    }
    drafts.push({ family, name: table, chains });
  }
  for (const f of recipe.foreignTables) {
    if (drafts.some((d) => d.family === f.family && d.name === f.name)) continue;
    if (f.family === 'inet' && f.name === config.nat.table) continue; // that one is ours; built below
    const hook =
      f.name === 'nat'
        ? { type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' }
        : { type: 'filter', hook: 'forward', prio: 0, policy: 'accept' };
    drafts.push({
      family: f.family,
      name: f.name,
      chains: [
        { name: 'LIBVIRT_X', rules: f.rules.map((i) => ({ expr: structuredClone(ADMIN_RULES[i]!) })) },
        { name: 'BASE', base: hook, rules: [{ expr: [{ jump: { target: 'LIBVIRT_X' } }] }] },
      ],
    });
  }
  let doc = docOf(drafts);

  if (recipe.previous) {
    // What an earlier kvmnftd run left behind (maybe with other settings, maybe for another admin table).
    const prevConfig: Config = structuredClone(config);
    prevConfig.filter.jump = recipe.previous.jump;
    prevConfig.nat.priority = recipe.previous.priority;
    if (!recipe.previous.sameAdmin) prevConfig.filter.table = 'filter';
    if (!recipe.previous.sameAdmin) prevConfig.filter.family = 'inet';
    if (prevConfig.filter.family === 'inet' && prevConfig.filter.table === prevConfig.nat.table)
      prevConfig.nat.table = `${prevConfig.nat.table}_x`;
    const live = indexRuleset(doc);
    try {
      const after = applyBatch(live, plan(parseAll(recipe.previous.specs), prevConfig, live).batch);
      doc = docFromRuleset(after, doc);
    } catch {
      // A previous run that nft would have refused left nothing behind.
    }
  }

  const tables = draftsOf(doc);
  for (const e of recipe.edits) {
    // Edits go to the admin table, to our own table or to a foreign one.
    const own = tables.find((t) => t.family === 'inet' && t.name === config.nat.table);
    const admin = tables.find((t) => t.family === family && t.name === table);
    const candidates = [admin, own, ...tables].filter((t): t is TableDraft => t !== undefined);
    const t = candidates[e.table % Math.max(candidates.length, 1)];
    if (e.op === 'chain' || e.op === 'basechain') {
      if (e.op === 'chain' && !own && e.table % 3 === 1) {
        // our table, created by someone else
        tables.push({ family: 'inet', name: config.nat.table, chains: [{ name: e.name, rules: [] }] });
        continue;
      }
      if (!t || t.chains.some((c) => c.name === e.name)) continue;
      const base =
        e.op === 'basechain'
          ? { type: 'filter', hook: e.first ? 'input' : 'forward', prio: 5, policy: 'accept' }
          : undefined;
      t.chains.push({ name: e.name, ...(base ? { base } : {}), rules: [] });
      continue;
    }
    if (!t || t.chains.length === 0) continue;
    const ci = e.chain % t.chains.length;
    const chain = t.chains[ci]!;
    if (e.op === 'delete') {
      if (chain.rules.length > 0) chain.rules.splice(e.target % chain.rules.length, 1);
      continue;
    }
    let expr: Expr[];
    if (e.op === 'jump') {
      // Only to a regular chain created later than this one (nft refuses loops), or from a base chain.
      // A chain with NAT statements only from a nat base chain: nft refuses the load otherwise (EOPNOTSUPP).
      const natOk = chain.base?.type === 'nat';
      const targets = t.chains.filter(
        (c, i) =>
          c.base === undefined &&
          c !== chain &&
          (chain.base !== undefined || i > ci) &&
          (natOk || !JSON.stringify(c.rules).match(/"(masquerade|snat|dnat|redirect)"/)),
      );
      const target = targets[e.target % Math.max(targets.length, 1)];
      if (!target) continue;
      expr =
        e.expr % 3 === 0
          ? [{ counter: { packets: 0, bytes: 0 } }, { jump: { target: target.name } }]
          : [{ jump: { target: target.name } }];
    } else {
      expr = structuredClone(ADMIN_RULES[e.expr]!);
    }
    const comment = COMMENTS[e.comment];
    const rule = { expr, ...(comment === undefined ? {} : { comment }) };
    if (e.first) chain.rules.unshift(rule);
    else chain.rules.push(rule);
  }
  return docOf(tables);
}

function draftsOf(doc: LiveDoc): TableDraft[] {
  const r = indexRuleset(doc);
  return [...r.tables.values()].map((t) => ({
    family: t.family,
    name: t.name,
    chains: [...t.chains.values()].map((c) => ({
      name: c.name,
      ...(c.hook !== undefined
        ? { base: { type: c.type ?? 'filter', hook: c.hook, prio: c.prio ?? 0, policy: c.policy ?? 'accept' } }
        : {}),
      rules: c.rules.map((x) => ({ expr: x.expr, ...(x.comment === undefined ? {} : { comment: x.comment }) })),
    })),
  }));
}

function docFromRuleset(r: Ruleset, _before: LiveDoc): LiveDoc {
  return docOf(draftsOf({ nftables: rulesetObjects(r) }));
}

function rulesetObjects(r: Ruleset): Obj[] {
  const out: Obj[] = [];
  for (const t of r.tables.values()) {
    out.push({ table: { family: t.family, name: t.name, handle: t.handle } });
    for (const c of t.chains.values()) {
      const chain: Obj = { family: t.family, table: t.name, name: c.name, handle: c.handle };
      if (c.type !== undefined) chain['type'] = c.type;
      if (c.hook !== undefined) chain['hook'] = c.hook;
      if (c.prio !== undefined) chain['prio'] = c.prio;
      if (c.policy !== undefined) chain['policy'] = c.policy;
      out.push({ chain });
    }
    for (const c of t.chains.values()) {
      for (const rule of c.rules)
        out.push({
          rule: {
            family: t.family,
            table: t.name,
            chain: c.name,
            handle: rule.handle,
            expr: rule.expr,
            ...(rule.comment === undefined ? {} : { comment: rule.comment }),
          },
        });
    }
  }
  return out;
}

/** Tables, then all chains of each table (so jump targets exist), then rules; handles unique per table. */
function docOf(tables: TableDraft[]): LiveDoc {
  const out: Obj[] = [];
  tables.forEach((t, ti) => {
    let handle = 0;
    out.push({ table: { family: t.family, name: t.name, handle: ti + 1 } });
    for (const c of t.chains)
      out.push({ chain: { family: t.family, table: t.name, name: c.name, handle: ++handle, ...(c.base ?? {}) } });
    for (const c of t.chains) {
      for (const r of c.rules)
        out.push({
          rule: {
            family: t.family,
            table: t.name,
            chain: c.name,
            handle: ++handle,
            expr: r.expr as Json,
            ...(r.comment === undefined ? {} : { comment: r.comment }),
          },
        });
    }
  });
  return { nftables: out };
}

/** The same document as nft input: no handles (nft assigns them). */
export function loadableDoc(doc: LiveDoc): LiveDoc {
  const strip = (o: Obj): Obj => Object.fromEntries(Object.entries(o).filter(([k]) => k !== 'handle'));
  return {
    nftables: doc.nftables.map((item) =>
      Object.fromEntries(Object.entries(item).map(([k, v]) => [k, strip(v as Obj)])),
    ),
  };
}

// ---- ownership -----------------------------------------------------------------

const hasJump = (expr: readonly Expr[] | undefined): string | undefined => {
  for (const e of expr ?? []) {
    const j = e['jump'];
    if (typeof j === 'object' && j !== null && !Array.isArray(j) && typeof j['target'] === 'string') return j['target'];
  }
  return undefined;
};

/**
 * Every command of the batch must target something kvmnftd owns: its own
 * table `inet <nat.table>`; the chains kvmnftd_input/kvmnftd_forward of the
 * admin table; in the admin's configured base chains, only the insertion of
 * a jump to one of those chains commented "kvmnftd", or the deletion of a
 * rule that in `live` has the comment "kvmnftd" and jumps. Returns one line
 * per violation.
 */
export function ownershipViolations(batch: Batch, config: Config, live: Ruleset): string[] {
  const out: string[] = [];
  const own = (family: string, name: string): boolean => family === 'inet' && name === config.nat.table;
  const admin = (family: string, name: string): boolean =>
    family === config.filter.family && name === config.filter.table;
  const ownChains = new Set([OWN_INPUT_CHAIN, OWN_FORWARD_CHAIN]);
  const baseChains = new Set([config.filter.inputChain, config.filter.forwardChain]);
  for (const cmd of batch.nftables) {
    const verb = Object.keys(cmd)[0]!;
    const body = (cmd as unknown as Record<string, Record<string, Record<string, unknown>>>)[verb]!;
    const kind = Object.keys(body)[0]!;
    const o = body[kind]!;
    const text = JSON.stringify(cmd);
    if (
      !['add', 'insert', 'replace', 'flush', 'delete'].includes(verb) ||
      Object.keys(cmd).length !== 1 ||
      Object.keys(body).length !== 1
    ) {
      out.push(`unexpected command shape: ${text}`);
      continue;
    }
    if (kind === 'table') {
      if (!own(String(o['family']), String(o['name'])) || verb === 'flush' || verb === 'insert')
        out.push(`table not owned: ${text}`);
    } else if (kind === 'chain') {
      const f = String(o['family']);
      const t = String(o['table']);
      if (!own(f, t) && !(admin(f, t) && ownChains.has(String(o['name'])))) out.push(`chain not owned: ${text}`);
    } else if (kind === 'rule') {
      const f = String(o['family']);
      const t = String(o['table']);
      const chain = String(o['chain']);
      if (own(f, t) || (admin(f, t) && ownChains.has(chain))) continue;
      if (!admin(f, t) || !baseChains.has(chain)) {
        out.push(`rule outside owned objects: ${text}`);
      } else if (verb === 'add' || verb === 'insert') {
        const target = hasJump(o['expr'] as Expr[] | undefined);
        if (o['comment'] !== TAG || target === undefined || !ownChains.has(target))
          out.push(`rule added to an admin base chain is not a tagged jump to our chain: ${text}`);
      } else if (verb === 'delete') {
        const rule = live.tables
          .get(tableKey(f, t))
          ?.chains.get(chain)
          ?.rules.find((r) => r.handle === o['handle']);
        if (!rule) out.push(`deletes a handle that is not in the live chain: ${text}`);
        else if (rule.comment !== TAG || hasJump(rule.expr) === undefined)
          out.push(
            `deletes a rule that is not a tagged jump (comment ${JSON.stringify(rule.comment)}, ${ruleKey(rule)}): ${text}`,
          );
      } else {
        out.push(`unexpected rule command: ${text}`);
      }
    } else {
      out.push(`unexpected object kind ${kind}: ${text}`);
    }
  }
  return out;
}

/** Everything outside kvmnftd's objects, for before/after comparison. */
export function foreignState(r: Ruleset, config: Config): string[] {
  const out: string[] = [];
  const baseChains = new Set([config.filter.inputChain, config.filter.forwardChain]);
  for (const table of r.tables.values()) {
    // kvmnftd's own tables: inet (NAT, marks, forwards) and bridge (isolate_guests).
    if ((table.family === 'inet' || table.family === 'bridge') && table.name === config.nat.table) continue;
    const isAdmin = table.family === config.filter.family && table.name === config.filter.table;
    out.push(`table ${table.family} ${table.name}`);
    for (const chain of table.chains.values()) {
      if (isAdmin && (chain.name === OWN_INPUT_CHAIN || chain.name === OWN_FORWARD_CHAIN)) continue;
      out.push(
        `  chain ${chain.name} ${chain.type ?? ''} ${chain.hook ?? ''} ${chain.prio ?? ''} ${chain.policy ?? ''}`,
      );
      for (const rule of chain.rules) {
        if (isAdmin && baseChains.has(chain.name) && rule.comment === TAG && hasJump(rule.expr) !== undefined) continue;
        out.push(`    #${rule.handle} ${ruleKey(rule)}`);
      }
    }
  }
  return out;
}

// ---- whole planner cases ------------------------------------------------------

export interface PlanCase {
  specs: NetSpec[];
  doc: Record<string, unknown>;
  recipe: LiveRecipe;
  /** When set (and the live ruleset has a previous run), the current networks are that run's, edited. */
  derive?: Array<'keep' | 'drop' | 'break' | 'change'> | undefined;
}

export const planCaseArb: fc.Arbitrary<PlanCase> = fc.record({
  specs: networksArb,
  doc: validConfigDocArb,
  recipe: liveRecipeArb,
  derive: maybe(
    fc.array(fc.constantFrom('keep' as const, 'keep' as const, 'drop' as const, 'break' as const, 'change' as const), {
      maxLength: 5,
    }),
    5,
  ),
});

/** The planner's inputs for a case: parse results, the accepted config, the live ruleset document. */
export function planInputs(c: PlanCase): { inputs: NetworkParse[]; config: Config; live: LiveDoc } {
  const config = configFromObject(c.doc, 'fuzz.toml');
  const live = buildLive(c.recipe, config);
  let specs = c.specs;
  if (c.derive && c.recipe.previous) {
    specs = c.recipe.previous.specs.flatMap((spec, i) => {
      const how = c.derive![i] ?? 'keep';
      if (how === 'drop') return [];
      if (how === 'break') return [{ ...spec, bridges: [{ name: 'v*' }] }]; // same name, now invalid: its rules are kept
      if (how === 'change') return [{ ...spec, ips: [...spec.ips].reverse(), bridges: [{ name: `virbr${7 + i}` }] }];
      return [spec];
    });
    specs = [...specs, ...c.specs.slice(0, 1)];
  }
  return { inputs: parseAll(specs), config, live };
}
