// The configuration: one typed object with defaults, validated key by key so
// that an error names the file, the key and what was expected.
//
//   schema.ts  every key: kind, default, docs; the rules between keys
//   kinds.ts   the kinds of values and tables a key can hold, and how each is checked
//   load.ts    file -> TOML -> Config
//   errors.ts  ConfigError
//   docs.ts    the key tables of docs/configuration.md and kvmnftd.toml(5)
import type { PortRange, TableKind } from './kinds.js';
import type { Protocol } from './port-forward.js';
import type { ADMIN_FAMILIES, FOREIGN_CHAIN_MODES, JUMP_POSITIONS, SCHEMA } from './schema.js';

/** One [networks.<name>] table: a key left out is undefined (then "*"'s, then the default applies). */
export interface NetworkPolicyConfig {
  /** "tcp/22", "udp/8000-8010" (egress.ts). */
  hostServices: string[] | undefined;
  isolateGuests: boolean | undefined;
  /** "10.0.0.0/8", "tcp/443", "203.0.113.7:tcp/25" (egress.ts). */
  egress: string[] | undefined;
  logDrops: boolean | undefined;
}

export type JumpPosition = (typeof JUMP_POSITIONS)[number];
export type ForeignChainMode = (typeof FOREIGN_CHAIN_MODES)[number];
export type AdminFamily = (typeof ADMIN_FAMILIES)[number];

export interface Config {
  libvirtUri: string;
  filter: {
    family: AdminFamily;
    table: string;
    inputChain: string;
    forwardChain: string;
    jump: JumpPosition;
    acceptOpenNetworks: string[];
    /** Docker's and ufw's drop-policy chains: let kvmnftd's accepted traffic through them, or only report them. */
    foreignChains: ForeignChainMode;
    /** The one packet mark bit kvmnftd's marking chains set and its mark accepts read. */
    acceptMark: number;
    /** More chains for the mark accept, as "FAMILY TABLE CHAIN" (validated by the schema's rules). */
    foreignChainsExtra: string[];
  };
  nat: {
    table: string;
    priority: number;
  };
  forwarding: {
    manageIpv4: boolean;
  };
  /** [[port_forward]]: host ports forwarded to guests (validated by the schema's rules; see port-forward.ts). */
  portForward: Array<{
    network: string;
    proto: Protocol;
    hostPort: PortRange;
    /** libvirt domain name, MAC address or guest address. */
    to: string;
    /** Absent: host_port. Its start is what counts (a range's length equals host_port's). */
    toPort: PortRange | undefined;
    /** Sources as given (addresses or subnets); [] = any. */
    from: string[];
    hostAddress: string | undefined;
  }>;
  metadataForwards: {
    /** Host ports domain metadata forwards may use; [] = metadata forwards off. */
    hostPorts: PortRange[];
  };
  /** [networks.<name>] and [networks."*"]: per-network policy, as written (network-policy.ts resolves it). */
  networks: Record<string, NetworkPolicyConfig>;
  daemon: {
    /** Seconds between full reconciles that back up the event sources; 0 = never. */
    resyncInterval: number;
    /** After a foreign flush, make libvirt re-create its own rules (FirewallD1.Reloaded). */
    restoreLibvirtRules: boolean;
  };
  metrics: {
    /** The daemon writes the metrics there every `interval` seconds; undefined = off. */
    textfile: string | undefined;
    interval: number;
  };
}

// The compiler keeps this interface and the schema's keys the same shape.
type Read<K> = K extends TableKind<infer T> ? T : never;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _schemaIsConfig: Same<Read<typeof SCHEMA>, Config> = true;
void _schemaIsConfig;

export { ConfigError } from './errors.js';
export {
  checkConfigFile,
  configFromObject,
  configProblems,
  defaultConfig,
  DEFAULT_CONFIG_PATH,
  loadConfig,
} from './load.js';
