// Per-command help: `kvmnftd help CMD` and `kvmnftd CMD --help`.
import type { CommandName } from './args.js';

const COMMON = 'Common options: --config PATH, --log-level LVL, -h/--help.';

export const COMMAND_HELP: Record<CommandName, string> = {
  plan: `Usage: kvmnftd plan [--json | --diff] [--from-xml FILE ...]

Prints the nft batch the next apply would run, as nft text. Only reads.
Empty output: the ruleset already is what kvmnftd wants.

  --json            the batch as libnftables JSON (what apply feeds nft -j -f)
  --diff            a readable diff against the live ruleset: each chain the
                    batch touches, '-' lines removed, '+' lines added
  --from-xml FILE   plan from a libvirt network XML file instead of libvirt
                    (repeatable; each file counts as an active network)
${COMMON}

Examples:
  kvmnftd plan
  kvmnftd plan --diff
  kvmnftd plan --json --from-xml default.xml
`,
  apply: `Usage: kvmnftd apply [--from-xml FILE ...]

Makes the ruleset match libvirt once, as one atomic nft transaction.
Running it twice changes nothing the second time.

  --from-xml FILE   networks from XML files instead of libvirt (repeatable)
${COMMON}

Examples:
  kvmnftd apply
  kvmnftd apply --from-xml /tmp/default.xml
`,
  remove: `Usage: kvmnftd remove [--force]

Deletes every rule, chain and table kvmnftd owns; the admin's rules stay.
Refuses while the daemon runs (it would put the rules back).

  --force           remove even while the daemon runs
${COMMON}

Examples:
  systemctl stop kvmnftd && kvmnftd remove
`,
  run: `Usage: kvmnftd run [--events auto|dbus|virsh]

The daemon (what kvmnftd.service runs; Type=notify): follows libvirt's
network events and ruleset changes and keeps the rules current.

  --events MODE     auto (default): libvirt-dbus when it is on the system bus
                    or can be activated, else virsh net-event; with libvirt's
                    modular daemons, virsh net-event on network:///system
${COMMON}

Examples:
  kvmnftd run --events virsh --log-level debug
`,
  reload: `Usage: kvmnftd reload

Makes the running daemon re-read its configuration (SIGHUP) and returns when
that reload is done (ExecReload= of kvmnftd.service). Exit 1 if it was rejected.
${COMMON}

Examples:
  kvmnftd reload
`,
  status: `Usage: kvmnftd status [--json] [--from-xml FILE ...]

Reads the live system (ruleset, libvirt, the daemon's state) and shows per
active network its bridge, mode and subnets and whether its NAT, input and
forward rules are present and current, plus the two jumps and the daemon,
and the packets its rules counted per kind (as kvmnftd metrics sums them).
Answers even when libvirt or the daemon cannot be reached, saying so.

  --json            machine-readable (schema: docs/status.schema.json,
                    described in docs/operation.md)
  --from-xml FILE   check against networks from XML files instead of libvirt
                    (repeatable; each file counts as an active network)
${COMMON}

Exit codes: 0 everything as planned, 3 something missing or stale,
1 libvirt or the ruleset could not be read (the report still says what was).

Examples:
  kvmnftd status
  kvmnftd status --json | jq '.networks[] | select(.ok | not)'
`,
  metrics: `Usage: kvmnftd metrics

Prints Prometheus text exposition (format 0.0.4): the packets and bytes of
kvmnftd's rules per libvirt network and kind of rule (nat, port_forwards,
accepted_in, accepted_out, host_services, dropped_by_policy), read from the
live rule counters, and the running daemon's own figures (passes,
transactions, drift repairs, libvirt restores, last pass duration, degraded).
Without a running daemon it prints the rule counters and
kvmnftd_daemon_up 0. The metric names are listed in docs/operation.md.
For node_exporter's textfile collector, the daemon can write the same text
to a file ([metrics] textfile in kvmnftd.toml).
${COMMON}

Exit codes: 0 printed, 1 the ruleset could not be read (the daemon's figures
are still printed, with kvmnftd_ruleset_readable 0).

Examples:
  kvmnftd metrics
  kvmnftd metrics | promtool check metrics
`,
  doctor: `Usage: kvmnftd doctor [--json] [--from-xml FILE ...]

Looks for what besides kvmnftd's own rules breaks guest networking: other
drop-policy base chains (a second admin table, Docker, iptables-nft),
iptables-legacy rules, forwarding sysctls, br_netfilter, libvirt's firewall
backend and its private chains, libvirt-dbus, firewalld, the nft version.
Each finding has a severity, the evidence and the exact fix; the finding ids
are listed in docs/troubleshooting.md.

  --json            the findings as JSON
  --from-xml FILE   networks from XML files instead of libvirt
                    (repeatable; each file counts as an active network)
${COMMON}

Exit codes: 0 nothing above "info", 3 at least one warning or error,
1 the check itself failed.

Examples:
  kvmnftd doctor
  kvmnftd doctor --json | jq -r '.findings[] | "\\(.severity) \\(.id)"'
`,
  check: `Usage: kvmnftd check [--config FILE]

Validates a configuration file without touching anything: its TOML syntax,
every key and value, the rules between keys, and names that nft would refuse.
Reads only the file: needs no root, no libvirt and no nft (what Ansible's
\`template: validate='kvmnftd check --config %s'\` runs).

Prints nothing and exits 0 when the file is fine. Otherwise prints one line
per problem on stderr, "FILE: KEY: what was expected, got VALUE", and exits 2.
Without --config it checks /etc/kvmnftd/kvmnftd.toml (absent: the defaults,
which are fine).

Left to \`kvmnftd doctor\`, because they need the live host: whether the
networks, tables and chains the config names exist; whether a port forward's
guest exists and has an address; whether a forwarded host port collides with
a listener on the host; whether the running nft accepts the rules.

  --config FILE     the file to check
${COMMON}

Exit codes: 0 the file is fine, 2 at least one problem.

Examples:
  kvmnftd check --config /etc/kvmnftd/kvmnftd.toml.new
`,
};
