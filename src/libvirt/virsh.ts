// Networks from libvirt through virsh (argument arrays, no shell).
import { runChild } from '../util/child.js';
import { mapLimit } from '../util/map-limit.js';

const VIRSH_TIMEOUT_MS = 15_000;
/** virsh processes one pass runs at once: each connects to libvirtd afresh. */
const MAX_PARALLEL_VIRSH = 8;

export class VirshError extends Error {
  override name = 'VirshError';
}

async function virsh(uri: string, args: string[]): Promise<string> {
  const result = await runChild('virsh', ['-q', '-c', uri, ...args], VIRSH_TIMEOUT_MS);
  if (result.failed) {
    let cause = (result.stderr || '').trim().replace(/\s*\n\s*/g, '; ') || `exit code ${String(result.exitCode)}`;
    if (result.code === 'ENOENT') cause = 'virsh not found: install libvirt-clients';
    else if (result.timedOut) cause = `no answer within ${VIRSH_TIMEOUT_MS / 1000} s`;
    throw new VirshError(`virsh ${args[0] ?? ''} (${uri}) failed: ${cause}`);
  }
  return result.stdout;
}

/** The XML of every active network, by name. */
export async function activeNetworkXml(uri: string): Promise<Array<{ name: string; xml: string }>> {
  const names = (await virsh(uri, ['net-list', '--name']))
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return mapLimit(names, MAX_PARALLEL_VIRSH, async (name) => ({
    name,
    xml: await virsh(uri, ['net-dumpxml', '--network', name]),
  }));
}

/** The XML of every running domain (`virsh list --name` lists running ones), by name. */
export async function runningDomainXml(uri: string): Promise<Array<{ name: string; xml: string }>> {
  const names = (await virsh(uri, ['list', '--name']))
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return mapLimit(names, MAX_PARALLEL_VIRSH, async (name) => ({
    name,
    xml: await virsh(uri, ['dumpxml', '--domain', name]),
  }));
}
