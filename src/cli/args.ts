// Command-line parsing with node:util parseArgs: no dependency, strict.
import { parseArgs } from 'node:util';
import { LOG_LEVELS } from '../log/levels.js';

export const COMMANDS = ['plan', 'apply', 'remove', 'run', 'reload', 'status', 'metrics', 'doctor', 'check'] as const;
export type CommandName = (typeof COMMANDS)[number];

export interface Args {
  command: CommandName | 'help' | 'version';
  /** `kvmnftd help CMD` / `kvmnftd CMD --help`: that command's own text. */
  helpFor?: CommandName;
  json: boolean;
  /** plan: print a readable diff against the live ruleset. */
  diff: boolean;
  fromXml: string[];
  config?: string;
  force: boolean;
  logLevel: string;
  events: 'auto' | 'dbus' | 'virsh';
}

export class UsageError extends Error {
  override name = 'UsageError';
}

export const USAGE = `Usage: kvmnftd <command> [options]

Keeps libvirt guest networking working behind a strict nftables ruleset.

Commands:
  plan      print the nft batch the next apply would run (nft text; --json for JSON)
  apply     apply the plan once as one atomic nft transaction, then exit
  remove    delete every rule, chain and table kvmnftd owns
  run       the daemon: follow libvirt network events and keep the rules current
            (what kvmnftd.service runs; Type=notify)
  reload    make the running daemon re-read its config; returns when it is done
  status    per network: are its rules in place and current? (exit 0 yes, 3 no)
  metrics   rule counters per network and the daemon's figures, as Prometheus
            text exposition
  doctor    find what else drops guest traffic or breaks libvirt, with fixes
  check     validate a config file without touching anything (no root needed;
            silent and exit 0 when it is fine, else one line per problem, exit 2)

Options:
  --from-xml FILE   plan from a libvirt network XML file instead of libvirt
                    (repeatable; each file counts as an active network)
  --json            plan: libnftables JSON; status, doctor: machine-readable
  --diff            plan: a readable diff (- removed, + added) against the
                    live ruleset
  --config PATH     config file (default /etc/kvmnftd/kvmnftd.toml; optional)
  --force           remove: even while the daemon runs
  --events MODE     run: auto|dbus|virsh (default auto: libvirt-dbus when it is
                    on the system bus or can be activated, else virsh net-event;
                    virsh on network:///system where virtnetworkd runs)
  --log-level LVL   ${LOG_LEVELS.join('|')} (default info)
  -h, --help        this text
  -V, --version     print the version

Examples:
  kvmnftd plan                         what would change for the running networks
  kvmnftd plan --json --from-xml default.xml
  kvmnftd apply                        make the ruleset match libvirt, once
  kvmnftd remove                       take kvmnftd's rules out again
  kvmnftd run --events virsh           the daemon, in the foreground
  kvmnftd status                       are the rules in place? (exit 3 if not)
  kvmnftd metrics                      the counters, for Prometheus
  kvmnftd doctor                       why does a guest have no network?
  kvmnftd check --config new.toml      is this config valid? (before shipping it)
  kvmnftd help doctor                  the help of one command

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error,
3 (status, doctor) something is missing, stale or wrong.
`;

export function parseCommandLine(argv: string[]): Args {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        'from-xml': { type: 'string', multiple: true },
        json: { type: 'boolean' },
        diff: { type: 'boolean' },
        config: { type: 'string' },
        force: { type: 'boolean' },
        'log-level': { type: 'string' },
        events: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  const logLevel = values['log-level'] ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  const events = values.events ?? 'auto';
  if (!isEventsMode(events)) throw new UsageError('--events must be auto, dbus or virsh');
  const base = {
    events,
    json: values.json ?? false,
    diff: values.diff ?? false,
    fromXml: values['from-xml'] ?? [],
    force: values.force ?? false,
    logLevel,
    ...(values.config === undefined ? {} : { config: values.config }),
  };
  const isCommand = (c: string | undefined): c is CommandName =>
    c !== undefined && (COMMANDS as readonly string[]).includes(c);
  if (values.help || positionals[0] === 'help') {
    // `kvmnftd help CMD`, `kvmnftd CMD --help`
    const topic = positionals[0] === 'help' ? positionals[1] : positionals[0];
    if (topic !== undefined && !isCommand(topic)) throw new UsageError(`unknown command "${topic}"`);
    return { command: 'help', ...base, ...(topic === undefined ? {} : { helpFor: topic }) };
  }
  if (values.version) return { command: 'version', ...base };
  const [command, ...extra] = positionals;
  if (command === undefined) throw new UsageError('no command given');
  if (!(COMMANDS as readonly string[]).includes(command)) throw new UsageError(`unknown command "${command}"`);
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
  const args: Args = { command: command as CommandName, ...base };
  if (args.json && !['plan', 'status', 'doctor'].includes(command))
    throw new UsageError('--json goes with plan, status or doctor');
  if (args.diff && command !== 'plan') throw new UsageError('--diff goes with plan');
  if (args.diff && args.json) throw new UsageError('--diff and --json exclude each other');
  if (args.force && command !== 'remove') throw new UsageError('--force goes with remove');
  if (args.fromXml.length > 0 && !['plan', 'apply', 'status', 'doctor'].includes(command))
    throw new UsageError(`--from-xml does not go with ${command}`);
  if (values.events !== undefined && command !== 'run') throw new UsageError('--events goes with run');
  return args;
}

function isEventsMode(s: string): s is Args['events'] {
  return s === 'auto' || s === 'dbus' || s === 'virsh';
}
