/**
 * The sandbox agent: one long-lived process per namespace, started by the sandbox with
 * `ip netns exec NS node [--import=tsx] agent.{ts,js} --name NAME --sandbox ID ...`.
 *
 * - Echo server: listens on the given TCP ports (dual-stack wildcard) and UDP ports (bound to each
 *   `--addr`, so a reply leaves from the address the request was sent to, or to the wildcards), and
 *   answers with one {@link EchoReply} JSON line per TCP connection, per line received on it, and
 *   per UDP datagram.
 * - Client: executes {@link AgentCommand} lines read from stdin, answering on stdout.
 * - Exits when stdin closes (its owner died), unless `--detached` (the CLI's long-lived agents,
 *   which the CLI kills by PID).
 *
 * This file is a program, not a library: importing it starts the agent.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import {
  DEFAULT_TIMEOUT_MS,
  hostPort,
  parseEchoReply,
  probeErrorOf,
  unmapIPv4,
  type AgentCommand,
  type AgentEvent,
  type AgentResponse,
  type EchoReply,
  type ProbeResult,
  type Proto,
  type RequestSpec,
} from './protocol.js';

const { values } = parseArgs({
  options: {
    name: { type: 'string' },
    sandbox: { type: 'string' },
    tcp: { type: 'string', multiple: true },
    udp: { type: 'string', multiple: true },
    addr: { type: 'string', multiple: true },
    detached: { type: 'boolean' },
  },
  strict: true,
});

const NAME = values.name ?? 'agent';
const ADDRS = values.addr ?? [];

function ports(list: string[] | undefined): number[] {
  return (list ?? [])
    .flatMap((s) => s.split(','))
    .filter((s) => s !== '')
    .map((s) => Number.parseInt(s, 10));
}

function emit(msg: AgentResponse | AgentEvent): void {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

function replyLine(ip: string, port: number, peerAddr: string, peerPort: number, proto: Proto): string {
  const r: EchoReply = {
    pod: NAME,
    ip: unmapIPv4(ip),
    port,
    peer: hostPort(unmapIPv4(peerAddr), peerPort),
    proto,
  };
  return `${JSON.stringify(r)}\n`;
}

// ---------- servers ----------

const tcpServers = new Map<number, net.Server>();
const udpSockets = new Map<string, dgram.Socket>();

function onTcpConnection(sock: net.Socket): void {
  sock.on('error', () => sock.destroy());
  const answer = (): void => {
    if (sock.destroyed || !sock.writable) return;
    sock.write(
      replyLine(
        sock.localAddress ?? '',
        sock.localPort ?? 0,
        sock.remoteAddress ?? '',
        sock.remotePort ?? 0,
        'tcp',
      ),
    );
  };
  answer();
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      buf = buf.slice(nl + 1);
      answer();
    }
    if (buf.length > 65536) buf = '';
  });
  sock.on('end', () => sock.end());
}

function listenTcp(port: number): Promise<void> {
  if (tcpServers.has(port)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const srv = net.createServer(onTcpConnection);
    srv.once('error', reject);
    srv.listen({ port, host: '::', ipv6Only: false }, () => {
      srv.off('error', reject);
      srv.on('error', () => undefined);
      tcpServers.set(port, srv);
      resolve();
    });
  });
}

function bindUdp(port: number, address: string): Promise<void> {
  const key = hostPort(address, port);
  if (udpSockets.has(key)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const v6 = address.includes(':');
    const sock = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', ipv6Only: v6, reuseAddr: false });
    sock.once('error', reject);
    sock.on('message', (_msg, rinfo) => {
      sock.send(replyLine(address, port, rinfo.address, rinfo.port, 'udp'), rinfo.port, rinfo.address);
    });
    sock.bind({ port, address, exclusive: true }, () => {
      sock.off('error', reject);
      sock.on('error', () => undefined);
      udpSockets.set(key, sock);
      resolve();
    });
  });
}

async function listen(tcp: readonly number[], udp: readonly number[]): Promise<void> {
  const udpAddrs = ADDRS.length > 0 ? ADDRS : ['0.0.0.0', '::'];
  await Promise.all([...tcp.map(listenTcp), ...udp.flatMap((p) => udpAddrs.map((a) => bindUdp(p, a)))]);
}

// ---------- client ----------

function fail(code: string | undefined, detail: string): ProbeResult {
  return { ok: false, error: probeErrorOf(code), detail };
}

function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A TCP client socket with a line reader: `next()` resolves with the next reply line. */
class LineConn {
  private buf = '';
  private lines: string[] = [];
  private waiter: ((r: ProbeResult) => void) | undefined;
  private dead: ProbeResult | undefined;

  constructor(readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.buf += chunk;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
      }
      this.flush();
    });
    sock.on('error', (err) => this.die(fail(errCode(err), errText(err))));
    sock.on('end', () => this.die({ ok: false, error: 'closed', detail: 'connection closed by peer' }));
    sock.on('close', () => this.die({ ok: false, error: 'closed', detail: 'connection closed' }));
  }

  private die(r: ProbeResult): void {
    this.dead ??= r;
    this.flush();
  }

  private flush(): void {
    const w = this.waiter;
    if (!w) return;
    const line = this.lines.shift();
    if (line !== undefined) {
      this.waiter = undefined;
      const reply = parseEchoReply(line);
      w(
        reply
          ? { ok: true, reply }
          : { ok: false, error: 'error', detail: `unexpected reply: ${line.slice(0, 200)}` },
      );
    } else if (this.dead) {
      this.waiter = undefined;
      w(this.dead);
    }
  }

  next(timeoutMs: number): Promise<ProbeResult> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve({ ok: false, error: 'timeout', detail: `no reply within ${timeoutMs} ms` });
      }, timeoutMs);
      this.waiter = (r) => {
        clearTimeout(timer);
        resolve(r);
      };
      this.flush();
    });
  }
}

/** Connects and waits for the server's greeting line; the connection stays open on success. */
function tcpOpen(spec: RequestSpec): Promise<{ result: ProbeResult; conn?: LineConn }> {
  const timeoutMs = spec.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve) => {
    const started = Date.now();
    const sock = net.connect({
      host: spec.ip,
      port: spec.port,
      ...(spec.sourcePort !== undefined ? { localPort: spec.sourcePort } : {}),
      ...(spec.sourceIP !== undefined ? { localAddress: spec.sourceIP } : {}),
    });
    const conn = new LineConn(sock);
    let connected = false;
    const timer = setTimeout(() => {
      if (connected) return;
      sock.destroy();
      resolve({ result: { ok: false, error: 'timeout', detail: `connect timed out after ${timeoutMs} ms` } });
    }, timeoutMs);
    sock.once('error', (err) => {
      if (connected) return;
      clearTimeout(timer);
      resolve({ result: fail(errCode(err), errText(err)) });
    });
    sock.once('connect', () => {
      connected = true;
      clearTimeout(timer);
      void conn.next(Math.max(1, timeoutMs - (Date.now() - started))).then((result) => {
        if (result.ok) resolve({ result, conn });
        else {
          sock.destroy();
          resolve({ result });
        }
      });
    });
  });
}

/** Closes without TIME_WAIT when a fixed source port must be reusable at once. */
function closeConn(conn: LineConn, abortive: boolean): void {
  if (abortive) conn.sock.resetAndDestroy();
  else conn.sock.end();
}

async function tcpRequest(spec: RequestSpec): Promise<ProbeResult> {
  const { result, conn } = await tcpOpen(spec);
  if (conn) closeConn(conn, spec.sourcePort !== undefined);
  return result;
}

function udpRequest(spec: RequestSpec): Promise<ProbeResult> {
  const timeoutMs = spec.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve) => {
    const sock = dgram.createSocket(spec.ip.includes(':') ? 'udp6' : 'udp4');
    let done = false;
    const finish = (r: ProbeResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        sock.close();
      } catch {
        // already closed
      }
      resolve(r);
    };
    const timer = setTimeout(
      () => finish({ ok: false, error: 'timeout', detail: `no reply within ${timeoutMs} ms` }),
      timeoutMs,
    );
    // A connected socket: ICMP port unreachable comes back as ECONNREFUSED.
    sock.on('error', (err) => finish(fail(errCode(err), errText(err))));
    sock.on('message', (msg) => {
      const line = msg.toString('utf8').trim();
      const reply = parseEchoReply(line);
      finish(
        reply
          ? { ok: true, reply }
          : { ok: false, error: 'error', detail: `unexpected reply: ${line.slice(0, 200)}` },
      );
    });
    sock.bind(
      { port: spec.sourcePort ?? 0, ...(spec.sourceIP !== undefined ? { address: spec.sourceIP } : {}) },
      () => {
        sock.connect(spec.port, spec.ip, (err?: Error) => {
          if (err) return finish(fail(errCode(err), errText(err)));
          sock.send('probe\n', (e) => {
            if (e) finish(fail(errCode(e), errText(e)));
          });
        });
      },
    );
  });
}

const conns = new Map<number, LineConn>();

async function handle(cmd: AgentCommand): Promise<AgentResponse> {
  switch (cmd.op) {
    case 'request':
      return { id: cmd.id, result: cmd.proto === 'tcp' ? await tcpRequest(cmd) : await udpRequest(cmd) };
    case 'open': {
      if (cmd.proto !== 'tcp') return { id: cmd.id, failed: 'open supports tcp only' };
      const { result, conn } = await tcpOpen(cmd);
      if (conn) conns.set(cmd.conn, conn);
      return { id: cmd.id, result };
    }
    case 'send': {
      const conn = conns.get(cmd.conn);
      if (!conn) return { id: cmd.id, failed: `no open connection ${cmd.conn}` };
      if (conn.sock.writable) conn.sock.write('ping\n');
      return { id: cmd.id, result: await conn.next(cmd.timeoutMs ?? DEFAULT_TIMEOUT_MS) };
    }
    case 'close': {
      const conn = conns.get(cmd.conn);
      conns.delete(cmd.conn);
      if (conn) closeConn(conn, false);
      return { id: cmd.id, done: true };
    }
    case 'listen':
      await listen(cmd.tcpPorts ?? [], cmd.udpPorts ?? []);
      return { id: cmd.id, done: true };
  }
}

async function main(): Promise<void> {
  try {
    await listen(ports(values.tcp), ports(values.udp));
  } catch (err) {
    emit({ event: 'fatal', error: `agent ${NAME}: listen failed: ${errText(err)}` });
    process.exit(1);
  }
  emit({ event: 'ready', pid: process.pid });
  if (values.detached) return;
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let cmd: AgentCommand;
    try {
      cmd = JSON.parse(line) as AgentCommand;
    } catch {
      return;
    }
    handle(cmd).then(emit, (err: unknown) => emit({ id: cmd.id, failed: errText(err) }));
  });
  // The owner is gone: so are we.
  rl.on('close', () => process.exit(0));
}

void main();
