// Which `nft -j monitor` events start a pass. Real hosts are busy: fail2ban
// and CrowdSec add and delete set elements one `nft` call at a time, Docker
// and libvirt rewrite their own chains. Only changes that can alter what
// kvmnftd plans, or undo what it applied, matter:
// - anything in a table kvmnftd owns or writes into (its rules, chains, sets),
//   including, with filter.foreign_chains = "accept", the tables of Docker's
//   and ufw's chains (foreign-chains.ts): `ufw reload` and Docker's rebuilds
//   take the mark accept out, and a DOCKER-USER created after the pass that
//   Docker's policy change started must still be seen;
// - a base chain on a hook kvmnftd cares about, in any table, created,
//   deleted or given a new policy (nft reports a policy change as an `add`
//   of the chain with its new policy);
// - libvirt's own chains appearing, disappearing or being rewritten (the
//   post-flush trap; how a libvirtd restart is noticed);
// - a table that holds any of these being deleted or re-created;
// - anything the stream cannot say precisely: a line that is not JSON (e.g.
//   "# ERROR: We lost some netlink events!") or an object kind not known here.
// Pure: the scope is derived from the last ruleset a pass read.
import type { Config } from '../config/config.js';
import { foreignTables } from './foreign-chains.js';
import { isLibvirtChain } from './libvirt-chains.js';
import { TABLE_OBJECTS, tableKey, type Ruleset } from './ruleset.js';

/** Hooks whose base chains decide whether guest traffic passes. */
export const WATCHED_HOOKS: ReadonlySet<string> = new Set(['input', 'forward', 'prerouting', 'postrouting', 'output']);

export interface MonitorScope {
  /** `family name` of the tables kvmnftd owns or writes into: every change there matters. */
  readonly tables: ReadonlySet<string>;
  /** `family table chain` of the watched base chains the last pass saw: their deletion matters. */
  readonly baseChains: ReadonlySet<string>;
  /** `family name` of tables holding such a chain: deleting one matters. */
  readonly tablesWithBaseChains: ReadonlySet<string>;
}

/** kvmnftd's own tables, the admin table it writes its chains and jumps into, and the foreign chains' tables. */
export function ownedOrWrittenTables(config: Config): string[] {
  const tables = [
    tableKey('inet', config.nat.table),
    // isolate_guests: kvmnftd's own bridge table (policy.ts); a change there is a drift to repair.
    tableKey('bridge', config.nat.table),
    tableKey(config.filter.family, config.filter.table),
  ];
  return [...new Set([...tables, ...foreignTables(config)])];
}

const chainKey = (family: string, table: string, chain: string): string => `${family} ${table} ${chain}`;

/** `tables`: kvmnftd's own table and the tables it writes into, as `family name` (see tableKey). */
export function monitorScope(live: Ruleset, tables: Iterable<string>): MonitorScope {
  const baseChains = new Set<string>();
  const tablesWithBaseChains = new Set<string>();
  for (const table of live.tables.values()) {
    for (const chain of table.chains.values()) {
      if (chain.hook === undefined || !WATCHED_HOOKS.has(chain.hook)) continue;
      baseChains.add(chainKey(table.family, table.name, chain.name));
      tablesWithBaseChains.add(tableKey(table.family, table.name));
    }
  }
  return { tables: new Set(tables), baseChains, tablesWithBaseChains };
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/**
 * Does this reason (monitorLineReason's) come from libvirt's own chains? Then
 * libvirt acted, and the pass asks libvirt afresh rather than planning from
 * its last answers: after a libvirtd restart libvirt-dbus sends no event
 * until some method call, and this is how the daemon notices.
 */
export function libvirtActed(reason: string): boolean {
  return reason.startsWith('libvirt ');
}

/**
 * Why a monitor line matters, or undefined when it cannot change what
 * kvmnftd plans (a foreign set's elements, a foreign table's rules).
 */
export function monitorLineReason(line: string, scope: MonitorScope): string | undefined {
  return isForeignElementLine(line, scope) ? undefined : parsedLineReason(line, scope);
}

/** An element event's start as nft prints it; captures family and table (a table name without escapes). */
const ELEMENT_LINE = /^\{"(?:add|delete)": \{"element": \{"family": "([a-z0-9]+)", "table": "([^"\\]*)", /;

/**
 * An element added to or deleted from a set of a table kvmnftd neither owns
 * nor writes into, as nft prints it: `{"add": {"element": {"family": "inet",
 * "table": "f2b", "name": ...}}}`. The fast path for a set storm (fail2ban,
 * CrowdSec): read without JSON.parse, since such a line can only be ignored.
 * A name with an escape in it, or any other layout, takes the full reading,
 * which decides the same (undefined) for every well-formed line this one
 * matches.
 */
export function isForeignElementLine(line: string, scope: MonitorScope): boolean {
  const m = ELEMENT_LINE.exec(line);
  return m !== null && line.endsWith('}}}') && !scope.tables.has(tableKey(m[1]!, m[2]!));
}

/** monitorLineReason without the fast path: every line read as JSON (exported for the tests). */
export function parsedLineReason(line: string, scope: MonitorScope): string | undefined {
  let event: unknown;
  try {
    event = JSON.parse(line);
  } catch {
    return line.trim() === '' ? undefined : 'nft monitor reported a problem';
  }
  if (!isObj(event)) return 'nft monitor printed an unknown event';
  const op = Object.keys(event)[0] ?? '';
  const body = event[op];
  if (!isObj(body)) return 'nft monitor printed an unknown event';
  const kind = Object.keys(body)[0] ?? '';
  const obj = body[kind];
  if (!isObj(obj)) return 'nft monitor printed an unknown event';
  const family = str(obj['family']);

  if (kind === 'table') {
    const key = tableKey(family, str(obj['name']));
    if (scope.tables.has(key)) return `table ${key} changed`;
    if (op === 'delete' && scope.tablesWithBaseChains.has(key)) return `table ${key} deleted`;
    return undefined;
  }
  // Every other object names its table as `table`.
  const table = str(obj['table']);
  const inScope = scope.tables.has(tableKey(family, table));
  switch (kind) {
    case 'chain': {
      const name = str(obj['name']);
      if (inScope) return `chain ${chainKey(family, table, name)} changed`;
      const hook = obj['hook'];
      // An add carries the hook (created, or a new policy); a delete does not.
      if (op !== 'delete' && typeof hook === 'string' && WATCHED_HOOKS.has(hook)) {
        return `base chain ${chainKey(family, table, name)} (hook ${hook}) added or changed`;
      }
      if (op === 'delete' && scope.baseChains.has(chainKey(family, table, name))) {
        return `base chain ${chainKey(family, table, name)} deleted`;
      }
      if (isLibvirtChain(family, table, name)) return `libvirt chain ${name} ${op === 'delete' ? 'deleted' : 'added'}`;
      return undefined;
    }
    case 'rule':
      if (inScope) return `rule in ${tableKey(family, table)} changed`;
      // libvirt rewrites its own chains when it (re)starts a network: after a
      // libvirtd restart libvirt-dbus emits no event until some method call,
      // and these changes are how the daemon notices (a pass's ListNetworks
      // wakes libvirt-dbus up).
      return isLibvirtChain(family, table, str(obj['chain'])) ? 'libvirt changed its rules' : undefined;
    default:
      // A table's other objects (sets, their elements, maps, stateful objects): only kvmnftd's own matter.
      if (kind === 'element' || TABLE_OBJECTS.has(kind)) {
        return inScope ? `${kind} in ${tableKey(family, table)} changed` : undefined;
      }
      return `nft monitor reported a ${kind || 'new kind of'} event`;
  }
}
