// Command-line parsing with node:util parseArgs: no dependency, strict.
import { parseArgs } from 'node:util';
import { LOG_LEVELS } from '../log/logger.js';

export const COMMANDS = ['plan', 'apply', 'remove', 'run', 'reload'] as const;
export type CommandName = (typeof COMMANDS)[number];

export interface Args {
  command: CommandName | 'help' | 'version';
  json: boolean;
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

Options:
  --from-xml FILE   plan from a libvirt network XML file instead of libvirt
                    (repeatable; each file counts as an active network)
  --json            plan: print libnftables JSON
  --config PATH     config file (default /etc/kvmnftd/kvmnftd.toml; optional)
  --force           remove: even while the daemon runs
  --events MODE     run: auto|dbus|virsh (default auto: libvirt-dbus when it is
                    on the system bus or can be activated, else virsh net-event)
  --log-level LVL   ${LOG_LEVELS.join('|')} (default info)
  -h, --help        this text
  -V, --version     print the version

Examples:
  kvmnftd plan                         what would change for the running networks
  kvmnftd plan --json --from-xml default.xml
  kvmnftd apply                        make the ruleset match libvirt, once
  kvmnftd remove                       take kvmnftd's rules out again
  kvmnftd run --events virsh           the daemon, in the foreground

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
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
  if (events !== 'auto' && events !== 'dbus' && events !== 'virsh') throw new UsageError('--events must be auto, dbus or virsh');
  const base = { events: events as Args['events'], json: values.json ?? false, fromXml: values['from-xml'] ?? [], force: values.force ?? false, logLevel, ...(values.config === undefined ? {} : { config: values.config }) };
  if (values.help) return { command: 'help', ...base };
  if (values.version) return { command: 'version', ...base };
  const [command, ...extra] = positionals;
  if (command === undefined) throw new UsageError('no command given');
  if (!(COMMANDS as readonly string[]).includes(command)) throw new UsageError(`unknown command "${command}"`);
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
  const args: Args = { command: command as CommandName, ...base };
  if (args.json && command !== 'plan') throw new UsageError('--json goes with plan');
  if (args.force && command !== 'remove') throw new UsageError('--force goes with remove');
  if (args.fromXml.length > 0 && !['plan', 'apply'].includes(command)) throw new UsageError(`--from-xml does not go with ${command}`);
  if (values.events !== undefined && command !== 'run') throw new UsageError('--events goes with run');
  return args;
}
