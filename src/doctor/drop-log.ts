// What log_drops wrote to the kernel log, read back for doctor: the flows a network's policy dropped
// ("203.0.113.9:tcp/443"), from the lines nft's `log` prints (`<prefix>IN=virbr0 OUT=eth0 ... SRC=... DST=...
// PROTO=TCP SPT=... DPT=443 ...`). Pure; the reader of /dev/kmsg is in gather.ts. The kernel writes an IPv6
// address with every group in full (`DST=2001:0db8:0000:...:0009`): named as the config writes it (2001:db8::9).
import { canonicalIp } from '../net/ip.js';

/** One destination a policy dropped traffic to, with how many logged packets went there. */
export interface DroppedFlow {
  /** `203.0.113.9:tcp/443`, `[2001:db8::1]:udp/53`, `203.0.113.9` (no ports: icmp and the like). */
  flow: string;
  packets: number;
}

/** The flows in the lines that carry this prefix, most packets first (then by text), at most `max`. */
export function droppedFlows(lines: readonly string[], prefix: string, max = 3): DroppedFlow[] {
  const counts = new Map<string, number>();
  for (const line of lines) {
    const at = line.indexOf(prefix);
    if (at < 0) continue;
    const fields = new Map<string, string>();
    for (const m of line.slice(at + prefix.length).matchAll(/\b([A-Z]+)=(\S*)/g)) fields.set(m[1]!, m[2]!);
    const dst = fields.get('DST');
    if (!dst) continue;
    const addr = canonicalIp(dst) ?? dst;
    const host = addr.includes(':') ? `[${addr}]` : addr;
    const proto = fields.get('PROTO')?.toLowerCase();
    const port = fields.get('DPT');
    const flow = proto && port ? `${host}:${proto}/${port}` : addr;
    counts.set(flow, (counts.get(flow) ?? 0) + 1);
  }
  return [...counts.entries()]
    .map(([flow, packets]) => ({ flow, packets }))
    .sort((a, b) => b.packets - a.packets || (a.flow < b.flow ? -1 : a.flow > b.flow ? 1 : 0))
    .slice(0, max);
}
