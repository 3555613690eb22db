import { mkdir, readFile, rename, rm, writeFile, readdir } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { validateId } from './names.js';

/**
 * The sandbox's record on disk, `/run/svcplane/sandbox/<id>/state.json` (SVCPLANE_RUN_DIR replaces
 * /run/svcplane): which pods exist, which detached agents run (by PID), and who owns the sandbox. Written
 * before the first namespace is created, so a crashed run always leaves a record behind, and a
 * sandbox whose owner is dead is recognizable as a leftover.
 */

export interface OwnerRecord {
  readonly pid: number;
  /** Start time of the owner (field 22 of /proc/PID/stat), guards against PID reuse. */
  readonly startTime: string;
}

export interface PodRecord {
  readonly name: string;
  readonly index: number;
  readonly tcpPorts: readonly number[];
  readonly udpPorts: readonly number[];
  /** Kubernetes namespace and labels of the pod (pods.json); absent in older state: default, none. */
  readonly namespace?: string;
  readonly labels?: Readonly<Record<string, string>>;
}

export interface AgentRecord {
  /** 'node', 'outside' or a pod name. */
  readonly where: string;
  readonly pid: number;
}

export interface SandboxState {
  readonly id: string;
  /** null: an operator's sandbox (CLI `netns up`), never a leftover; removed only explicitly. */
  readonly owner: OwnerRecord | null;
  readonly pods: readonly PodRecord[];
  /** Detached agents (CLI). In-process agents die with their owner and are not recorded. */
  readonly agents: readonly AgentRecord[];
}

export function runDir(): string {
  return path.join(process.env.SVCPLANE_RUN_DIR ?? '/run/svcplane', 'sandbox');
}

export function stateDir(id: string): string {
  return path.join(runDir(), validateId(id));
}

function stateFile(id: string): string {
  return path.join(stateDir(id), 'state.json');
}

/** Field 22 of /proc/PID/stat, or undefined when the process does not exist. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}

export function currentOwner(): OwnerRecord {
  return { pid: process.pid, startTime: processStartTime(process.pid) ?? '' };
}

export function ownerAlive(owner: OwnerRecord): boolean {
  const st = processStartTime(owner.pid);
  return st !== undefined && st === owner.startTime;
}

/** Whether `pid` is one of this sandbox's agents (checked before killing a recorded PID). */
export function isAgentOf(pid: number, id: string): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const i = argv.indexOf('--sandbox');
    return i >= 0 && argv[i + 1] === id && argv.some((a) => /[/\\]agent\.(ts|js)$/.test(a));
  } catch {
    return false;
  }
}

export async function readState(id: string): Promise<SandboxState | undefined> {
  let text: string;
  try {
    text = await readFile(stateFile(id), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`reading sandbox state ${stateFile(id)}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text) as SandboxState;
  } catch (err) {
    throw new Error(`sandbox state ${stateFile(id)} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

export async function writeState(state: SandboxState): Promise<void> {
  const dir = stateDir(state.id);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = path.join(dir, `.state.${process.pid}.tmp`);
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`);
  await rename(tmp, stateFile(state.id));
}

export async function removeState(id: string): Promise<void> {
  await rm(stateDir(id), { recursive: true, force: true });
}

/** Ids that have a state directory. */
export async function stateIds(): Promise<string[]> {
  try {
    return (await readdir(runDir())).filter((n) => /^[a-z0-9]{1,8}$/.test(n));
  } catch {
    return [];
  }
}
