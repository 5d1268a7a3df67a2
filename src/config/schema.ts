// Every key of kvmnftd.toml, once: its kind (type and allowed values), its
// default and its documentation. The loader (load.ts) validates from this
// table, docs/configuration.md and kvmnftd.toml(5) are generated from it
// (`npm run docs:config`), and test/unit/docs-config.test.ts fails when they
// differ. Adding a key here is the whole change to the config; texts use the
// markup described in kinds.ts.
import { CHAIN_REF_EXPECTED, parseChainRef, refusedChainRef } from './chain-ref.js';
import type { Config } from './config.js';
import {
  bool,
  integer,
  key,
  list,
  named,
  oneOf,
  optionalKey,
  portRange,
  section,
  table,
  tables,
  text,
  type Glossary,
} from './kinds.js';
import { ipFamily } from '../net/ip.js';
import { portForwardProblems, PROTOCOLS, sourceCidr, validTarget, type Broken } from './port-forward.js';
import { EGRESS_SYNTAX, SERVICE_SYNTAX } from './egress.js';
import { networkPolicyProblems } from './network-policy.js';

/** nft object names: an identifier nft's parser accepts unquoted, and short. */
export const NFT_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

const NFT_NAME_TERM: Glossary = {
  term: 'nft name',
  meaning: `An "nft name" is a name matching \`${NFT_NAME.source}\`.`,
};

function nftName(what: string) {
  return text({
    expected: `${what}: a name matching ${NFT_NAME.source}`,
    valid: (s) => NFT_NAME.test(s),
    docType: NFT_NAME_TERM.term,
    glossary: NFT_NAME_TERM,
  });
}

export const ADMIN_FAMILIES = ['inet', 'ip', 'ip6'] as const;
export const JUMP_POSITIONS = ['first', 'last', 'none'] as const;
export const FOREIGN_CHAIN_MODES = ['accept', 'report'] as const;
/** The default of filter.accept_mark: bit 13. */
export const DEFAULT_ACCEPT_MARK = 0x2000;

/** The chains kvmnftd adds to the admin's table (the planner's names). */
const OWN_CHAINS = ['kvmnftd_input', 'kvmnftd_forward'];

/**
 * The keys of a port forward that say which ports go where, apart from `network` and `to`: shared by
 * `[[port_forward]]` and the forwards in a domain's `<metadata>` (libvirt/metadata-forwards.ts reads them with
 * these very kinds), so a value means the same in both places.
 */
export const FORWARD_FIELDS = {
  proto: key({ kind: oneOf(PROTOCOLS), summary: 'The protocol forwarded.' }),
  host_port: key({
    kind: portRange,
    summary: 'The host port, or a range of them as `"8000-8010"`.',
  }),
  to_port: optionalKey({
    kind: portRange,
    absent: 'host_port',
    summary: "The guest's port; with a `host_port` range, the start of the guest's range (of the same length).",
  }),
  from: key({
    kind: list(
      text({
        expected: 'an address or a subnet ADDR/PREFIX',
        valid: (s) => sourceCidr(s) !== undefined,
      }),
      'addresses or subnets',
    ),
    default: [],
    summary: 'Only connections from these sources are forwarded; `[]` means from anywhere.',
  }),
  host_address: optionalKey({
    kind: text({ expected: 'an IPv4 or IPv6 address', valid: (s) => ipFamily(s) !== undefined }),
    absent: 'every local address',
    summary: "Only connections to this host address are forwarded; absent, to any of the host's own addresses.",
  }),
} as const;

export const SCHEMA = table({
  libvirt_uri: key({
    kind: text({
      expected: 'a libvirt URI such as "qemu:///system"',
      valid: (s) => /^[a-z0-9+]+:\/\/[^\s]*$/.test(s),
    }),
    default: 'qemu:///system',
    summary:
      'The libvirt connection used to list active networks, read their XML and follow their events. Where ' +
      "libvirt's modular virtnetworkd runs, qemu:///system is taken as network:///system (see docs/operation.md).",
  }),
  filter: section({
    summary: "The administrator's own table, whose base chains have the drop policy.",
    keys: {
      family: key({
        kind: oneOf(ADMIN_FAMILIES),
        default: 'inet',
        summary:
          "Family of the administrator's table. An `ip` table gets only IPv4 rules, an `ip6` table only IPv6 rules.",
      }),
      table: key({
        kind: nftName('the admin table'),
        default: 'filter',
        summary: "The administrator's table holding the drop-policy base chains.",
        doc: 'kvmnftd adds the chains `kvmnftd_input` and `kvmnftd_forward` to it.',
      }),
      input_chain: key({
        kind: nftName('the admin input base chain'),
        default: 'input',
        summary: "The administrator's base chain on the input hook.",
      }),
      forward_chain: key({
        kind: nftName('the admin forward base chain'),
        default: 'forward',
        summary: "The administrator's base chain on the forward hook.",
      }),
      jump: key({
        kind: oneOf(JUMP_POSITIONS),
        default: 'first',
        summary: "Where kvmnftd's single jump into each base chain goes.",
        doc:
          '`first` makes it rule 0, so guests work whatever the chain contains further down (invalid packets are ' +
          'handed back, so a later `ct state invalid drop` still applies). ' +
          "`last` appends it after the administrator's rules; a rule that drops guest traffic before the end wins. " +
          '`none` means kvmnftd never adds or removes a jump: write both chains and the jumps into your own ruleset ' +
          'so that `systemctl reload nftables` keeps them where you put them; kvmnftd only fills (and on `remove`, ' +
          'empties) the two chains, and warns and applies only the NAT part when they are missing. ' +
          'A jump kvmnftd adds carries the comment `kvmnftd`; a jump without it is never touched.',
      }),
      accept_open_networks: key({
        kind: list(text({ expected: 'a libvirt network name', valid: () => true }), 'libvirt network names'),
        default: [],
        summary:
          "Networks with `<forward mode='open'>` whose bridge traffic is accepted. " +
          'By default, as with libvirt, open networks get no rules.',
      }),
      foreign_chains: key({
        kind: oneOf(FOREIGN_CHAIN_MODES),
        default: 'accept',
        summary:
          "What kvmnftd does about the drop-policy chains Docker and ufw own (Docker's iptables `FORWARD` policy " +
          "drop, ufw's input and forward policies): `accept` lets exactly the traffic kvmnftd's own chains accept " +
          'pass them too; `report` leaves them alone, and `kvmnftd doctor` names them.',
        doc:
          'With `accept`, kvmnftd sets the bit `filter.accept_mark` on the packets its own rules accept (chains ' +
          '`mark_input` and `mark_forward` in its own table, priority `filter - 1`) and writes one rule ' +
          '`meta mark & MARK == MARK accept` (comment `kvmnftd`; iptables shows it as ' +
          '`-m mark --mark MARK/MARK -m comment --comment kvmnftd -j ACCEPT`) into `DOCKER-USER` (`ip` and `ip6`), ' +
          '`ufw-before-forward`, `ufw-before-input`, `ufw6-before-forward`, `ufw6-before-input` and the chains ' +
          'of `filter.foreign_chains_extra`, where they exist. ' +
          "Traffic into Docker's bridges is never marked: unpublished container ports stay closed to guests. " +
          'Only while a network is active and such a chain exists; `report` and `kvmnftd remove` take it all out ' +
          'again. See [docs/troubleshooting.md](troubleshooting.md#docker--ufw-on-the-same-host).',
      }),
      accept_mark: key({
        kind: integer({ min: 1, max: 0x8000_0000, what: 'a packet mark with exactly one bit set', hex: true }),
        default: DEFAULT_ACCEPT_MARK,
        summary:
          'The packet mark bit that says "kvmnftd accepted this packet on this hook", read by the mark accepts ' +
          'of `filter.foreign_chains`. A packet that arrives with the bit set loses it first.',
        doc:
          'Pick a bit no other program on the host uses. The default, bit 13 (`0x2000`), is used by none of ' +
          "Docker (swarm's ingress marks are whole values from `0x100`), Kubernetes (`0x4000` masquerade, " +
          '`0x8000` drop), Calico (`0xffff0000`), Cilium (`0x0f00`), Weave (`0x20000`, `0x40000`), Tailscale ' +
          '(`0x10000`..`0x80000`, `0xff0000`) and firewalld (no marks by default). ' +
          "Docker 29's nftables backend takes the same bit through `--bridge-accept-fwmark` (which also opens " +
          'unpublished container ports to guests).',
      }),
      foreign_chains_extra: key({
        kind: list(
          text({ expected: CHAIN_REF_EXPECTED, valid: (s) => parseChainRef(s) !== undefined }),
          '"FAMILY TABLE CHAIN" strings',
        ),
        default: [],
        summary:
          'More chains kvmnftd writes its one mark accept into, as `"FAMILY TABLE CHAIN"` (for example ' +
          '`"ip filter FORWARD"`, `"inet other forward"`): a drop-policy chain of another program or a second ' +
          'admin table. Used with `foreign_chains = "accept"`, where the chain exists.',
      }),
    },
  }),
  nat: section({
    keys: {
      table: key({
        kind: nftName("kvmnftd's own table"),
        default: 'kvmnftd',
        summary: "kvmnftd's own `inet` table for NAT; owned whole (anything else in it is removed).",
      }),
      priority: key({
        kind: integer({ min: -199, max: 400, what: 'an integer nat priority', note: 'libvirt uses 100' }),
        default: 99,
        summary:
          "Priority of the NAT base chain (postrouting). 99 is `srcnat - 1`, just before libvirt's own masquerade " +
          'at `srcnat` (100): the first nat chain that maps a connection wins.',
        doc: "The lower bound is nft's: it refuses a nat chain at priority -200 (conntrack) or lower.",
      }),
    },
  }),
  forwarding: section({
    keys: {
      manage_ipv4: key({
        kind: bool,
        default: true,
        summary: 'Set `net.ipv4.ip_forward=1` when an active network forwards IPv4 (logged); when `false`, only warn.',
        doc:
          'IPv6 forwarding is never switched on by kvmnftd: doing so makes every interface with `accept_ra=1` ' +
          "ignore router advertisements, which can take the host's own IPv6 default route away; kvmnftd warns " +
          'instead and names the interfaces at risk.',
      }),
    },
  }),
  port_forward: key({
    kind: tables({
      network: key({
        kind: text({ expected: 'a libvirt network name', valid: (s) => s.length > 0 && !s.includes('/') }),
        summary: 'The libvirt network the guest is on.',
      }),
      proto: FORWARD_FIELDS.proto,
      host_port: FORWARD_FIELDS.host_port,
      to: key({
        kind: text({
          expected: 'a libvirt domain name, a MAC address or an IPv4/IPv6 address',
          valid: validTarget,
        }),
        summary:
          "The guest: a libvirt domain name or a MAC address (resolved through libvirt: the domain's interfaces " +
          "on that network, then the network's DHCP leases), or the guest's address.",
        doc:
          "An address must lie inside one of the network's subnets, or the forward gets no rules: a forward " +
          'never sends traffic anywhere else.',
      }),
      to_port: FORWARD_FIELDS.to_port,
      from: FORWARD_FIELDS.from,
      host_address: FORWARD_FIELDS.host_address,
    }),
    summary:
      'A host port forwarded to a guest of a libvirt network: DNAT for connections from outside, from the host ' +
      'itself and from other guests of that network (hairpin), and the accepts that let exactly those ' +
      'connections in. One `[[port_forward]]` table per forward.',
  }),
  metadata_forwards: section({
    summary:
      "Forwards set in a domain's `<metadata>` apply only to the host ports listed here: whoever may edit a " +
      "domain's XML is not necessarily allowed to open host ports. How to set them: " +
      "[Port forwards in a domain's metadata](configuration.md#port-forwards-in-a-domains-metadata).",
    keys: {
      host_ports: key({
        kind: list(portRange, 'ports or "A-B" port ranges'),
        default: [],
        summary:
          'Host ports (integers or `"A-B"` ranges) that domain metadata forwards may use; `[]` turns metadata ' +
          'forwards off. A port of a `[[port_forward]]`, or one a host socket listens on, is never theirs.',
      }),
    },
  }),
  networks: key({
    kind: named(
      text({
        expected: 'a libvirt network name, or "*" for the defaults of every network',
        valid: (s) => s.length > 0 && !s.includes('/'),
      }),
      {
        host_services: optionalKey({
          kind: list(text({ expected: SERVICE_SYNTAX, valid: () => true }), 'services ("tcp/22", "udp/8000-8010")'),
          absent: '`[networks."*"]`\'s, else `[]`',
          summary:
            "Host services the network's guests may reach on the host, on top of DHCP, DNS and TFTP: " +
            '`"tcp/22"`, `"udp/5353"`, `"tcp/8000-8010"`. Accepted in `kvmnftd_input` for the bridge.',
        }),
        isolate_guests: optionalKey({
          kind: bool,
          absent: '`[networks."*"]`\'s, else `false`',
          summary:
            "Drop traffic between the network's guests: bridged frames in kvmnftd's own `bridge` table, " +
            'routed packets in `kvmnftd_forward`. DHCP, DNS and traffic out keep working.',
          doc: "Drops in kvmnftd's own `bridge` table, per port of the network's bridge: see docs/rules.md.",
        }),
        egress: optionalKey({
          kind: list(text({ expected: EGRESS_SYNTAX, valid: () => true }), 'egress entries'),
          absent: '`[networks."*"]`\'s, else unrestricted',
          summary:
            'Only these may be forwarded out of the bridge; everything else the guests send is dropped, IPv4 and ' +
            'IPv6: a destination `"10.0.0.0/8"` (any protocol), a service `"tcp/443"` (anywhere), or both ' +
            '`"203.0.113.7:tcp/25"`, `"[2001:db8::1]:tcp/25"`. `[]` drops every forwarded packet.',
          doc:
            'Evaluated first in `kvmnftd_forward`, on every packet a guest sends in a connection it opened (a ' +
            'tightened list cuts open connections too); replies and connections into the guest are not affected. ' +
            'Needs `filter.jump = "first"`. See docs/rules.md.',
        }),
        log_drops: optionalKey({
          kind: bool,
          absent: '`[networks."*"]`\'s, else `false`',
          summary:
            'Log what `isolate_guests` and `egress` drop, at most 5 packets a second (burst 10), with the prefix ' +
            '`kvmnftd <network> drop: ` (read with `journalctl -k`).',
        }),
      },
    ),
    summary:
      'Per-network policy, keyed by libvirt network name; `[networks."*"]` sets the defaults of every network, and ' +
      "a network's own table overrides them key by key. A key the network's forward mode cannot use is an error " +
      'when the network sets it, and ignored when it comes from `"*"` (see docs/rules.md).',
  }),
  daemon: section({
    keys: {
      resync_interval: key({
        kind: integer({ min: 0, max: 86_400, what: 'a whole number of seconds', unit: 'seconds', zero: 'off' }),
        default: 60,
        summary:
          'A full reconcile this often, backing up the event sources (libvirt events and `nft monitor`); ' +
          '`0` turns the periodic check off.',
      }),
      restore_libvirt_rules: key({
        kind: bool,
        default: true,
        summary:
          'After a foreign `flush ruleset`, broadcast `org.fedoraproject.FirewallD1.Reloaded` so that libvirt ' +
          're-creates its own chains (see [docs/operation.md](operation.md#after-a-flush-ruleset)).',
        doc:
          'After someone else flushes the ruleset (for example `systemctl reload nftables`), libvirt cannot start ' +
          'networks until it re-creates its chains. ' +
          'On the signal libvirt re-creates them and re-adds the rules of running networks; other programs ' +
          'listening for it (Docker, podman) reload their rules too. ' +
          'kvmnftd sends it at most once per 10 seconds, and never while a real firewalld is running. ' +
          'When `false`, kvmnftd only warns.',
      }),
    },
  }),
  metrics: section({
    summary:
      "The daemon writes what `kvmnftd metrics` prints to a file, for node_exporter's textfile collector " +
      '(see [docs/operation.md](operation.md#metrics-for-prometheus)). kvmnftd opens no socket.',
    keys: {
      textfile: optionalKey({
        kind: text({
          expected: 'an absolute path ending in ".prom"',
          valid: (s) => s.startsWith('/') && s.endsWith('.prom') && !s.endsWith('/.prom') && !/[\0\n]/.test(s),
        }),
        absent: 'off',
        summary:
          'The file the daemon writes the metrics to, every `interval` seconds, for example ' +
          '`"/var/lib/prometheus/node-exporter/kvmnftd.prom"` (Debian\'s node_exporter reads that directory).',
        doc:
          'Written atomically (a temporary file in the same directory, mode 0644 whatever the umask, fsync, rename), ' +
          'so that node_exporter, which runs as user prometheus, never reads half a file. The shipped unit may ' +
          'write to `/var/lib/prometheus/node-exporter`; another directory needs a `ReadWritePaths=` drop-in. A ' +
          'failed write is logged once per distinct error and shown by `kvmnftd status`.',
      }),
      interval: key({
        kind: integer({ min: 1, max: 3600, what: 'a whole number of seconds', unit: 'seconds' }),
        default: 15,
        summary: 'How often the daemon rewrites `textfile`.',
      }),
    },
  }),
});

/** A rule between keys (or about a whole value), checked after every key has been read. */
export interface Rule {
  /** The key an error names. */
  readonly key: string;
  /** The rule for the docs (markup), shown with that key. */
  readonly doc: string;
  /**
   * What the error says when the rule is broken; undefined when it holds. A rule over the entries of an array
   * of tables returns each broken entry with its own key (`port_forward[2].host_port`).
   */
  readonly check: (c: Config) => string | Broken[] | undefined;
}

const notOwnChain =
  (chain: (c: Config) => string) =>
  (c: Config): string | undefined =>
    OWN_CHAINS.includes(chain(c)) ? `${chain(c)} is the name of kvmnftd's own chain; name your base chain` : undefined;

const NOT_OWN_CHAIN_DOC = "Must not be `kvmnftd_input` or `kvmnftd_forward`: those are kvmnftd's own chains.";

/** Why an entry of filter.foreign_chains_extra is refused, naming it; undefined when all are fine. */
function refusedExtra(c: Config): string | undefined {
  for (const text of c.filter.foreignChainsExtra) {
    const ref = parseChainRef(text);
    if (!ref) return `${JSON.stringify(text)} is not ${CHAIN_REF_EXPECTED}`;
    const why = refusedChainRef(ref, {
      natTable: c.nat.table,
      ownChains: OWN_CHAINS,
      admin: { family: c.filter.family, table: c.filter.table, chains: [c.filter.inputChain, c.filter.forwardChain] },
    });
    if (why !== undefined) return `${JSON.stringify(text)}: kvmnftd never writes there: ${why}`;
  }
  return undefined;
}

const POLICY_RULES: Rule[] = [
  {
    key: 'networks.<name>.host_services',
    doc: `Each ${SERVICE_SYNTAX}.`,
    check: (c) => networkPolicyProblems(c).filter((b) => b.key.includes('.host_services[')),
  },
  {
    key: 'networks.<name>.egress',
    doc: `Each ${EGRESS_SYNTAX}.`,
    check: (c) => networkPolicyProblems(c).filter((b) => b.key.includes('.egress[')),
  },
  {
    key: 'networks.<name>.egress',
    doc:
      'Only with `filter.jump = "first"`: with the jump anywhere else, the admin\'s own accepts would run before ' +
      "kvmnftd's drop.",
    check: (c) => networkPolicyProblems(c).filter((b) => b.key.endsWith('.egress')),
  },
];

/** In this order: the first broken rule is the error. */
export const RULES: readonly Rule[] = [
  {
    key: 'filter.accept_mark',
    doc: 'Must have exactly one bit set (a power of two).',
    check: (c) =>
      Number.isInteger(Math.log2(c.filter.acceptMark))
        ? undefined
        : `must have exactly one bit set (a power of two such as 0x2000), got 0x${c.filter.acceptMark.toString(16)}`,
  },
  {
    key: 'filter.foreign_chains_extra',
    doc:
      "Never kvmnftd's own table or chains, nor the admin base chains its jumps go into; never a table that bans on " +
      "purpose (fail2ban's `f2b-table` and `f2b-*` chains, CrowdSec's `crowdsec`/`crowdsec6`, `sshguard`): a ban " +
      "must stay a ban; never libvirt's (`libvirt_network`, `LIBVIRT_*`), firewalld's (`firewalld`) or Docker's " +
      'nftables table (`docker-bridges`).',
    check: refusedExtra,
  },
  { key: 'filter.input_chain', doc: NOT_OWN_CHAIN_DOC, check: notOwnChain((c) => c.filter.inputChain) },
  { key: 'filter.forward_chain', doc: NOT_OWN_CHAIN_DOC, check: notOwnChain((c) => c.filter.forwardChain) },
  {
    key: 'filter.forward_chain',
    doc: 'Must differ from `filter.input_chain`: they hook different traffic.',
    check: (c) =>
      c.filter.inputChain === c.filter.forwardChain
        ? `must differ from filter.input_chain (${c.filter.inputChain}): they hook different traffic`
        : undefined,
  },
  {
    key: 'port_forward[].to_port',
    doc: 'A range must be as long as `host_port`; the range must end at 65535 or before.',
    check: (c) => portForwardProblems(c.portForward).filter((b) => b.key.endsWith('.to_port')),
  },
  {
    key: 'port_forward[].from',
    doc: 'With `to` or `host_address` an address, every source must be of its family.',
    check: (c) => portForwardProblems(c.portForward).filter((b) => b.key.endsWith('.from')),
  },
  {
    key: 'port_forward[].host_address',
    doc: 'With `to` an address, of the same family. Never a loopback address (see docs/rules.md).',
    check: (c) => portForwardProblems(c.portForward).filter((b) => b.key.endsWith('.host_address')),
  },
  {
    key: 'port_forward[].host_port',
    doc:
      'Two forwards of the same protocol whose host port ranges overlap must have different `host_address`es ' +
      '(a forward without one takes its ports on every address).',
    check: (c) => portForwardProblems(c.portForward).filter((b) => b.key.endsWith('.host_port')),
  },
  ...POLICY_RULES,
  {
    key: 'nat.table',
    doc: 'Must differ from `filter.table`, whatever `filter.family` is.',
    check: (c) =>
      c.nat.table === c.filter.table
        ? `must differ from filter.table (${c.filter.table}): kvmnftd owns that table whole`
        : undefined,
  },
];
