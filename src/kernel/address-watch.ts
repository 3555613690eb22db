import { readdir, readFile, readlink } from 'node:fs/promises';
import { startProcess, type ChildHandle } from '../util/exec.js';
import { log } from '../util/log.js';
import { readAddressShow, type AddressShow, type InterfaceAddress } from './netif.js';

/**
 * A network namespace's addresses (and links' names), read with `ip -j address` only when they may have changed.
 *
 * kube-proxy reads the node's addresses every sync (in-process, over netlink); a fork of a large
 * daemon for `ip` costs 8–15 ms per sync at 10k Services. Here a long-lived `ip monitor address`
 * reports every address added, removed or changed (tentative → usable too; with `links`, every link
 * added, removed or changed), and the last read is
 * reused until it reports something. The cache is trusted only while the monitor is known to be
 * subscribed (its netlink socket has joined the address groups, seen in /proc) since before the read
 * started, and no line arrived while the read ran. Otherwise, and whenever the monitor is down,
 * every call reads, as before; a monitor that exited is started again on the next call (at most
 * once per `restartMs`).
 */
export class AddressWatch {
  private child: ChildHandle | undefined;
  private subscribed = false;
  /** Bumped by every monitor line and every monitor start or exit: a cached read is for one generation. */
  private generation = 0;
  private cached: { readonly generation: number; readonly show: AddressShow } | undefined;
  private watching = false;
  private lastStart = Number.NEGATIVE_INFINITY;
  /** `ip -j address` reads so far (tests, logs). */
  reads = 0;

  constructor(
    private readonly opts: {
      readonly netns?: string;
      readonly restartMs?: number;
      /** Watch links too (`ip monitor address link`): for callers that read the links' names. */
      readonly links?: boolean;
      /** The read (default: `ip -j address show` in `netns`). */
      readonly read?: () => Promise<AddressShow>;
    } = {},
  ) {}

  /** Starts the monitor (a daemon calls this once; one-shot commands read every time). */
  watch(): void {
    this.watching = true;
    this.start();
  }

  /** PID of the running monitor (tests), when it runs. */
  get monitorPid(): number | undefined {
    return this.child?.pid;
  }

  /** Whether the next call can answer from the cache (tests). */
  get fresh(): boolean {
    return this.subscribed && this.cached?.generation === this.generation;
  }

  /** The namespace's inet/inet6 addresses, from the cache when nothing changed since the last read. */
  async addresses(): Promise<InterfaceAddress[]> {
    return (await this.show()).addresses;
  }

  /** `ip -j address show`: its addresses and its links' names (the cache's, when nothing changed). */
  async show(): Promise<AddressShow> {
    if (this.watching && this.child === undefined) this.start();
    const cached = this.cached;
    if (this.subscribed && cached?.generation === this.generation) return cached.show;
    const trusted = this.subscribed;
    const generation = this.generation;
    const show = await (this.opts.read ?? (() => readAddressShow(this.opts.netns)))();
    this.reads++;
    if (trusted && this.subscribed && generation === this.generation) this.cached = { generation, show };
    return show;
  }

  /**
   * The caller changed addresses or links itself: the next call reads (the monitor's report of it
   * may come after the caller's next read).
   */
  invalidate(): void {
    this.generation++;
  }

  /** Stops the monitor; later calls read every time. */
  async close(): Promise<void> {
    this.watching = false;
    const child = this.child;
    this.child = undefined;
    this.subscribed = false;
    this.generation++;
    await child?.stop(2000);
  }

  private start(): void {
    const now = performance.now();
    if (now - this.lastStart < (this.opts.restartMs ?? 1000)) return;
    this.lastStart = now;
    let child: ChildHandle;
    try {
      child = startProcess(['ip', 'monitor', 'address', ...(this.opts.links === true ? ['link'] : [])], {
        netns: this.opts.netns,
        stderr: 'apart',
        diesWithParent: true,
      });
    } catch (err) {
      log.warn('cannot start ip monitor: node addresses are read every sync', { error: err });
      return;
    }
    this.child = child;
    this.subscribed = false;
    this.generation++;
    child.onLine(() => this.generation++);
    // A complaint (e.g. "No buffer space available": events were dropped) invalidates as well.
    child.onErrorLine((l) => {
      this.generation++;
      log.debug('ip monitor', { stderr: l });
    });
    void child.exited.then((code) => {
      if (this.child !== child) return;
      this.child = undefined;
      this.subscribed = false;
      this.generation++;
      if (this.watching)
        log.warn('ip monitor exited; node addresses are read every sync until it is back', { code });
    });
    void this.awaitSubscription(child);
  }

  /** Polls /proc until the monitor's netlink socket has joined its groups (it prints nothing when it has). */
  private async awaitSubscription(child: ChildHandle): Promise<void> {
    const until = performance.now() + SUBSCRIBE_WAIT_MS;
    while (this.child === child && performance.now() < until) {
      if (await netlinkSubscribed(child.pid)) {
        if (this.child === child) this.subscribed = true;
        return;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    if (this.child === child) log.warn('ip monitor did not subscribe; node addresses are read every sync');
  }
}

const SUBSCRIBE_WAIT_MS = 10_000;

/**
 * Whether process `pid` holds a NETLINK_ROUTE socket bound to at least one multicast group, by its
 * socket inodes (/proc/PID/fd) and its namespace's netlink table (/proc/PID/net/netlink). False when
 * the process is gone.
 */
export async function netlinkSubscribed(pid: number): Promise<boolean> {
  try {
    const inodes = new Set<string>();
    for (const fd of await readdir(`/proc/${pid}/fd`)) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m) inodes.add(m[1]!);
    }
    if (inodes.size === 0) return false;
    return subscribedSockets(await readFile(`/proc/${pid}/net/netlink`, 'utf8')).some((i) => inodes.has(i));
  } catch {
    return false;
  }
}

/** Pure: the inodes of NETLINK_ROUTE sockets with a multicast group in /proc/net/netlink's text. */
export function subscribedSockets(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode; Eth 0 is NETLINK_ROUTE, Groups hex.
    if (f.length < 10 || f[1] !== '0' || /^0+$/.test(f[3]!)) continue;
    out.push(f[9]!);
  }
  return out;
}
