// The configuration: one typed object with defaults, validated key by key so
// that an error names the file, the key and what was expected.
import { readFileSync } from 'node:fs';
import { parse as parseToml, TomlError } from 'smol-toml';

export type JumpPosition = 'first' | 'last' | 'none';
export type AdminFamily = 'inet' | 'ip' | 'ip6';

export interface Config {
  libvirtUri: string;
  filter: {
    family: AdminFamily;
    table: string;
    inputChain: string;
    forwardChain: string;
    jump: JumpPosition;
    acceptOpenNetworks: string[];
  };
  nat: {
    table: string;
    priority: number;
  };
  forwarding: {
    manageIpv4: boolean;
  };
  daemon: {
    /** Seconds between full reconciles that back up the event sources; 0 = never. */
    resyncInterval: number;
    /** After a foreign flush, make libvirt re-create its own rules (FirewallD1.Reloaded). */
    restoreLibvirtRules: boolean;
  };
}

export const DEFAULT_CONFIG_PATH = '/etc/kvmnftd/kvmnftd.toml';

export function defaultConfig(): Config {
  return {
    libvirtUri: 'qemu:///system',
    filter: {
      family: 'inet',
      table: 'filter',
      inputChain: 'input',
      forwardChain: 'forward',
      jump: 'first',
      acceptOpenNetworks: [],
    },
    // srcnat - 1: the first nat chain that sets up a mapping wins, and libvirt's sits at srcnat (100).
    nat: { table: 'kvmnftd', priority: 99 },
    forwarding: { manageIpv4: true },
    daemon: { resyncInterval: 60, restoreLibvirtRules: true },
  };
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly key: string,
    readonly expected: string,
  ) {
    super(`${file}: ${key}: ${expected}`);
    this.name = 'ConfigError';
  }
}

/** nft object names: an identifier nft's parser accepts unquoted, and short. */
const NFT_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

type Reader<T> = (value: unknown) => T | undefined;

const str: Reader<string> = (v) => (typeof v === 'string' ? v : undefined);
const bool: Reader<boolean> = (v) => (typeof v === 'boolean' ? v : undefined);

interface KeySpec {
  expected: string;
  apply: (config: Config, value: unknown) => boolean;
}

function key<T>(
  expected: string,
  read: Reader<T>,
  set: (c: Config, v: T) => void,
  valid: (v: T) => boolean = () => true,
): KeySpec {
  return {
    expected,
    apply(config, value) {
      const parsed = read(value);
      if (parsed === undefined || !valid(parsed)) return false;
      set(config, parsed);
      return true;
    },
  };
}

const nftName = (what: string): string => `${what}: a name matching ${NFT_NAME.source}`;

const SCHEMA: Record<string, Record<string, KeySpec>> = {
  '': {
    libvirt_uri: key(
      'a libvirt URI such as "qemu:///system"',
      str,
      (c, v) => (c.libvirtUri = v),
      (v) => /^[a-z0-9+]+:\/\/[^\s]*$/.test(v),
    ),
  },
  filter: {
    family: key(
      'one of "inet", "ip", "ip6"',
      str,
      (c, v) => (c.filter.family = v as AdminFamily),
      (v) => ['inet', 'ip', 'ip6'].includes(v),
    ),
    table: key(
      nftName('the admin table'),
      str,
      (c, v) => (c.filter.table = v),
      (v) => NFT_NAME.test(v),
    ),
    input_chain: key(
      nftName('the admin input base chain'),
      str,
      (c, v) => (c.filter.inputChain = v),
      (v) => NFT_NAME.test(v),
    ),
    forward_chain: key(
      nftName('the admin forward base chain'),
      str,
      (c, v) => (c.filter.forwardChain = v),
      (v) => NFT_NAME.test(v),
    ),
    jump: key(
      'one of "first", "last", "none"',
      str,
      (c, v) => (c.filter.jump = v as JumpPosition),
      (v) => ['first', 'last', 'none'].includes(v),
    ),
    accept_open_networks: key(
      'an array of libvirt network names',
      (v) => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined),
      (c, v) => (c.filter.acceptOpenNetworks = v),
    ),
  },
  nat: {
    table: key(
      nftName("kvmnftd's own table"),
      str,
      (c, v) => (c.nat.table = v),
      (v) => NFT_NAME.test(v),
    ),
    // NAT chains must come after conntrack (-200): nft refuses -200 and lower.
    priority: key(
      'an integer nat priority from -199 to 400 (libvirt uses 100)',
      (v) => (typeof v === 'number' || typeof v === 'bigint' ? Number(v) : undefined),
      (c, v) => (c.nat.priority = v),
      (v) => Number.isInteger(v) && v >= -199 && v <= 400,
    ),
  },
  forwarding: {
    manage_ipv4: key('true or false', bool, (c, v) => (c.forwarding.manageIpv4 = v)),
  },
  daemon: {
    resync_interval: key(
      'a whole number of seconds from 0 (off) to 86400',
      (v) => (typeof v === 'number' ? v : undefined),
      (c, v) => (c.daemon.resyncInterval = v),
      (v) => Number.isInteger(v) && v >= 0 && v <= 86_400,
    ),
    restore_libvirt_rules: key('true or false', bool, (c, v) => (c.daemon.restoreLibvirtRules = v)),
  },
};

/** Validates a parsed TOML document; `file` only labels errors. */
export function configFromObject(doc: Record<string, unknown>, file: string): Config {
  const config = defaultConfig();
  for (const [name, value] of Object.entries(doc)) {
    // Own properties only: "constructor", "toString"... are unknown keys, not Object's.
    const section = Object.hasOwn(SCHEMA, name) ? SCHEMA[name] : undefined;
    if (section && name !== '') {
      if (typeof value !== 'object' || value === null || Array.isArray(value))
        throw new ConfigError(file, name, 'a table ([' + name + '])');
      for (const [sub, subValue] of Object.entries(value as Record<string, unknown>)) {
        const spec = Object.hasOwn(section, sub) ? section[sub] : undefined;
        if (!spec)
          throw new ConfigError(
            file,
            `${name}.${sub}`,
            `unknown key; known keys in [${name}]: ${Object.keys(section).join(', ')}`,
          );
        if (!spec.apply(config, subValue))
          throw new ConfigError(file, `${name}.${sub}`, `expected ${spec.expected}, got ${show(subValue)}`);
      }
      continue;
    }
    const top = SCHEMA['']!;
    const spec = Object.hasOwn(top, name) ? top[name] : undefined;
    if (!spec)
      throw new ConfigError(
        file,
        name,
        `unknown key; known: ${[
          ...Object.keys(top),
          ...Object.keys(SCHEMA)
            .filter((s) => s !== '')
            .map((s) => `[${s}]`),
        ].join(', ')}`,
      );
    if (!spec.apply(config, value)) throw new ConfigError(file, name, `expected ${spec.expected}, got ${show(value)}`);
  }
  for (const [key, value] of [
    ['filter.input_chain', config.filter.inputChain],
    ['filter.forward_chain', config.filter.forwardChain],
  ] as const) {
    if (value === 'kvmnftd_input' || value === 'kvmnftd_forward')
      throw new ConfigError(file, key, `${value} is the name of kvmnftd's own chain; name your base chain`);
  }
  if (config.filter.inputChain === config.filter.forwardChain) {
    throw new ConfigError(
      file,
      'filter.forward_chain',
      `must differ from filter.input_chain (${config.filter.inputChain}): they hook different traffic`,
    );
  }
  if (config.nat.table === config.filter.table) {
    throw new ConfigError(
      file,
      'nat.table',
      `must differ from filter.table (${config.filter.table}): kvmnftd owns that table whole`,
    );
  }
  return config;
}

/**
 * Loads the config. A missing file at the default path means "all defaults";
 * a missing file that was named explicitly is an error.
 */
export function loadConfig(path: string | undefined): { config: Config; source: string } {
  const file = path ?? DEFAULT_CONFIG_PATH;
  let textContent: string;
  try {
    textContent = readFileSync(file, 'utf8');
  } catch (err) {
    if (path === undefined && (err as NodeJS.ErrnoException).code === 'ENOENT')
      return { config: defaultConfig(), source: 'built-in defaults' };
    throw new ConfigError(file, '(file)', `cannot read: ${(err as Error).message}`);
  }
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(textContent) as Record<string, unknown>;
  } catch (err) {
    const where = err instanceof TomlError ? ` at line ${err.line}, column ${err.column}` : '';
    throw new ConfigError(file, '(syntax)', `not valid TOML${where}: ${(err as Error).message.split('\n')[0]}`);
  }
  return { config: configFromObject(doc, file), source: file };
}

function show(value: unknown): string {
  if (typeof value === 'bigint') return value.toString();
  const json = JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  return json === undefined ? String(value) : json.length > 60 ? `${json.slice(0, 60)}...` : json;
}
