// Port forwards carried in a libvirt domain's <metadata> (issue 13, "the
// libvirt-native way"), so that a forward lives with its VM. Pure: the running
// domains' XML, the config, the active networks and the host's listening
// sockets in; the forwards that may apply, and every entry left out with the
// reason, out. The planner treats the forwards exactly like `[[port_forward]]`
// entries (guest-facts.ts: forwardTargetsFrom); doctor reports the rest.
//
// The layout, under METADATA_NAMESPACE (one element per namespace and domain:
// libvirt replaces it whole on every `virsh metadata --set`):
//
//   <metadata>
//     <kvmnftd:forwards xmlns:kvmnftd="https://www.npmjs.com/package/kvmnftd/xmlns/port-forwards/1">
//       <forward proto="tcp" host_port="2222" to_port="22"/>
//       <forward proto="udp" host_port="8000-8010" from="198.51.100.0/24 2001:db8::/32"
//                host_address="198.51.100.1" network="default" mac="52:54:00:12:34:56"/>
//     </kvmnftd:forwards>
//   </metadata>
//
// Each attribute but `network` and `mac` is the `[[port_forward]]` key of the
// same name, read with the config's own kinds (schema.ts FORWARD_FIELDS) and
// checked with its own rules (port-forward.ts forwardProblems); `from` lists
// its sources separated by blanks. `network` and `to` come from the domain:
// `to` is the MAC of the chosen interface, `network` its libvirt network.
// Which interface: the one whose MAC is `mac`, else the only one on the
// libvirt network `network`, else the domain's only interface on an active
// nat or route network. None or several: the entry is ignored, with why.
//
// What the admin allows (`[metadata_forwards] host_ports`, default none =
// off), and what is never a metadata forward's: a host port a config forward
// takes (same protocol, overlapping host address), a port a host socket
// listens on (loopback-only sockets aside: a forward never DNATs a connection
// to 127.0.0.0/8 or ::1), and a port two metadata entries both claim: every
// entry of such a conflict is ignored (none wins, whatever the domains' names
// or their start order, so that no one can take over a port another guest
// uses by naming a domain cleverly or starting it first).
import type { Config } from '../config/config.js';
import { libvirtXmlParser } from './xml-parser.js';
import { ConfigError } from '../config/errors.js';
import { portRangeText, table, type PortRange } from '../config/kinds.js';
import {
  forwardProblems,
  forwardsOverlap,
  hostSideText,
  targetRef,
  type PortForwardConfig,
} from '../config/port-forward.js';
import { FORWARD_FIELDS } from '../config/schema.js';
import { shadowedListeners, type HostListener } from '../host/listeners.js';
import { domainNetworkInterfaces, type GuestInterface } from './forward-targets.js';
import type { Network } from './model.js';

/**
 * The XML namespace of kvmnftd's domain metadata: port forwards, layout version 1. Stable: a domain keeps
 * its forwards across kvmnftd upgrades; an incompatible layout would get a new URI.
 */
export const METADATA_NAMESPACE = 'https://www.npmjs.com/package/kvmnftd/xmlns/port-forwards/1';
/** Every version of the layout shares this stem: another version's element is reported, not silently skipped. */
const NAMESPACE_STEM = METADATA_NAMESPACE.slice(0, METADATA_NAMESPACE.lastIndexOf('/') + 1);
/** The prefix the docs use (`virsh metadata ... --key kvmnftd`); any prefix bound to the namespace works. */
export const METADATA_KEY = 'kvmnftd';
/** The element under the namespace, and its children. */
export const METADATA_ROOT = 'forwards';
export const METADATA_ENTRY = 'forward';
/** Attributes that choose the domain's interface (not config keys). */
export const INTERFACE_ATTRIBUTES = ['network', 'mac'] as const;
/** More entries than this in one domain are ignored: the XML's author is not necessarily root. */
export const MAX_ENTRIES_PER_DOMAIN = 64;

/** A forward from a domain's metadata: the config's shape, `network` and `to` (a MAC) filled in from the domain. */
export interface MetadataForward {
  origin: { kind: 'metadata'; domain: string; entry: number };
  forward: PortForwardConfig;
}

/** An entry (or, entry undefined, a whole metadata element) that does not apply, and why. */
export interface IgnoredMetadata {
  domain: string;
  entry: number | undefined;
  reason: string;
}

export interface MetadataForwards {
  /** By domain name, then entry: the same input gives the same order. */
  forwards: MetadataForward[];
  ignored: IgnoredMetadata[];
}

/** How an ignored entry is named: `domain web1 metadata forward[0]` (the name forwards get in notes). */
export function ignoredName(i: Pick<IgnoredMetadata, 'domain' | 'entry'>): string {
  return i.entry === undefined ? `domain ${i.domain} metadata` : `domain ${i.domain} metadata forward[${i.entry}]`;
}

/**
 * The forwards the running domains' metadata carries that may apply, and what was left out and why.
 * `networks`: the active networks (the default interface is the domain's only one on a nat or route network);
 * `listeners`: the host's listening sockets (host/listeners.ts); undefined when they could not be read, which
 * leaves every metadata forward off (a forward must never take a host service's port unseen).
 */
export function metadataForwards(
  domains: ReadonlyArray<{ name: string; xml: string }>,
  config: Config,
  networks: readonly Network[],
  listeners: readonly HostListener[] | undefined,
): MetadataForwards {
  const ignored: IgnoredMetadata[] = [];
  const candidates: MetadataForward[] = [];
  const sorted = [...domains].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const d of sorted) {
    const read = readDomain(d.name, d.xml, networks);
    ignored.push(...read.ignored);
    for (const f of read.forwards) {
      const why = notAllowed(f.forward, config, listeners);
      if (why === undefined) candidates.push(f);
      else ignored.push({ domain: d.name, entry: f.origin.entry, reason: why });
    }
  }
  const forwards: MetadataForward[] = [];
  for (const f of candidates) {
    const others = candidates.filter((o) => o !== f && forwardsOverlap(o.forward, f.forward));
    if (others.length === 0) forwards.push(f);
    else
      ignored.push({
        domain: f.origin.domain,
        entry: f.origin.entry,
        reason:
          `${hostSideText(f.forward)} is also claimed by ${others.map((o) => ignoredName(o.origin)).join(', ')}: ` +
          'metadata forwards that take the same host port all stay off (none wins)',
      });
  }
  ignored.sort((a, b) => compare(a, b));
  return { forwards, ignored };
}

function compare(a: IgnoredMetadata, b: IgnoredMetadata): number {
  if (a.domain !== b.domain) return a.domain < b.domain ? -1 : 1;
  return (a.entry ?? -1) - (b.entry ?? -1);
}

// ---- reading one domain --------------------------------------------------------

const parser = libvirtXmlParser();

type Node = { $?: Record<string, string> } & { [child: string]: unknown };

const asArray = (v: unknown): unknown[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const asNode = (v: unknown): Node => (typeof v === 'object' && v !== null ? (v as Node) : {});

/** `prefix:local` -> [prefix, local]; no prefix: ['', name]. */
function qname(name: string): [string, string] {
  const colon = name.indexOf(':');
  return colon < 0 ? ['', name] : [name.slice(0, colon), name.slice(colon + 1)];
}

/** The namespace a prefix is bound to at `node`, looking at it and then at its ancestors. */
function namespaceOf(prefix: string, ...scopes: Node[]): string | undefined {
  const attr = prefix === '' ? 'xmlns' : `xmlns:${prefix}`;
  return scopes.map((n) => n.$?.[attr]).find((uri) => uri !== undefined);
}

/** The entries of one domain's metadata element, each read and validated, with its interface chosen. */
function readDomain(
  domain: string,
  xml: string,
  networks: readonly Network[],
): { forwards: MetadataForward[]; ignored: IgnoredMetadata[] } {
  const ignored: IgnoredMetadata[] = [];
  const whole = (reason: string): void => void ignored.push({ domain, entry: undefined, reason });
  let doc: { domain?: unknown };
  try {
    doc = parser.parse(xml) as { domain?: unknown };
  } catch (err) {
    whole(`its XML does not parse: ${(err as Error).message.split('\n')[0]}`);
    return { forwards: [], ignored };
  }
  const domainNode = asNode(doc.domain);
  const metadata = asNode(domainNode['metadata']);
  const roots: Array<{ name: string; node: Node }> = [];
  for (const [name, value] of Object.entries(metadata)) {
    if (name === '$' || name === '#text') continue;
    for (const v of asArray(value)) {
      const node = asNode(v);
      const uri = namespaceOf(qname(name)[0], node, metadata, domainNode);
      if (uri === METADATA_NAMESPACE) roots.push({ name, node });
      else if (uri?.startsWith(NAMESPACE_STEM))
        whole(
          `its element <${name}> is in namespace ${uri}, a layout this kvmnftd does not know (${METADATA_NAMESPACE})`,
        );
    }
  }
  if (roots.length === 0) return { forwards: [], ignored };
  if (roots.length > 1) {
    whole(`${roots.length} elements in namespace ${METADATA_NAMESPACE}: libvirt keeps one; set it again`);
    return { forwards: [], ignored };
  }
  const root = roots[0]!;
  const [prefix, local] = qname(root.name);
  if (local !== METADATA_ROOT) {
    whole(`its element in namespace ${METADATA_NAMESPACE} is <${local}>, not <${METADATA_ROOT}>`);
    return { forwards: [], ignored };
  }
  const entries: Node[] = [];
  for (const [name, value] of Object.entries(root.node)) {
    if (name === '$' || name === '#text') continue;
    const [p, l] = qname(name);
    if (l === METADATA_ENTRY && (p === '' || p === prefix)) entries.push(...asArray(value).map(asNode));
    else whole(`<${name}> inside <${root.name}> is not a <${METADATA_ENTRY}> of this namespace: left out`);
  }
  // Entries are numbered in document order (written both as <forward> and <PREFIX:forward>, each group in turn).
  const interfaces = domainNetworkInterfaces(xml);
  const forwards: MetadataForward[] = [];
  entries.forEach((node, entry) => {
    if (entry === MAX_ENTRIES_PER_DOMAIN)
      whole(`more than ${MAX_ENTRIES_PER_DOMAIN} <${METADATA_ENTRY}> entries: the rest are left out`);
    if (entry >= MAX_ENTRIES_PER_DOMAIN) return;
    const read = readEntry(node, interfaces, networks);
    if (typeof read === 'string') ignored.push({ domain, entry, reason: read });
    else forwards.push({ origin: { kind: 'metadata', domain, entry }, forward: read });
  });
  return { forwards, ignored };
}

// ---- one entry ---------------------------------------------------------------------

type ForwardKey = keyof typeof FORWARD_FIELDS;

const port = (text: string): unknown => (/^[0-9]{1,5}$/.test(text) ? Number(text) : text);

/** An attribute's text as the TOML value the config's kind reads (XML has only text). */
const FROM_XML: { [K in ForwardKey]: (text: string) => unknown } = {
  proto: (t) => t,
  host_port: port,
  to_port: port,
  from: (t) => t.split(/\s+/).filter((s) => s !== ''),
  host_address: (t) => t,
};

const FORWARD_KEYS = Object.keys(FORWARD_FIELDS) as ForwardKey[];
const ENTRY = table(FORWARD_FIELDS);

/** One `<forward>`: the forward, or why it is ignored. */
function readEntry(
  node: Node,
  interfaces: readonly GuestInterface[],
  networks: readonly Network[],
): PortForwardConfig | string {
  const children = Object.keys(node).filter((k) => k !== '$' && k !== '#text');
  if (children.length > 0) return `<${children[0]}> inside <${METADATA_ENTRY}>: it takes attributes only`;
  const attrs = node.$ ?? {};
  const values: Record<string, unknown> = {};
  for (const [name, text] of Object.entries(attrs)) {
    if (name === 'xmlns' || name.startsWith('xmlns:')) continue;
    if ((INTERFACE_ATTRIBUTES as readonly string[]).includes(name)) continue;
    if (!(FORWARD_KEYS as string[]).includes(name))
      return `unknown attribute ${name}; known: ${[...FORWARD_KEYS, ...INTERFACE_ATTRIBUTES].join(', ')}`;
    values[name] = FROM_XML[name as ForwardKey](text);
  }
  let keys: ReturnType<typeof ENTRY.read>;
  try {
    keys = ENTRY.read(values, { file: '', key: '' });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return `${err.key}: ${err.expected}`;
  }
  const iface = chooseInterface(attrs['network'], attrs['mac'], interfaces, networks);
  if (typeof iface === 'string') return iface;
  const forward: PortForwardConfig = { network: iface.network, to: iface.mac, ...keys };
  const broken = forwardProblems(forward);
  return broken.length > 0 ? broken.map((b) => `${b.key}: ${b.message}`).join('; ') : forward;
}

/** The interface an entry forwards to, or why none can be chosen. */
function chooseInterface(
  network: string | undefined,
  mac: string | undefined,
  interfaces: readonly GuestInterface[],
  networks: readonly Network[],
): GuestInterface | string {
  const list = (ifaces: readonly GuestInterface[]): string =>
    ifaces.map((i) => `${i.mac} on ${i.network}`).join(', ') || 'none';
  if (mac !== undefined) {
    const ref = targetRef(mac);
    if (ref.kind !== 'mac') return `mac ${JSON.stringify(mac)} is not a MAC address`;
    const iface = interfaces.find((i) => i.mac === ref.mac);
    if (!iface) return `the domain has no interface with MAC ${ref.mac} on a libvirt network (${list(interfaces)})`;
    if (network !== undefined && iface.network !== network)
      return `the interface with MAC ${ref.mac} is on network ${iface.network}, not ${network}`;
    return iface;
  }
  if (network !== undefined) {
    const on = interfaces.filter((i) => i.network === network);
    if (on.length === 1) return on[0]!;
    return on.length === 0
      ? `the domain has no interface on network ${network} (${list(interfaces)})`
      : `the domain has ${on.length} interfaces on network ${network} (${list(on)}): say which with mac=`;
  }
  const forwarding = interfaces.filter((i) =>
    networks.some((n) => n.name === i.network && (n.mode === 'nat' || n.mode === 'route')),
  );
  if (forwarding.length === 1) return forwarding[0]!;
  return forwarding.length === 0
    ? `the domain has no interface on an active nat or route network (${list(interfaces)})`
    : `the domain has ${forwarding.length} interfaces on nat or route networks (${list(forwarding)}): ` +
        'say which with network= or mac=';
}

// ---- what the admin allows ------------------------------------------------------------

/** Why a valid metadata forward may not have its host port; undefined when it may. */
function notAllowed(
  f: PortForwardConfig,
  config: Config,
  listeners: readonly HostListener[] | undefined,
): string | undefined {
  const allowed = config.metadataForwards.hostPorts;
  if (allowed.length === 0) return 'metadata forwards are off ([metadata_forwards] host_ports is empty)';
  if (!covered(f.hostPort, allowed))
    return (
      `host_port ${portRangeText(f.hostPort)} is not inside [metadata_forwards] host_ports ` +
      `(${allowed.map(portRangeText).join(', ')})`
    );
  const i = config.portForward.findIndex((c) => forwardsOverlap(c, f));
  if (i >= 0) return `${hostSideText(f)} is taken by port_forward[${i}] (${hostSideText(config.portForward[i]!)})`;
  if (listeners === undefined)
    return "the host's listening sockets could not be read (/proc/net): no metadata forward until they can";
  const socket = shadowedListeners(listeners, f)[0];
  if (socket)
    return (
      `a host socket listens on ${socket.proto} ${socketText(socket)}: ` + 'the forward would take its connections away'
    );
  return undefined;
}

/** Whether every port of `range` is in one of `allowed` (ranges may touch or overlap). */
export function covered(range: PortRange, allowed: readonly PortRange[]): boolean {
  let next = range.start;
  for (const r of [...allowed].sort((a, b) => a.start - b.start)) {
    if (r.start > next) break;
    if (r.end >= next) next = r.end + 1;
    if (next > range.end) return true;
  }
  return next > range.end;
}

const socketText = (l: HostListener): string =>
  l.address.includes(':') ? `[${l.address}]:${l.port}` : `${l.address}:${l.port}`;
