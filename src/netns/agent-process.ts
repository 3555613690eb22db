import { createHash } from 'node:crypto';
import { access, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';
import { spawnConversation, spawnDetached, type Conversation } from '../util/exec.js';
import type { AgentCommand, AgentEvent, AgentResponse, ProbeResult, RequestSpec } from './protocol.js';

/**
 * Starting and talking to sandbox agents (src/netns/agent.ts), one long-lived process per namespace.
 *
 * The agent is a long-lived child with a JSON-lines conversation on its stdin/stdout; it is spawned
 * through src/util/exec.ts (spawnConversation, spawnDetached) like every other process. `ip netns
 * exec` execs the agent in place, so the PID we get is the agent's own and can be killed by PID.
 */

export interface AgentOptions {
  /** Namespace to run in. */
  readonly ns: string;
  /** Name reported in echo replies (`pod`). */
  readonly name: string;
  /** Sandbox id, passed on the command line so a leftover agent is recognizable in /proc. */
  readonly sandbox: string;
  readonly tcpPorts?: readonly number[];
  readonly udpPorts?: readonly number[];
  /** UDP servers bind to each of these (replies leave from the address asked); default: wildcards. */
  readonly addrs?: readonly string[];
  readonly startTimeoutMs?: number;
}

/**
 * How to run the agent: from the built .js, plain node. From TypeScript sources, plain node on a
 * copy transpiled once into node_modules/.cache (a tsx start costs ~0.4 s of CPU per agent, which
 * made a 6-pod sandbox take seconds); tsx as the fallback.
 */
let entryPromise: Promise<string[]> | undefined;

export function agentEntry(): Promise<string[]> {
  entryPromise ??= resolveEntry();
  return entryPromise;
}

async function resolveEntry(): Promise<string[]> {
  const self = import.meta.url;
  if (!self.endsWith('.ts')) return [process.execPath, fileURLToPath(new URL('./agent.js', self))];
  try {
    return [process.execPath, await transpiledAgent()];
  } catch {
    return [
      process.execPath,
      `--import=${import.meta.resolve('tsx')}`,
      fileURLToPath(new URL('./agent.ts', self)),
    ];
  }
}

/** The agent's own modules: it imports nothing else but node builtins. */
const AGENT_SOURCES = ['agent.ts', 'protocol.ts'];

async function transpiledAgent(): Promise<string> {
  const sources = await Promise.all(
    AGENT_SOURCES.map(async (f) => ({ f, text: await readFile(new URL(`./${f}`, import.meta.url), 'utf8') })),
  );
  const hash = createHash('sha256');
  for (const s of sources) hash.update(s.f).update('\0').update(s.text).update('\0');
  const digest = hash.digest('hex').slice(0, 16);
  const cacheRoot = fileURLToPath(new URL('../../node_modules/.cache/svcplane-agent/', import.meta.url));
  const dir = path.join(cacheRoot, digest);
  const entry = path.join(dir, 'agent.js');
  try {
    await access(entry);
    return entry;
  } catch {
    // not cached yet
  }
  const ts = (await import('typescript')).default;
  await mkdir(cacheRoot, { recursive: true });
  const tmp = await mkdtemp(path.join(cacheRoot, `.tmp-${digest}-`));
  await writeFile(path.join(tmp, 'package.json'), '{"type":"module"}\n');
  for (const s of sources) {
    const out = ts.transpileModule(s.text, {
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
        verbatimModuleSyntax: true,
      },
      fileName: s.f,
    });
    await writeFile(path.join(tmp, s.f.replace(/\.ts$/, '.js')), out.outputText);
  }
  try {
    await rename(tmp, dir);
  } catch {
    // Another process was faster: use its copy.
    await rm(tmp, { recursive: true, force: true });
  }
  await access(entry);
  return entry;
}

/** The command line that runs the agent in its namespace. */
export async function agentCommand(opts: AgentOptions, detached: boolean): Promise<string[]> {
  const list = (flag: string, v: readonly (string | number)[] | undefined): string[] =>
    v && v.length > 0 ? [flag, v.join(',')] : [];
  return [
    'ip',
    'netns',
    'exec',
    opts.ns,
    ...(await agentEntry()),
    '--name',
    opts.name,
    '--sandbox',
    opts.sandbox,
    ...list('--tcp', opts.tcpPorts),
    ...list('--udp', opts.udpPorts),
    ...(opts.addrs ?? []).flatMap((a) => ['--addr', a]),
    ...(detached ? ['--detached'] : []),
  ];
}

function isEvent(v: AgentResponse | AgentEvent): v is AgentEvent {
  return 'event' in v;
}

/** A running agent with a stdin/stdout conversation. Dies when this process dies (its stdin closes). */
export class AgentProcess {
  private nextId = 1;
  private nextConn = 1;
  private readonly pending = new Map<number, (r: AgentResponse) => void>();
  private stderrTail = '';
  private exited: string | undefined;
  private readonly exitWaiters: (() => void)[] = [];

  private constructor(
    readonly opts: AgentOptions,
    private readonly child: Conversation,
    readonly pid: number,
  ) {}

  /** Starts the agent and waits until all its listeners are bound. */
  static async start(opts: AgentOptions): Promise<AgentProcess> {
    const child = spawnConversation(await agentCommand(opts, false));
    const timeoutMs = opts.startTimeoutMs ?? 20_000;
    return new Promise((resolve, reject) => {
      let agent: AgentProcess | undefined;
      let stderr = '';
      const what = `agent "${opts.name}" in netns ${opts.ns}`;
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${what} did not start within ${timeoutMs} ms: ${stderr.trim().slice(-2000)}`));
      }, timeoutMs);
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (d: string) => {
        stderr = (stderr + d).slice(-8192);
        if (agent) agent.stderrTail = stderr;
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`${what} could not be started: ${err.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const why = `${what} exited (${signal ?? `status ${String(code)}`})${stderr.trim() ? `: ${stderr.trim().slice(-2000)}` : ''}`;
        if (agent) agent.onExit(why);
        else reject(new Error(why));
      });
      const rl = readline.createInterface({ input: child.stdout });
      rl.on('line', (line) => {
        let msg: AgentResponse | AgentEvent;
        try {
          msg = JSON.parse(line) as AgentResponse | AgentEvent;
        } catch {
          return;
        }
        if (isEvent(msg)) {
          if (msg.event === 'ready' && !agent) {
            clearTimeout(timer);
            agent = new AgentProcess(opts, child, child.pid!);
            agent.stderrTail = stderr;
            resolve(agent);
          } else if (msg.event === 'fatal') {
            stderr += `\n${msg.error}`;
          }
          return;
        }
        agent?.pending.get(msg.id)?.(msg);
      });
    });
  }

  /** Starts a detached agent that outlives this process (CLI use); returns its PID. Output goes to `logFile`. */
  static async startDetached(opts: AgentOptions, logFile: string): Promise<number> {
    const argv = await agentCommand(opts, true);
    try {
      return await spawnDetached(argv, logFile);
    } catch (err) {
      throw new Error(`agent "${opts.name}" could not be started: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  get alive(): boolean {
    return this.exited === undefined;
  }

  private onExit(why: string): void {
    this.exited = why;
    for (const [id, cb] of this.pending) cb({ id, failed: why });
    this.pending.clear();
    for (const w of this.exitWaiters.splice(0)) w();
  }

  private call(cmd: AgentCommand, budgetMs: number): Promise<AgentResponse> {
    if (this.exited) return Promise.reject(new Error(this.exited));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(cmd.id);
        reject(new Error(`agent "${this.opts.name}" did not answer ${cmd.op} within ${budgetMs} ms`));
      }, budgetMs);
      this.pending.set(cmd.id, (r) => {
        clearTimeout(timer);
        this.pending.delete(cmd.id);
        resolve(r);
      });
      this.child.stdin.write(`${JSON.stringify(cmd)}\n`);
    });
  }

  private async probe(cmd: AgentCommand, timeoutMs: number | undefined): Promise<ProbeResult> {
    const r = await this.call(cmd, (timeoutMs ?? 1000) + 5000);
    if ('result' in r) return r.result;
    if ('failed' in r) throw new Error(`agent "${this.opts.name}": ${cmd.op} failed: ${r.failed}`);
    throw new Error(`agent "${this.opts.name}": unexpected answer to ${cmd.op}`);
  }

  request(spec: RequestSpec): Promise<ProbeResult> {
    return this.probe({ id: this.nextId++, op: 'request', ...spec }, spec.timeoutMs);
  }

  /** Opens a TCP connection; `conn` identifies it for {@link send}/{@link closeConnection}. */
  async open(spec: RequestSpec): Promise<{ conn: number; result: ProbeResult }> {
    const conn = this.nextConn++;
    const result = await this.probe({ id: this.nextId++, op: 'open', conn, ...spec }, spec.timeoutMs);
    return { conn, result };
  }

  send(conn: number, timeoutMs?: number): Promise<ProbeResult> {
    return this.probe(
      { id: this.nextId++, op: 'send', conn, ...(timeoutMs ? { timeoutMs } : {}) },
      timeoutMs,
    );
  }

  async closeConnection(conn: number): Promise<void> {
    if (!this.alive) return;
    await this.call({ id: this.nextId++, op: 'close', conn }, 5000);
  }

  async listen(tcpPorts: readonly number[], udpPorts: readonly number[]): Promise<void> {
    const r = await this.call({ id: this.nextId++, op: 'listen', tcpPorts, udpPorts }, 10_000);
    if ('failed' in r) throw new Error(`agent "${this.opts.name}": listen failed: ${r.failed}`);
  }

  /** Ends the agent (by its PID) and waits for it to exit. Idempotent. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.exitWaiters.push(resolve));
    this.child.stdin.end();
    this.child.kill('SIGKILL');
    await gone;
  }

  get stderr(): string {
    return this.stderrTail;
  }
}
