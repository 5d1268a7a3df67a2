// Chooses and opens the event transport: libvirt-dbus when it is on the bus
// (or can be activated), `virsh net-event` otherwise. Both report "something
// changed" and list active networks; the reconciler does the rest.
//
// Opened with `guests` (a port forward names its guest: guestFactsNeeded),
// the watch also reports domain lifecycle events (libvirt-dbus's DomainEvent
// on the same connect object; with virsh a second stream, `virsh event`, on
// the domains' URI) and lists the running domains. Without, domain events
// are not even subscribed to: starting VMs costs no pass. With `metadata`
// (metadata forwards on: [metadata_forwards] host_ports) it also reports a
// change of kvmnftd's element in a domain's <metadata> (libvirt-dbus's
// MetadataChange; virsh: a third stream, `virsh event --event
// metadata-change`), so that a forward set with `virsh metadata --live` works
// at once. Changes of other namespaces' metadata start no pass.
//
// Each transport's modules load when it is opened (dbus-next only for D-Bus,
// the virsh shell and streams only for virsh): what a daemon never uses costs
// it no resident memory.
import type { LibvirtDbusClient } from '../libvirt/dbus-client.js';
import { METADATA_NAMESPACE } from '../libvirt/metadata-forwards.js';
import type { DomainXml } from '../libvirt/guest-facts.js';
import type { NetworkParse } from '../libvirt/model.js';
import { parseNetworkXml } from '../libvirt/parse-network-xml.js';
import { domainUri, modularNetworkDaemon, networkUri } from '../libvirt/uri.js';
import type { VirshShell } from '../libvirt/virsh-shell.js';

export type EventsMode = 'auto' | 'dbus' | 'virsh';
export type Transport = 'dbus' | 'virsh';

export interface WatchCallbacks {
  onChange: (reason: string, network?: string) => void;
  onFault: (reason: string) => void;
  /** Something worth a log line that needs no reconnect (a virsh shell restarted). */
  onNote?: (message: string) => void;
}

export interface LibvirtWatch {
  readonly transport: Transport;
  /** Opened for port forwards to named guests: domain events reported, domains listed. */
  readonly guests: boolean;
  activeNetworks(): Promise<NetworkParse[]>;
  /** The running domains' XML. */
  runningDomains(): Promise<DomainXml[]>;
  close(): void;
}

/** Why the fallback to virsh happened, when it did (for the log). */
export interface OpenedWatch {
  watch: LibvirtWatch;
  /** One line for the log: which transport and why. */
  why: string;
}

/** Why --events auto skips libvirt-dbus where virtnetworkd runs (libvirt/uri.ts). */
const DBUS_ON_MODULAR =
  'libvirt-dbus reaches virtnetworkd through virtqemud and loses it for good when virtnetworkd restarts';

export async function openWatch(
  mode: EventsMode,
  uri: string,
  cb: WatchCallbacks,
  modular = modularNetworkDaemon(),
  guests = false,
  metadata = false,
): Promise<OpenedWatch> {
  const direct = networkUri(uri, modular);
  const on = direct === uri ? '' : ` on ${direct} (modular libvirt: virtnetworkd)`;
  let why = `events: virsh net-event${on} (--events virsh)`;
  if (mode !== 'virsh') {
    const { objectPathForUri } = await import('../libvirt/dbus-client.js');
    const path = objectPathForUri(uri);
    if (path === undefined) {
      if (mode === 'dbus') throw new Error(`--events dbus: libvirt-dbus serves qemu:///system only, not ${uri}`);
      why = `events: virsh net-event (libvirt-dbus serves qemu:///system only, not ${uri})`;
    } else if (mode === 'auto' && direct !== uri) {
      // libvirt-dbus only speaks qemu:///system, i.e. through virtqemud (libvirt/uri.ts).
      why = `events: virsh net-event${on}, not libvirt-dbus: ${DBUS_ON_MODULAR}`;
    } else {
      try {
        const watch = await openDbus(path, cb, guests, metadata);
        const caveat = direct === uri ? '' : `; beware, ${DBUS_ON_MODULAR} (--events auto avoids it)`;
        return {
          watch,
          why: `events: libvirt-dbus on the system bus (org.libvirt ${watch.owner ?? 'activated'})${caveat}`,
        };
      } catch (err) {
        if (mode === 'dbus') throw err;
        why = `events: virsh net-event${on}, because libvirt-dbus is not usable: ${(err as Error).message}`;
      }
    }
  }
  return {
    watch: await openVirsh(direct, domainUri(uri), guests, metadata, cb),
    why: guests
      ? `${why}; domain events${metadata ? ' (and metadata changes)' : ''}: virsh event on ${domainUri(uri)}`
      : why,
  };
}

async function openDbus(
  path: string,
  cb: WatchCallbacks,
  guests: boolean,
  metadata: boolean,
): Promise<LibvirtWatch & { owner: string | undefined }> {
  // The handlers may run before connect() resolves: they find the client here.
  const ref: { client?: LibvirtDbusClient } = {};
  const { LibvirtDbusClient } = await import('../libvirt/dbus-client.js');
  const c = await LibvirtDbusClient.connect(path, {
    onNetworkEvent: ({ event, path: networkPath }) => cb.onChange(`network ${event}`, networkPath),
    ...(guests ? { onDomainEvent: ({ event }: { event: string }) => cb.onChange(`domain ${event}`) } : {}),
    ...(metadata
      ? {
          onMetadataChange: ({ uri }: { uri: string }) => {
            if (uri === METADATA_NAMESPACE) cb.onChange('domain metadata-change (kvmnftd forwards)');
          },
        }
      : {}),
    onOwnerChange: (owner) => {
      if (owner === undefined) {
        // libvirt-dbus exited (it does when idle, or crashed): a call
        // re-activates it and re-opens its libvirt event callbacks.
        void ref.client?.listNetworkPaths().then(
          () => ref.client?.refreshOwner(),
          () => undefined,
        );
      }
      cb.onChange(owner === undefined ? 'org.libvirt left the bus' : 'org.libvirt has a new owner');
    },
    onFault: (error) => cb.onFault(`D-Bus: ${error.message}`),
  });
  ref.client = c;
  return {
    transport: 'dbus',
    guests,
    owner: c.currentOwner,
    activeNetworks: () => c.activeNetworks(),
    runningDomains: () => c.runningDomains(),
    close: () => c.close(),
  };
}

async function openVirsh(
  uri: string,
  domainsUri: string,
  guests: boolean,
  metadata: boolean,
  cb: WatchCallbacks,
): Promise<LibvirtWatch> {
  const [{ VirshShell }, { VirshEventStream }] = await Promise.all([
    import('../libvirt/virsh-shell.js'),
    import('../libvirt/virsh-events.js'),
  ]);
  // One interactive virsh per URI answers the passes' listings (virsh-shell.ts).
  const shells = new Map<string, VirshShell>();
  const shell = (u: string): VirshShell => {
    let s = shells.get(u);
    if (!s) shells.set(u, (s = new VirshShell(u, { onFault: (reason) => cb.onNote?.(reason) })));
    return s;
  };
  const list = async () => (await shell(uri).activeNetworks()).map(({ name, xml }) => parseNetworkXml(xml, name));
  try {
    await list(); // fails fast while libvirt is unreachable, instead of a stream that dies at once
  } catch (err) {
    shells.forEach((s) => s.close());
    throw err;
  }
  const streams = [new VirshEventStream(uri, 'network')];
  if (guests) streams.push(new VirshEventStream(domainsUri, 'domain'));
  if (metadata) streams.push(new VirshEventStream(domainsUri, 'metadata'));
  for (const stream of streams)
    stream.start(
      (e) => {
        if (e.object === 'network') cb.onChange(`network ${e.event}`, e.name);
        else if (e.object === 'domain') cb.onChange(`domain ${e.event}`);
        else if (e.uri === METADATA_NAMESPACE) cb.onChange('domain metadata-change (kvmnftd forwards)');
      },
      (reason) => cb.onFault(reason),
    );
  return {
    transport: 'virsh',
    guests,
    activeNetworks: list,
    runningDomains: () => shell(domainsUri).runningDomains(),
    close: () => {
      streams.forEach((s) => s.stop());
      shells.forEach((s) => s.close());
    },
  };
}
