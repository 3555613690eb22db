import { spawn, type ChildProcess } from 'node:child_process';
import type { Server } from 'node:net';

/**
 * Listening sockets inside another network namespace, for servers that run in this process.
 *
 * A socket belongs to the namespace it was created in. Node cannot enter a namespace, so a small
 * helper process is started inside it (`ip netns exec NS node`), creates the listening socket there
 * and hands it over through the IPC channel (SCM_RIGHTS); this process then serves it, e.g.
 * `httpServer.listen(handle)`. The helper closes its own copy, so only this process accepts.
 * Used to put the Kubernetes API stand-in at an address a sandbox node can reach, while the test
 * keeps full control of it.
 */

const HELPER = `
const net = require('node:net');
process.on('message', (m) => {
  const s = net.createServer();
  s.once('error', (e) => process.send({ id: m.id, error: e.message }));
  s.listen({ host: m.host, port: m.port }, () => {
    process.send({ id: m.id }, s, () => s.close());
  });
});
process.on('disconnect', () => process.exit(0));
`;

export class NetnsListener {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (s: Server) => void; reject: (e: Error) => void }>();

  private constructor(
    private readonly child: ChildProcess,
    readonly netns: string,
  ) {
    child.on('message', (msg: { id: number; error?: string }, handle?: unknown) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error !== undefined || handle === undefined) {
        p.reject(new Error(`listen in ${netns}: ${msg.error ?? 'no handle received'}`));
      } else p.resolve(handle as Server);
    });
    child.on('exit', () => {
      for (const p of this.pending.values()) p.reject(new Error(`listener helper in ${netns} exited`));
      this.pending.clear();
    });
  }

  static start(netns: string): NetnsListener {
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', HELPER], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    return new NetnsListener(child, netns);
  }

  /** A listening TCP server socket on host:port inside the namespace. */
  listen(host: string, port: number): Promise<Server> {
    const id = this.nextId++;
    return new Promise<Server>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ id, host, port });
    });
  }

  /** Ends the helper (sockets already handed over stay open in this process). */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }
}
