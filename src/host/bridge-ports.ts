// The ports of Linux bridges as the kernel lists them (/sys/class/net/<bridge>/brif/<port>): isolate_guests'
// input (nft/policy.ts). Read at every pass, never remembered: a guest's tap joins its bridge as the guest
// starts and leaves as it stops, and the pass that follows names it.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { BridgePorts } from '../nft/desired.js';

export const SYSFS_NET = '/sys/class/net';

/** Each bridge's ports, sorted; a bridge that does not exist (yet) has none. Bridge names are safe ifnames. */
export async function readBridgePorts(bridges: readonly string[], root = SYSFS_NET): Promise<BridgePorts> {
  const entries = await Promise.all(
    bridges.map(async (bridge): Promise<[string, string[]]> => {
      try {
        return [bridge, (await readdir(join(root, bridge, 'brif'))).sort()];
      } catch {
        return [bridge, []];
      }
    }),
  );
  return Object.fromEntries(entries);
}
