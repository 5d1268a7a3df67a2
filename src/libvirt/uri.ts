// Which libvirt URI to ask about networks. With libvirt's modular daemons
// (virtqemud, virtnetworkd: Fedora, RHEL, openSUSE), qemu:///system reaches
// the network driver through virtqemud, which opens its own connection to
// virtnetworkd once per client and never re-opens it: after a virtnetworkd
// restart the client's event registrations are silently gone and its network
// calls fail ("client socket is closed") while the connection itself stays up.
// network:///system talks to virtnetworkd itself: its restart ends the
// connection visibly, and it works without virtqemud (which may be idle-exited
// or not installed).
import { existsSync } from 'node:fs';

/** The socket of libvirt's modular network daemon; libvirt's client connects to it when it exists. */
export const VIRTNETWORKD_SOCKET = '/run/libvirt/virtnetworkd-sock';

export function modularNetworkDaemon(): boolean {
  return existsSync(VIRTNETWORKD_SOCKET);
}

/** network:///system instead of qemu:///system where virtnetworkd runs; any other URI as given. */
export function networkUri(uri: string, modular: boolean): string {
  return uri === 'qemu:///system' && modular ? 'network:///system' : uri;
}

/**
 * The URI domains are listed on (port forwards to a named guest): the hypervisor driver's. Where the
 * configured URI is the network driver's own (network:///system), domains live on qemu:///system.
 */
export function domainUri(uri: string): string {
  return uri === 'network:///system' ? 'qemu:///system' : uri;
}
