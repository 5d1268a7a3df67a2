// libvirt network XML (as `virsh net-dumpxml` or GetXMLDesc prints it) to the
// typed model. Everything here is untrusted input on its way to nft: every
// value is validated, and a failure names the network and the field.
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { canonicalIp, cidrOf, ipFamily, netmaskToPrefix, parseIp, type Family } from '../net/ip.js';
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

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '',
  attributesGroupName: '$',
  parseAttributeValue: false,
  parseTagValue: false,
  processEntities: false,
  trimValues: true,
  isArray: (name) => ARRAY_ELEMENTS.has(name),
});

type XmlNode = { $?: Record<string, string>; '#text'?: string } & { [child: string]: XmlNode[] | unknown };

class FieldError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/** Network names end up in rule comments: keep them printable and quote-free. */
const NETWORK_NAME = /^[^\x00-\x20\x7f"'\\/]{1,200}$/;

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
  let doc: Record<string, unknown>;
  try {
    doc = parser.parse(xml) as Record<string, unknown>;
  } catch (err) {
    return invalid(origin, 'xml', `unreadable XML: ${(err as Error).message}`);
  }
  const root = first(doc['network']);
  if (!root) return invalid(origin, 'xml', 'no <network> root element');

  const rawName = text(first(root['name']));
  if (rawName === undefined || !NETWORK_NAME.test(rawName)) {
    return invalid(
      origin,
      'name',
      `<name> must be 1-200 printable characters without quotes, backslash, slash or spaces (got ${describe(rawName)})`,
    );
  }
  const name = rawName;
  try {
    return readNetwork(root, name);
  } catch (err) {
    if (err instanceof FieldError) return invalid(name, err.field, err.message);
    throw err;
  }
}

function readNetwork(root: XmlNode, name: string): NetworkParse {
  const forward = first(root['forward']);
  const rawMode = forward ? (attr(forward, 'mode') ?? 'nat') : 'isolated';
  if (IGNORED_MODES.has(rawMode)) return { kind: 'ignored', name, mode: rawMode };
  if (!['nat', 'route', 'open', 'isolated'].includes(rawMode) || (forward && rawMode === 'isolated')) {
    throw new FieldError('forward/@mode', `unknown forward mode ${describe(rawMode)}`);
  }
  const mode = rawMode as ForwardMode;

  const bridgeEl = first(root['bridge']);
  const bridge = bridgeEl ? attr(bridgeEl, 'name') : undefined;
  if (bridge === undefined)
    throw new FieldError('bridge/@name', 'missing bridge name (is the network defined but never started?)');
  if (!isSafeIfname(bridge)) throw new FieldError('bridge/@name', `${describe(bridge)} is not ${IFNAME_RULE}`);

  const network: Network = { name, bridge, mode, ips: readIps(root), dns: readDns(root) };
  const uuid = text(first(root['uuid']));
  if (uuid !== undefined) {
    if (!/^[0-9a-fA-F-]{32,36}$/.test(uuid)) throw new FieldError('uuid', `${describe(uuid)} is not a UUID`);
    network.uuid = uuid.toLowerCase();
  }
  const dev = forward ? attr(forward, 'dev') : undefined;
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
  const ipv6 = attr(nat, 'ipv6');
  if (ipv6 !== undefined && ipv6 !== 'yes' && ipv6 !== 'no')
    throw new FieldError('forward/nat/@ipv6', `must be "yes" or "no" (got ${describe(ipv6)})`);
  settings.ipv6 = ipv6 === 'yes';
  const address = first(nat['address']);
  if (address) {
    const range = readRange(address, 'forward/nat/address');
    if (ipFamily(range.start) !== 4)
      throw new FieldError('forward/nat/address/@start', 'the NAT address range must be IPv4');
    settings.address = range;
  }
  const port = first(nat['port']);
  if (port) settings.ports = readPorts(port);
  return settings;
}

function readPorts(port: XmlNode): PortRange {
  const start = toPort(attr(port, 'start'), 'forward/nat/port/@start');
  const end = toPort(attr(port, 'end'), 'forward/nat/port/@end');
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
  const start = address(attr(el, 'start'), `${field}/@start`);
  const end = address(attr(el, 'end') ?? attr(el, 'start'), `${field}/@end`);
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
    const addr = address(attr(el, 'address'), `${field}/@address`);
    const family = ipFamily(addr) as Family;
    const declared = attr(el, 'family');
    if (declared !== undefined && declared !== (family === 4 ? 'ipv4' : 'ipv6')) {
      throw new FieldError(`${field}/@family`, `family ${describe(declared)} does not match address ${addr}`);
    }
    const prefix = readPrefix(el, family, addr, field);
    const cidr = cidrOf(addr, prefix);
    if (!cidr) throw new FieldError(`${field}/@prefix`, `invalid prefix ${prefix} for ${addr}`);
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
  const prefix = attr(el, 'prefix');
  const netmask = attr(el, 'netmask');
  if (prefix !== undefined) {
    const max = family === 4 ? 32 : 128;
    // A /0 "subnet" would match every address: never a libvirt network.
    if (!/^\d{1,3}$/.test(prefix) || Number(prefix) < 1 || Number(prefix) > max)
      throw new FieldError(`${field}/@prefix`, `must be 1-${max} (got ${describe(prefix)})`);
    return Number(prefix);
  }
  if (netmask !== undefined) {
    if (family !== 4) throw new FieldError(`${field}/@netmask`, 'netmask is only valid for IPv4; use prefix');
    const fromMask = netmaskToPrefix(netmask);
    if (fromMask === undefined || fromMask === 0)
      throw new FieldError(`${field}/@netmask`, `${describe(netmask)} is not a contiguous, non-zero IPv4 netmask`);
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

function readDns(root: XmlNode): boolean {
  const dns = first(root['dns']);
  return !(dns && attr(dns, 'enable') === 'no');
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

function attr(el: XmlNode, key: string): string | undefined {
  const value = el.$?.[key];
  return typeof value === 'string' ? value : undefined;
}

function text(el: XmlNode | undefined): string | undefined {
  const value = el?.['#text'];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function describe(value: string | undefined): string {
  if (value === undefined) return 'nothing';
  return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
}
