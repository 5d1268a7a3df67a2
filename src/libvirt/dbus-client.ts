// libvirt over D-Bus (libvirt-dbus, bus name org.libvirt): network listing,
// XML, and NetworkEvent signals without a process per event; the running
// domains' XML and their DomainEvent (lifecycle) signals for port forwards,
// and their MetadataChange signals (org.libvirt.Domain, on each domain's own
// object) for forwards set in a domain's <metadata>.
//
// Two properties of dbus-next shape this module. A proxy-object signal
// subscription goes silent once the service restarts (its owner is stale), so
// we subscribe with an explicit AddMatch and filter raw messages ourselves,
// accepting NetworkEvent only from the current owner of org.libvirt. And a
// dead bus makes later calls hang forever, so every call has a time-out
// (dbus-call.ts) and the connection's end is reported as a fault for the
// caller to reconnect.
import dbus from 'dbus-next';
import type { MessageBus, MessageLike, Message as DbusMessage } from 'dbus-next';
import { busDaemonCall, DbusCaller, DbusError } from './dbus-call.js';
import type { NetworkParse } from './model.js';
import { domainXmlName } from './forward-targets.js';
import { parseNetworkXml } from './parse-network-xml.js';
import { mapLimit } from '../util/map-limit.js';

const { systemBus } = dbus;
const SIGNAL = dbus.MessageType.SIGNAL;

export const LIBVIRT_BUS_NAME = 'org.libvirt';
const CONNECT_IFACE = 'org.libvirt.Connect';
const NETWORK_IFACE = 'org.libvirt.Network';
const DOMAIN_IFACE = 'org.libvirt.Domain';
const LIST_ACTIVE = 2; // VIR_CONNECT_LIST_NETWORKS_ACTIVE
const LIST_DOMAINS_ACTIVE = 1; // VIR_CONNECT_LIST_DOMAINS_ACTIVE
const CALL_TIMEOUT_MS = 10_000;
/** D-Bus calls one pass keeps in flight: libvirt-dbus serves them one libvirt call at a time anyway. */
const MAX_PARALLEL_CALLS = 16;

export const NETWORK_EVENTS = ['defined', 'undefined', 'started', 'stopped'] as const;
/** virDomainEventType, in order. */
export const DOMAIN_EVENTS = [
  'defined',
  'undefined',
  'started',
  'suspended',
  'resumed',
  'stopped',
  'shutdown',
  'pmsuspended',
  'crashed',
] as const;

/** libvirt-dbus exports one object per hypervisor driver on the system bus. */
export function objectPathForUri(uri: string): string | undefined {
  return uri === 'qemu:///system' ? '/org/libvirt/QEMU' : undefined;
}

export interface NetworkEventInfo {
  event: string;
  /** libvirt-dbus network object path (…/network/<uuid>). */
  path: string;
}

export interface DomainEventInfo {
  event: string;
  /** libvirt-dbus domain object path (…/domain/_<uuid>). */
  path: string;
}

/** VIR_DOMAIN_METADATA_ELEMENT: a namespaced element of <metadata> changed (0, 1: title, description). */
const METADATA_ELEMENT = 2;

export interface MetadataChangeInfo {
  /** The namespace URI of the element that changed. */
  uri: string;
  /** libvirt-dbus domain object path (…/domain/_<uuid>). */
  path: string;
}

export interface ChangeHandlers {
  onNetworkEvent: (info: NetworkEventInfo) => void;
  /** An element of a domain's <metadata> changed (MetadataChange); absent: not subscribed. */
  onMetadataChange?: (info: MetadataChangeInfo) => void;
  /** A domain's lifecycle event (DomainEvent): port forwards to a named guest may change. */
  onDomainEvent?: (info: DomainEventInfo) => void;
  /** org.libvirt changed owner (libvirt-dbus restarted or exited). */
  onOwnerChange: (owner: string | undefined) => void;
  /** The bus connection is gone; the client is unusable. */
  onFault: (error: Error) => void;
}

export class LibvirtDbusClient {
  private owner: string | undefined;
  private closed = false;
  private readonly caller: DbusCaller;

  private constructor(
    private readonly bus: MessageBus,
    private readonly path: string,
  ) {
    this.caller = new DbusCaller(bus, CALL_TIMEOUT_MS);
  }

  /** Connects to the system bus ($DBUS_SYSTEM_BUS_ADDRESS is honoured). */
  static async connect(path: string, handlers: ChangeHandlers): Promise<LibvirtDbusClient> {
    const bus = systemBus();
    const client = new LibvirtDbusClient(bus, path);
    try {
      await client.attach(handlers);
    } catch (err) {
      // An open bus connection keeps Node's event loop alive: left behind by
      // a failed attach (e.g. libvirt-dbus refused), it made `kvmnftd run`
      // hang on SIGTERM after its fallback to virsh.
      client.close();
      throw err;
    }
    return client;
  }

  private async attach(handlers: ChangeHandlers): Promise<void> {
    const fault = (error: Error): void => {
      this.caller.fail(new DbusError(`D-Bus connection failed: ${error.message}`));
      if (this.closed) return;
      this.closed = true;
      handlers.onFault(error);
    };
    this.bus.on('error', (err: unknown) => fault(err instanceof Error ? err : new Error(String(err))));
    // dbus-next does not surface the stream's end on the bus object.
    (this.bus as unknown as { _connection?: NodeJS.EventEmitter })._connection?.on('end', () =>
      fault(new DbusError('the D-Bus connection was closed')),
    );

    this.bus.on('message', (msg: DbusMessage) => {
      if (msg.type !== SIGNAL) return;
      if (msg.interface === CONNECT_IFACE && msg.member === 'NetworkEvent' && msg.path === this.path) {
        if (this.owner === undefined || msg.sender !== this.owner) return;
        const [networkPath, code] = msg.body as [string, number];
        handlers.onNetworkEvent({ path: networkPath, event: NETWORK_EVENTS[code] ?? `event ${code}` });
      } else if (msg.interface === CONNECT_IFACE && msg.member === 'DomainEvent' && msg.path === this.path) {
        if (this.owner === undefined || msg.sender !== this.owner) return;
        const [domainPath, code] = msg.body as [string, number];
        handlers.onDomainEvent?.({ path: domainPath, event: DOMAIN_EVENTS[code] ?? `event ${code}` });
      } else if (
        msg.interface === DOMAIN_IFACE &&
        msg.member === 'MetadataChange' &&
        msg.path?.startsWith(`${this.path}/domain/`)
      ) {
        if (this.owner === undefined || msg.sender !== this.owner) return;
        const [type, uri] = msg.body as [number, string];
        if (type === METADATA_ELEMENT) handlers.onMetadataChange?.({ path: msg.path, uri });
      } else if (
        msg.interface === 'org.freedesktop.DBus' &&
        msg.member === 'NameOwnerChanged' &&
        msg.sender === 'org.freedesktop.DBus'
      ) {
        const [name, , newOwner] = msg.body as [string, string, string];
        if (name !== LIBVIRT_BUS_NAME) return;
        this.owner = newOwner === '' ? undefined : newOwner;
        handlers.onOwnerChange(this.owner);
      }
    });

    await this.call(
      busDaemonCall('AddMatch', 's', [
        `type='signal',interface='${CONNECT_IFACE}',member='NetworkEvent',path='${this.path}'`,
      ]),
    );
    if (handlers.onDomainEvent)
      await this.call(
        busDaemonCall('AddMatch', 's', [
          `type='signal',interface='${CONNECT_IFACE}',member='DomainEvent',path='${this.path}'`,
        ]),
      );
    // Emitted on each domain's own object: every path under this connection's.
    if (handlers.onMetadataChange)
      await this.call(
        busDaemonCall('AddMatch', 's', [
          `type='signal',interface='${DOMAIN_IFACE}',member='MetadataChange',path_namespace='${this.path}'`,
        ]),
      );
    await this.call(
      busDaemonCall('AddMatch', 's', [
        "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged'," +
          `arg0='${LIBVIRT_BUS_NAME}'`,
      ]),
    );
    // The first method call activates libvirt-dbus if needed, and makes it
    // (re)open its libvirt connection and event callbacks.
    await this.listNetworkPaths();
    await this.refreshOwner();
  }

  async refreshOwner(): Promise<string | undefined> {
    try {
      const [owner] = (await this.call(busDaemonCall('GetNameOwner', 's', [LIBVIRT_BUS_NAME]))) as [string];
      this.owner = owner;
    } catch {
      this.owner = undefined;
    }
    return this.owner;
  }

  get currentOwner(): string | undefined {
    return this.owner;
  }

  async listNetworkPaths(): Promise<string[]> {
    const [paths] = (await this.call({
      destination: LIBVIRT_BUS_NAME,
      path: this.path,
      interface: CONNECT_IFACE,
      member: 'ListNetworks',
      signature: 'u',
      body: [LIST_ACTIVE],
    })) as [string[]];
    return paths;
  }

  async networkXml(path: string): Promise<string> {
    const [xml] = (await this.call({
      destination: LIBVIRT_BUS_NAME,
      path,
      interface: NETWORK_IFACE,
      member: 'GetXMLDesc',
      signature: 'u',
      body: [0],
    })) as [string];
    return xml;
  }

  /** Parse results of every active network. */
  async activeNetworks(): Promise<NetworkParse[]> {
    const paths = await this.listNetworkPaths();
    return mapLimit(paths, MAX_PARALLEL_CALLS, async (p) => parseNetworkXml(await this.networkXml(p), p));
  }

  /** The XML of every running domain (org.libvirt.Domain.GetXMLDesc), named from the XML. */
  async runningDomains(): Promise<Array<{ name: string; xml: string }>> {
    const [paths] = (await this.call({
      destination: LIBVIRT_BUS_NAME,
      path: this.path,
      interface: CONNECT_IFACE,
      member: 'ListDomains',
      signature: 'u',
      body: [LIST_DOMAINS_ACTIVE],
    })) as [string[]];
    const all = await mapLimit(paths, MAX_PARALLEL_CALLS, async (path) => {
      const [xml] = (await this.call({
        destination: LIBVIRT_BUS_NAME,
        path,
        interface: DOMAIN_IFACE,
        member: 'GetXMLDesc',
        signature: 'u',
        body: [0],
      })) as [string];
      const name = domainXmlName(xml);
      return name === undefined ? [] : [{ name, xml }];
    });
    return all.flat();
  }

  close(): void {
    this.closed = true;
    this.bus.disconnect();
  }

  private call(message: MessageLike): Promise<unknown[]> {
    if (this.closed) return Promise.reject(new DbusError(`D-Bus connection closed (calling ${message.member})`));
    return this.caller.call(message);
  }
}
