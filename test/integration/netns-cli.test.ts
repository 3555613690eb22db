import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readState, stateDir } from '../../src/netns/state.js';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { randomSandboxId, requireRoot } from '../support/sandbox.js';

/**
 * The operator's sandbox CLI, as operators run it: `svcplane netns up | ls | probe | pod add | pod del |
 * exec | down`, each a separate process of bin/svcplane.js. The sandbox outlives the `up` process (detached
 * echo agents, recorded by PID), answers probes from later processes, and `down` leaves nothing behind:
 * no namespace, no agent process, no state.
 */

/** bin/svcplane.js, as installed (runs dist/, which scripts/setup.sh builds). */
const BIN = join(packageRoot(), 'bin', 'svcplane.js');

function svcplane(...args: string[]) {
  return run([process.execPath, BIN, ...args], { allowFailure: true, timeoutMs: 60_000 });
}

async function namespaces(id: string): Promise<string[]> {
  const r = await run(['ip', 'netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(`svcp-${id}-`))
    .sort();
}

const alive = (pid: number): boolean => existsSync(`/proc/${pid}`);

interface Probe {
  ok: boolean;
  reply?: { pod: string; ip: string; port: number };
  error?: string;
}

describe('svcplane netns (the sandbox CLI, separate processes)', function () {
  this.timeout(120_000);
  const id = randomSandboxId();
  let agents: number[] = [];

  before(function () {
    requireRoot(this);
  });

  after(async function () {
    this.timeout(30_000);
    // Only if a test failed half-way: the CLI's own teardown.
    if ((await namespaces(id)).length > 0) await svcplane('netns', 'down', '--id', id);
  });

  const probe = async (from: string, proto: string, ip: string, port: number): Promise<Probe> => {
    const r = await svcplane(
      'netns',
      'probe',
      '--id',
      id,
      '--timeout',
      '1500',
      from,
      proto,
      ip,
      String(port),
    );
    return JSON.parse(r.stdout.trim()) as Probe;
  };

  it('up: namespaces, addresses and echo agents that outlive the command', async () => {
    const r = await svcplane('netns', 'up', '--id', id, '--pods', '2', '--tcp', '80', '--udp', '53');
    assert.equal(r.exitCode, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0]!, new RegExp(`^sandbox ${id}: node svcp-${id}-node \\(192\\.0\\.2\\.1, `));
    assert.match(
      lines[1]!,
      new RegExp(`^pod1\\tsvcp-${id}-pod1\\t10\\.244\\.0\\.2\\t\\S+\\t\\S+\\t80/tcp,53/udp$`),
    );
    assert.match(lines[2]!, /^pod2\t\S+\t10\.244\.0\.3\t/);
    assert.deepEqual(await namespaces(id), [
      `svcp-${id}-node`,
      `svcp-${id}-outside`,
      `svcp-${id}-pod1`,
      `svcp-${id}-pod2`,
    ]);
    const state = await readState(id);
    assert.ok(state, 'state recorded');
    assert.equal(state.owner, null, "an operator's sandbox has no owner process");
    agents = state.agents.map((a) => a.pid);
    assert.ok(agents.length >= 2 && agents.every(alive), `detached agents running: ${agents.join(' ')}`);
  });

  it('probe (a later process): pod to pod over TCP and UDP, outside to a pod via the node; a closed port is refused', async () => {
    const tcp = await probe('pod1', 'tcp', '10.244.0.3', 80);
    assert.deepEqual([tcp.ok, tcp.reply?.pod], [true, 'pod2']);
    const udp = await probe('pod2', 'udp', '10.244.0.2', 53);
    assert.deepEqual([udp.ok, udp.reply?.pod], [true, 'pod1']);
    const routed = await probe('outside', 'tcp', '10.244.0.2', 80);
    assert.deepEqual([routed.ok, routed.reply?.pod], [true, 'pod1']);
    const closed = await svcplane('netns', 'probe', '--id', id, 'pod1', 'tcp', '10.244.0.3', '81');
    assert.equal(closed.exitCode, 1, 'a failed probe exits 1');
    assert.equal((JSON.parse(closed.stdout) as Probe).error, 'refused');
  });

  it('ls: the sandbox, its operator owner and its pods', async () => {
    const r = await svcplane('netns', 'ls');
    assert.equal(r.exitCode, 0, r.stderr);
    const block = r.stdout.split('\n');
    const at = block.indexOf(`${id}\toperator`);
    assert.ok(at >= 0, r.stdout);
    assert.match(block[at + 1]!, /^ {2}pod1\t/);
    assert.match(block[at + 2]!, /^ {2}pod2\t/);
  });

  it('pod add / pod del: a pod with its own agent joins and leaves; its namespace and agent go', async () => {
    const add = await svcplane('netns', 'pod', 'add', 'web', '--id', id, '--index', '20', '--tcp', '8080');
    assert.equal(add.exitCode, 0, add.stderr);
    assert.match(add.stdout, new RegExp(`^web\\tsvcp-${id}-web\\t10\\.244\\.0\\.20\\t.*\\t8080/tcp$`, 'm'));
    const hit = await probe('pod1', 'tcp', '10.244.0.20', 8080);
    assert.deepEqual([hit.ok, hit.reply?.pod], [true, 'web']);
    const webAgent = (await readState(id))?.agents.find((a) => a.where === 'web')?.pid;
    assert.ok(webAgent && alive(webAgent), 'the new pod has a running agent');

    const del = await svcplane('netns', 'pod', 'del', 'web', '--id', id);
    assert.equal(del.exitCode, 0, del.stderr);
    assert.ok(!(await namespaces(id)).includes(`svcp-${id}-web`), 'namespace gone');
    assert.ok(!alive(webAgent), 'agent gone');
    assert.equal((await probe('pod1', 'tcp', '10.244.0.20', 8080)).ok, false);
    const again = await svcplane('netns', 'pod', 'del', 'web', '--id', id);
    assert.notEqual(again.exitCode, 0, 'deleting a pod that is not there is an error');
  });

  it('exec: runs in the named namespace, passes the exit status through', async () => {
    const node = await svcplane(
      'netns',
      'exec',
      '--id',
      id,
      'node',
      '--',
      'ip',
      '-o',
      '-4',
      'addr',
      'show',
      'cbr0',
    );
    assert.equal(node.exitCode, 0, node.stderr);
    assert.match(node.stdout, /inet 10\.244\.0\.1\/24/);
    const pod = await svcplane(
      'netns',
      'exec',
      '--id',
      id,
      'pod2',
      '--',
      'ip',
      '-o',
      '-4',
      'addr',
      'show',
      'eth0',
    );
    assert.match(pod.stdout, /inet 10\.244\.0\.3\/24/);
    const status = await svcplane('netns', 'exec', '--id', id, 'pod1', '--', 'sh', '-c', 'exit 7');
    assert.equal(status.exitCode, 7);
  });

  it('rejects a bad id and an unknown sandbox with an error, creating nothing', async () => {
    const bad = await svcplane('netns', 'up', '--id', 'Bad!id');
    assert.notEqual(bad.exitCode, 0);
    assert.match(bad.stderr, /--id/);
    const ghost = randomSandboxId();
    const missing = await svcplane('netns', 'pod', 'add', 'x', '--id', ghost);
    assert.notEqual(missing.exitCode, 0);
    assert.deepEqual(await namespaces(ghost), []);
  });

  it('down: no namespace, no agent, no state left; ls no longer lists it', async () => {
    const r = await svcplane('netns', 'down', '--id', id);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout.trim(), `removed: ${id}`);
    assert.deepEqual(await namespaces(id), []);
    assert.deepEqual(agents.filter(alive), [], 'every agent of the sandbox stopped');
    assert.equal(existsSync(stateDir(id)), false, 'state removed');
    assert.ok(!(await svcplane('netns', 'ls')).stdout.includes(id));
  });
});
