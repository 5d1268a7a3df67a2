// libvirt network XML (as `virsh net-dumpxml` or GetXMLDesc prints it) to the
// typed model. Everything here is untrusted input on its way to nft: every
// value is validated, and a failure names the network and the field.
import { libvirtXmlParser, XMLValidator } from './xml-parser.js';
import {
  canonicalIp,
  cidrOf,
  cidrText,
  ipFamily,
  MIN_PREFIX,
  netmaskToPrefix,
  parseIp,
  reservedHit,
  reservedInRange,
  type Family,
  type ReservedHit,
} from '../net/ip.js';
import { IFNAME_RULE, isSafeIfname } from '../net/ifname.js';
import {
  DEFAULT_NAT_PORTS,
  type AddressRange,
  type ForwardMode,
  type Network,
  type NetworkIp,
  type NetworkParse,
  type PortRange,
} from './model.js';

const ARRAY_ELEMENTS = new Set([
  'ip',
  'range',
  'host',
  'interface',
  'address',
  'port',
  'forward',
  'bridge',
  'nat',
  'dhcp',
  'tftp',
  'dns',
  'name',
  'uuid',
]);

const parser = libvirtXmlParser((name) => ARRAY_ELEMENTS.has(name));

type XmlNode = { $?: Record<string, string>; '#text'?: string } & { [child: string]: unknown };

class FieldError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Network names end up in rule comments and log lines: printable, no quotes,
 * backslash, slash or space, and nothing that changes how text around it
 * reads. Each entry: the characters, and what to call them in the error.
 */
const NAME_FORBIDDEN: ReadonlyArray<[RegExp, string]> = [
  [/\p{Cc}/u, 'a control character'],
  [/[\u202a-\u202e\u2066-\u2069]/u, 'a bidi override character'],
  [/[\u2028\u2029]/u, 'a line or paragraph separator'],
  [/[ "'\\/]/u, 'a space, quote, backslash or slash'],
];
const NAME_MAX = 200;

/** Why a (decoded) network name is refused, or undefined when it is fine. */
export function networkNameProblem(name: string): string | undefined {
  const length = [...name].length;
  if (length === 0 || length > NAME_MAX) return `<name> must be 1-${NAME_MAX} characters (got ${length})`;
  for (const [pattern, what] of NAME_FORBIDDEN) {
    const found = pattern.exec(name);
    if (found) {
      const code = found[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
      return `<name> ${describe(name)} contains ${what} (U+${code})`;
    }
  }
  return undefined;
}

const IGNORED_MODES = new Set(['bridge', 'private', 'vepa', 'passthrough', 'hostdev']);

export function parseNetworkXml(xml: string, origin = 'network'): NetworkParse {
  const check = XMLValidator.validate(xml);
  if (check !== true) {
    const { line, col, msg } = check.err;
    return invalid(origin, 'xml', `malformed XML at line ${line}, column ${col}: ${msg}`);
  }
  // libvirt never writes a DTD; refusing one rules out entity tricks entirely.
  if (/<!DOCTYPE|<!ENTITY/i.test(xml))
    return invalid(origin, 'xml', 'a DOCTYPE or ENTITY declaration is not allowed in network XML');
  // The XML parser merges CDATA into text, where entities would then be decoded
  // that CDATA keeps literal; libvirt never writes CDATA, so none is read.
  if (xml.includes('<![CDATA['))
    return invalid(origin, 'xml', 'a CDATA section is not allowed in network XML (libvirt never writes one)');
  let doc: Record<string, unknown>;
  try {
    doc = parser.parse(xml) as Record<string, unknown>;
  } catch (err) {
    return invalid(origin, 'xml', `unreadable XML: ${(err as Error).message}`);
  }
  const root = first(doc['network']);
  if (!root) return invalid(origin, 'xml', 'no <network> root element');

  const name = readName(root);
  if (typeof name !== 'string') return invalid(origin, 'name', name.problem);
  try {
    return readNetwork(root, name);
  } catch (err) {
    if (err instanceof FieldError) return invalid(name, err.field, err.message);
    throw err;
  }
}

/** The network's name, entities decoded, or why it is refused. */
function readName(root: XmlNode): string | { problem: string } {
  let name: string | undefined;
  try {
    name = text(first(root['name']), 'name');
  } catch (err) {
    if (err instanceof FieldError) return { problem: err.message };
    throw err;
  }
  const problem = name === undefined ? 'no <name>' : networkNameProblem(name);
  return problem === undefined && name !== undefined ? name : { problem: problem ?? 'no <name>' };
}

function readNetwork(root: XmlNode, name: string): NetworkParse {
  const forward = first(root['forward']);
  const rawMode = forward ? (attr(forward, 'mode', 'forward') ?? 'nat') : 'isolated';
  if (IGNORED_MODES.has(rawMode)) return { kind: 'ignored', name, mode: rawMode };
  if (!['nat', 'route', 'open', 'isolated'].includes(rawMode) || (forward && rawMode === 'isolated')) {
    throw new FieldError('forward/@mode', `unknown forward mode ${describe(rawMode)}`);
  }
  const mode = rawMode as ForwardMode;

  const bridgeEl = first(root['bridge']);
  const bridge = bridgeEl ? attr(bridgeEl, 'name', 'bridge') : undefined;
  if (bridge === undefined)
    throw new FieldError('bridge/@name', 'missing bridge name (is the network defined but never started?)');
  if (!isSafeIfname(bridge)) throw new FieldError('bridge/@name', `${describe(bridge)} is not ${IFNAME_RULE}`);

  const network: Network = { name, bridge, mode, ips: readIps(root), dns: readDns(root) };
  const uuid = text(first(root['uuid']), 'uuid');
  if (uuid !== undefined) {
    if (!/^[0-9a-fA-F-]{32,36}$/.test(uuid)) throw new FieldError('uuid', `${describe(uuid)} is not a UUID`);
    network.uuid = uuid.toLowerCase();
  }
  const dev = forward ? attr(forward, 'dev', 'forward') : undefined;
  if (dev !== undefined && mode !== 'isolated') {
    if (!isSafeIfname(dev)) throw new FieldError('forward/@dev', `${describe(dev)} is not ${IFNAME_RULE}`);
    network.forwardDev = dev;
  }
  if (mode === 'nat') network.nat = readNat(forward ? first(forward['nat']) : undefined);
  return { kind: 'ok', network };
}

function readNat(nat: XmlNode | undefined): Network['nat'] {
  const settings: NonNullable<Network['nat']> = { ports: { ...DEFAULT_NAT_PORTS }, ipv6: false };
  if (!nat) return settings;
  const ipv6 = attr(nat, 'ipv6', 'forward/nat');
  if (ipv6 !== undefined && ipv6 !== 'yes' && ipv6 !== 'no')
    throw new FieldError('forward/nat/@ipv6', `must be "yes" or "no" (got ${describe(ipv6)})`);
  settings.ipv6 = ipv6 === 'yes';
  const address = first(nat['address']);
  if (address) {
    const range = readRange(address, 'forward/nat/address');
    if (ipFamily(range.start) !== 4)
      throw new FieldError('forward/nat/address/@start', 'the NAT address range must be IPv4');
    const reserved = reservedInRange(range.start, range.end);
    if (reserved) {
      const field = reserved.where === 'inside' ? 'forward/nat/address' : `forward/nat/address/@${reserved.where}`;
      throw new FieldError(
        field,
        `the NAT address range ${range.start}-${range.end} ${reservedText(reserved, 'overlaps')}: not an address to translate to`,
      );
    }
    settings.address = range;
  }
  const port = first(nat['port']);
  if (port) settings.ports = readPorts(port);
  return settings;
}

function readPorts(port: XmlNode): PortRange {
  const start = toPort(attr(port, 'start', 'forward/nat/port'), 'forward/nat/port/@start');
  const end = toPort(attr(port, 'end', 'forward/nat/port'), 'forward/nat/port/@end');
  if (start > end) throw new FieldError('forward/nat/port', `start ${start} is after end ${end}`);
  return { start, end };
}

function toPort(value: string | undefined, field: string): number {
  if (value === undefined || !/^\d{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535) {
    throw new FieldError(field, `must be a port number 1-65535 (got ${describe(value)})`);
  }
  return Number(value);
}

function readRange(el: XmlNode, field: string): AddressRange {
  const start = address(attr(el, 'start', field), `${field}/@start`);
  const end = address(attr(el, 'end', field) ?? attr(el, 'start', field), `${field}/@end`);
  const a = parseIp(start);
  const b = parseIp(end);
  if (!a || !b || a.family !== b.family)
    throw new FieldError(field, 'start and end must be addresses of the same family');
  if (a.value > b.value) throw new FieldError(field, `start ${start} is after end ${end}`);
  return { start, end };
}

function readIps(root: XmlNode): NetworkIp[] {
  return asArray(root['ip']).map((el, index) => {
    const field = `ip[${index + 1}]`;
    const addr = address(attr(el, 'address', field), `${field}/@address`);
    const family = ipFamily(addr) as Family;
    const declared = attr(el, 'family', field);
    if (declared !== undefined && declared !== (family === 4 ? 'ipv4' : 'ipv6')) {
      throw new FieldError(`${field}/@family`, `family ${describe(declared)} does not match address ${addr}`);
    }
    const prefix = readPrefix(el, family, addr, field);
    const cidr = cidrOf(addr, prefix);
    if (!cidr) throw new FieldError(`${field}/@prefix`, `invalid prefix ${prefix} for ${addr}`);
    const reserved = reservedHit(addr, prefix);
    if (reserved) {
      const hint = reserved.kind.startsWith('IPv4-') ? ' (an IPv4 subnet is an <ip> of its own)' : '';
      throw new FieldError(
        `${field}/@address`,
        reserved.address
          ? `${addr} is ${reservedText(reserved, 'a')}, not a network for guests${hint}`
          : `the network ${cidrText(cidr)} ${reservedText(reserved, 'overlaps')}${hint}`,
      );
    }
    const dhcp = first(el['dhcp']);
    const dhcpRanges = dhcp ? asArray(dhcp['range']).map((r, i) => readRange(r, `${field}/dhcp/range[${i + 1}]`)) : [];
    for (const [i, r] of dhcpRanges.entries()) {
      if (ipFamily(r.start) !== family)
        throw new FieldError(`${field}/dhcp/range[${i + 1}]`, 'range family differs from the <ip> address');
    }
    return { address: addr, cidr, dhcpRanges, tftp: first(el['tftp']) !== undefined };
  });
}

function readPrefix(el: XmlNode, family: Family, addr: string, field: string): number {
  const prefix = attr(el, 'prefix', field);
  const netmask = attr(el, 'netmask', field);
  if (prefix !== undefined) {
    const [min, max] = [MIN_PREFIX[family], family === 4 ? 32 : 128];
    // A /0 "subnet" would match every address, a /4 most of them: never a libvirt network.
    if (!/^\d{1,3}$/.test(prefix) || Number(prefix) < min || Number(prefix) > max)
      throw new FieldError(`${field}/@prefix`, `must be ${min}-${max} for IPv${family} (got ${describe(prefix)})`);
    return Number(prefix);
  }
  if (netmask !== undefined) {
    if (family !== 4) throw new FieldError(`${field}/@netmask`, 'netmask is only valid for IPv4; use prefix');
    const fromMask = netmaskToPrefix(netmask);
    if (fromMask === undefined || fromMask === 0)
      throw new FieldError(`${field}/@netmask`, `${describe(netmask)} is not a contiguous, non-zero IPv4 netmask`);
    if (fromMask < MIN_PREFIX[4])
      throw new FieldError(`${field}/@netmask`, `${describe(netmask)} is /${fromMask}, wider than /${MIN_PREFIX[4]}`);
    return fromMask;
  }
  if (family === 6) return 64; // libvirt's default for IPv6
  // libvirt falls back to the classful prefix for IPv4 without netmask/prefix.
  const firstOctet = Number(addr.split('.')[0]);
  if (firstOctet < 128) return 8;
  if (firstOctet < 192) return 16;
  if (firstOctet < 224) return 24;
  throw new FieldError(
    `${field}/@address`,
    `${addr} has no netmask or prefix and is not a unicast class A/B/C address`,
  );
}

/** "a loopback address (127.0.0.0/8)", "the unspecified address ::", "overlaps the multicast addresses ff00::/8"... */
function reservedText(hit: ReservedHit, form: 'a' | 'overlaps'): string {
  const single = !hit.block.includes('/');
  if (form === 'overlaps')
    return single ? `contains the ${hit.kind} address ${hit.block}` : `overlaps the ${hit.kind} addresses ${hit.block}`;
  if (single) return `the ${hit.kind} address`;
  return `${/^[aeiouIU]/.test(hit.kind) ? 'an' : 'a'} ${hit.kind} address (${hit.block})`;
}

function readDns(root: XmlNode): boolean {
  const dns = first(root['dns']);
  return !(dns && attr(dns, 'enable', 'dns') === 'no');
}

function address(value: string | undefined, field: string): string {
  const canonical = value === undefined ? undefined : canonicalIp(value);
  if (canonical === undefined) throw new FieldError(field, `must be an IPv4 or IPv6 address (got ${describe(value)})`);
  return canonical;
}

function invalid(name: string, field: string, message: string): NetworkParse {
  return { kind: 'invalid', name, field, message };
}

function asArray(value: unknown): XmlNode[] {
  return Array.isArray(value) ? (value.filter((v) => typeof v === 'object' && v !== null) as XmlNode[]) : [];
}

function first(value: unknown): XmlNode | undefined {
  if (Array.isArray(value)) {
    const head: unknown = value[0];
    if (typeof head === 'string') return { '#text': head };
    return typeof head === 'object' && head !== null ? (head as XmlNode) : undefined;
  }
  return typeof value === 'object' && value !== null ? (value as XmlNode) : undefined;
}

/** An attribute's value, entities decoded; `at` names the element for the error. */
function attr(el: XmlNode, key: string, at: string): string | undefined {
  const value = el.$?.[key];
  return typeof value === 'string' ? decoded(value, `${at}/@${key}`) : undefined;
}

/** An element's text, entities decoded; `field` names it for the error. */
function text(el: XmlNode | undefined, field: string): string | undefined {
  const value = el?.['#text'];
  return typeof value === 'string' && value !== '' ? decoded(value, field) : undefined;
}

function decoded(raw: string, field: string): string {
  const result = decodeXmlText(raw);
  if (typeof result !== 'string') throw new FieldError(field, result.error);
  return result;
}

const PREDEFINED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
const REFERENCE = /&(?:([a-z]+)|#([0-9]{1,7})|#x([0-9a-fA-F]{1,6}));/y;

/** XML 1.0's Char production: what a character reference may stand for. */
function isXmlChar(code: number): boolean {
  return (
    code === 0x9 ||
    code === 0xa ||
    code === 0xd ||
    (code >= 0x20 && code <= 0xd7ff) ||
    (code >= 0xe000 && code <= 0xfffd) ||
    (code >= 0x10000 && code <= 0x10ffff)
  );
}

/**
 * Decodes the five predefined XML entities and numeric character references,
 * as libvirt's XML parser does (the XML parser here leaves them alone, so that
 * no other entity is ever expanded). Anything else after `&` is an error:
 * libvirt's XML never declares entities (a DOCTYPE is refused outright).
 */
export function decodeXmlText(raw: string): string | { error: string } {
  if (!raw.includes('&')) return raw;
  let out = '';
  let at = 0;
  for (let amp = raw.indexOf('&'); amp >= 0; amp = raw.indexOf('&', at)) {
    out += raw.slice(at, amp);
    REFERENCE.lastIndex = amp;
    const m = REFERENCE.exec(raw);
    const [whole = '', entity, decimal, hex] = m ?? [];
    if (entity !== undefined) {
      const char = PREDEFINED[entity];
      if (char === undefined)
        return {
          error: `undefined entity ${describe(whole)}: only &amp; &lt; &gt; &quot; &apos; and character references are allowed`,
        };
      out += char;
    } else if (decimal !== undefined || hex !== undefined) {
      const code = decimal !== undefined ? Number(decimal) : parseInt(hex!, 16);
      if (!isXmlChar(code)) return { error: `${describe(whole)} is not a character XML allows` };
      out += String.fromCodePoint(code);
    } else {
      return { error: `a "&" that starts no entity or character reference in ${describe(raw)}` };
    }
    at = amp + whole.length;
  }
  return out + raw.slice(at);
}

/** Characters that would not show, or would reorder the text around them, in a log line. */
const INVISIBLE = /[\p{Cc}\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/gu;

/** A value quoted for an error message: cut to 40 characters, invisible characters as \\uXXXX. */
function describe(value: string | undefined): string {
  if (value === undefined) return 'nothing';
  const chars = [...value];
  const cut = chars.length > 40 ? `${chars.slice(0, 40).join('')}...` : value;
  return JSON.stringify(cut).replace(INVISIBLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
