// Where network definitions come from for one-shot commands.
import { readFile } from 'node:fs/promises';
import { parseNetworkXml } from './parse-network-xml.js';
import type { NetworkParse } from './model.js';
import { modularNetworkDaemon, networkUri } from './uri.js';
import { activeNetworkXml } from './virsh.js';

export type NetworkSource = () => Promise<NetworkParse[]>;

/** Files as `virsh net-dumpxml` prints them; each counts as an active network. */
export function xmlFileSource(files: readonly string[]): NetworkSource {
  return async () =>
    Promise.all(
      files.map(async (file) => {
        const parsed = parseNetworkXml(await readFile(file, 'utf8'), file);
        return parsed;
      }),
    );
}

/**
 * `--from-xml` files when given, else libvirt through virsh: how every one-shot
 * command reads networks (on network:///system where virtnetworkd runs: uri.ts).
 */
export function commandSource(fromXml: readonly string[], uri: string): NetworkSource {
  return fromXml.length > 0 ? xmlFileSource(fromXml) : virshSource(networkUri(uri, modularNetworkDaemon()));
}

export function virshSource(uri: string): NetworkSource {
  return async () => (await activeNetworkXml(uri)).map(({ name, xml }) => parseNetworkXml(xml, name));
}
