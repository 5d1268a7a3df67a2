// Chooses and opens the event transport: libvirt-dbus when it is on the bus
// (or can be activated), `virsh net-event` otherwise. Both report "something
// changed" and list active networks; the reconciler does the rest.
import { LibvirtDbusClient, objectPathForUri } from '../libvirt/dbus-client.js';
import type { NetworkParse } from '../libvirt/model.js';
import { virshSource } from '../libvirt/sources.js';
import { VirshEventStream } from '../libvirt/virsh-events.js';

export type EventsMode = 'auto' | 'dbus' | 'virsh';
export type Transport = 'dbus' | 'virsh';

export interface WatchCallbacks {
  onChange: (reason: string, network?: string) => void;
  onFault: (reason: string) => void;
}

export interface LibvirtWatch {
  readonly transport: Transport;
  activeNetworks(): Promise<NetworkParse[]>;
  close(): void;
}

/** Why the fallback to virsh happened, when it did (for the log). */
export interface OpenedWatch {
  watch: LibvirtWatch;
  /** One line for the log: which transport and why. */
  why: string;
}

export async function openWatch(mode: EventsMode, uri: string, cb: WatchCallbacks): Promise<OpenedWatch> {
  let why = 'events: virsh net-event (--events virsh)';
  if (mode !== 'virsh') {
    const path = objectPathForUri(uri);
    if (path === undefined) {
      if (mode === 'dbus') throw new Error(`--events dbus: libvirt-dbus serves qemu:///system only, not ${uri}`);
      why = `events: virsh net-event (libvirt-dbus serves qemu:///system only, not ${uri})`;
    } else {
      try {
        const watch = await openDbus(path, cb);
        return { watch, why: `events: libvirt-dbus on the system bus (org.libvirt ${watch.owner ?? 'activated'})` };
      } catch (err) {
        if (mode === 'dbus') throw err;
        why = `events: virsh net-event, because libvirt-dbus is not usable: ${(err as Error).message}`;
      }
    }
  }
  return { watch: await openVirsh(uri, cb), why };
}

async function openDbus(path: string, cb: WatchCallbacks): Promise<LibvirtWatch & { owner: string | undefined }> {
  // Callbacks can run before connect() returns: until then there is no client.
  let client: LibvirtDbusClient | undefined = undefined;
  client = await LibvirtDbusClient.connect(path, {
    onNetworkEvent: ({ event, path: networkPath }) => cb.onChange(`network ${event}`, networkPath),
    onOwnerChange: (owner) => {
      if (owner === undefined) {
        // libvirt-dbus exited (it does when idle, or crashed): a call
        // re-activates it and re-opens its libvirt event callbacks.
        void client?.listNetworkPaths().then(
          () => client?.refreshOwner(),
          () => undefined,
        );
      }
      cb.onChange(owner === undefined ? 'org.libvirt left the bus' : 'org.libvirt has a new owner');
    },
    onFault: (error) => cb.onFault(`D-Bus: ${error.message}`),
  });
  const c = client;
  return {
    transport: 'dbus',
    owner: c.currentOwner,
    activeNetworks: () => c.activeNetworks(),
    close: () => c.close(),
  };
}

async function openVirsh(uri: string, cb: WatchCallbacks): Promise<LibvirtWatch> {
  const list = virshSource(uri);
  await list(); // fails fast while libvirt is unreachable, instead of a stream that dies at once
  const stream = new VirshEventStream(uri);
  stream.start(
    (e) => cb.onChange(`network ${e.event}`, e.network),
    (reason) => cb.onFault(reason),
  );
  return { transport: 'virsh', activeNetworks: list, close: () => stream.stop() };
}
