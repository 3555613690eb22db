import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { endpointChainName } from '../../src/iptables/names.js';
import type { RunResult } from '../../src/util/exec.js';
import { Daemon, type LogLine } from '../support/daemon.js';
import { NODE_NAME, podEndpoints, serviceObject, sliceObject } from '../support/iptables-harness.js';
import { useSandbox } from '../support/sandbox.js';

/**
 * The daemon's kernel watch (`nft monitor`, iptables/commit-log.ts) as it runs in a pod without
 * hostPID (deploy/base/daemonset.yaml, kubeadm's kube-proxy DaemonSet): `svcplane run` in a PID
 * namespace of its own (`unshare --pid --fork --mount-proc`) inside the sandbox node. The kernel
 * reports every commit with the committing process's PID in the initial PID namespace, which is
 * never the PID the daemon saw its child start with: the watch must still arm, the daemon's own
 * syncs must not count as foreign (a drift check after them reads nothing: no iptables-save, counted
 * by a wrapper first on PATH), and a foreign flush of one of our chains is found by a check of that
 * chain alone and repaired within the sync period (real traffic after the repair).
 */

const TARGET = 8080;
const SYNC_PERIOD_MS = 2000;

describe('iptables drift watch of a daemon in its own PID namespace (a pod without hostPID)', function () {
  this.timeout(90_000);
  let dir = '';
  let daemon: Daemon | undefined;
  // Registered before useSandbox's: mocha runs `after` hooks in order, and the sandbox's kills
  // whatever still runs in its namespaces.
  after(async function () {
    this.timeout(20_000);
    try {
      const d = daemon;
      daemon = undefined;
      if (d !== undefined) {
        // unshare waits for its child (the daemon, PID 1 inside): end the daemon by its PID here, and
        // unshare exits with it; the kernel ends the rest of the namespace (nft monitor) with its PID 1.
        const inner = await readFile(`/proc/${d.child.pid}/task/${d.child.pid}/children`, 'utf8').catch(
          () => '',
        );
        const pid = Number(inner.trim().split(/\s+/)[0]);
        if (Number.isInteger(pid) && pid > 0) {
          try {
            process.kill(pid, 'SIGTERM');
          } catch {
            /* gone */
          }
          const killed = setTimeout(() => {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              /* gone */
            }
          }, 8000);
          const code = await d.child.exited;
          clearTimeout(killed);
          assert.equal(code, 0, `the daemon stopped on SIGTERM\n${d.tail()}`);
          // Its process name's symlinks (commit-name.ts) went with it.
          const left = (await readdir(join(dir, 'tmp'))).filter((f) => f.startsWith('svcplane-commits-'));
          assert.deepEqual(left, []);
        } else {
          await d.stop(2000);
        }
      }
    } finally {
      if (dir) await rm(dir, { recursive: true, force: true });
    }
  });

  const env = useSandbox({
    pods: [
      { name: 'a', index: 2, tcpPorts: [TARGET] },
      { name: 'b', index: 3, tcpPorts: [TARGET] },
      { name: 'client', index: 10 },
    ],
  });

  const saves = async (): Promise<number> =>
    (await readFile(join(dir, 'saves'), 'utf8').catch(() => '')).split('\n').filter((l) => l !== '').length;
  const ipt = (...args: string[]): Promise<RunResult> => env.sb.exec('node', ['iptables', ...args]);
  const sep = (name: string, pod: string): string =>
    endpointChainName(`default/${name}:http`, 'tcp', `${env.sb.podIP(pod)}:${TARGET}`);

  async function manifests(twoPods: readonly string[]): Promise<void> {
    const items = [
      serviceObject('one', {
        clusterIPs: ['10.96.60.1'],
        ports: [{ name: 'http', port: 80, targetPort: TARGET }],
      }),
      sliceObject('one', 'IPv4', [{ name: 'http', port: TARGET }], podEndpoints(env.sb, ['a'])),
      serviceObject('two', {
        clusterIPs: ['10.96.60.2'],
        ports: [{ name: 'http', port: 80, targetPort: TARGET }],
      }),
      sliceObject('two', 'IPv4', [{ name: 'http', port: TARGET }], podEndpoints(env.sb, twoPods)),
    ];
    // Written aside and renamed: the daemon never reads half a file.
    await writeFile(join(dir, 'state.tmp'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
    await rename(join(dir, 'state.tmp'), join(dir, 'manifests', 'services.json'));
  }

  async function answerer(ip: string, timeoutMs = 500): Promise<string | undefined> {
    const r = await env.sb.request('client', { proto: 'tcp', ip, port: 80, timeoutMs });
    return r.ok ? r.reply.pod : undefined;
  }

  const driftCheck = (l: LogLine): boolean => l.message === 'drift check';

  /** The next `count` drift checks from log line `from` on: all quiet, and no iptables-save meanwhile. */
  async function quietChecks(from: number, count: number): Promise<void> {
    const d = daemon!;
    const before = await saves();
    const checks = await d.waitFor('drift checks', from, driftCheck, SYNC_PERIOD_MS * (count + 2), count);
    for (const c of checks.slice(0, count)) assert.equal(c.check, 'quiet', JSON.stringify(c));
    assert.equal(await saves(), before, `no iptables-save during quiet checks\n${d.tail()}`);
  }

  before(async function () {
    this.timeout(60_000);
    dir = await mkdtemp(join(tmpdir(), 'svcp-pidns-'));
    await writeFile(join(dir, 'saves'), '');
    const bin = join(dir, 'bin');
    await mkdir(bin);
    await mkdir(join(dir, 'manifests'));
    await mkdir(join(dir, 'tmp'));
    // Counts whole-ruleset reads; the other tools stay the node's own (found further on PATH).
    await writeFile(
      join(bin, 'iptables-save'),
      `#!/bin/sh\necho x >> ${join(dir, 'saves')}\nPATH=${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}\nexec iptables-save "$@"\n`,
    );
    await chmod(join(bin, 'iptables-save'), 0o755);
    await manifests(['b']);
    daemon = Daemon.start(
      [
        'run',
        `--manifests=${join(dir, 'manifests')}`,
        `--hostname-override=${NODE_NAME}`,
        '--cluster-cidr=10.244.0.0/16',
        `--iptables-sync-period=${SYNC_PERIOD_MS / 1000}s`,
        '--iptables-min-sync-period=100ms',
        '--healthz-bind-address=127.0.0.1:10256',
        '--metrics-bind-address=127.0.0.1:10249',
      ],
      {
        netns: env.sb.nodeNs,
        // The daemon is PID 1 of a new PID namespace (its own /proc), as in a pod without hostPID.
        prefix: [
          'env',
          `PATH=${bin}:${process.env.PATH ?? ''}`,
          `TMPDIR=${join(dir, 'tmp')}`,
          'unshare',
          '--pid',
          '--fork',
          '--mount-proc',
          '--kill-child=SIGTERM',
        ],
      },
    );
    await daemon.waitFor('svcplane running', 0, (l) => l.message === 'svcplane running', 40_000);
  });

  it('the kernel watch arms although the kernel reports other PIDs than the daemon sees', async () => {
    const d = daemon!;
    assert.deepEqual(
      d.logged(0, (l) => String(l.message).startsWith('nft monitor did not report')),
      [],
      'the probe commit was recognised',
    );
    const armed = d.logged(0, (l) => l.message === 'kernel watch armed' && l.backend === 'iptables/IPv4');
    assert.equal(armed.length, 1, d.tail());
    // The daemon noticed it runs in a PID namespace of its own: the kernel's PID is not its child's.
    assert.equal(armed[0]!.pidNamespace, true, JSON.stringify(armed[0]));
    assert.equal(await answerer('10.96.60.1'), 'a');
    assert.equal(await answerer('10.96.60.2'), 'b');
  });

  it("the daemon's own full and partial syncs are not foreign: drift checks read nothing", async () => {
    const d = daemon!;
    await quietChecks(d.lines.length, 2);
    const from = d.lines.length;
    await manifests(['a', 'b']);
    await d.waitFor('a partial sync', from, (l) => l.message === 'synced' && l.full === false, 10_000);
    await quietChecks(d.lines.length, 2);
  });

  /**
   * Another agent's `change` to one of our chains: found by a check of that chain alone (no
   * iptables-save) and repaired within the sync period plus a sync; the next check is quiet again.
   */
  async function foreignChangeRepaired(
    change: () => Promise<unknown>,
    ip: string,
    pod: string,
  ): Promise<void> {
    const d = daemon!;
    const from = d.lines.length;
    const before = await saves();
    const changed = Date.now();
    await change();
    const found = await d.waitFor(
      'drift found',
      from,
      (l) => l.message === 'iptables rules changed by another agent; full resync',
      SYNC_PERIOD_MS + 3000,
    );
    assert.equal(found[0]!.check, 'scoped', JSON.stringify(found[0]));
    const checks = d.logged(from, (l) => driftCheck(l) && l.check === 'scoped');
    assert.ok(
      checks.some((c) => c.chains === 1),
      JSON.stringify(checks),
    );
    assert.equal(await saves(), before, 'the scoped check read no whole ruleset');
    for (;;) {
      if ((await answerer(ip)) === pod) break;
      assert.ok(Date.now() - changed < SYNC_PERIOD_MS + 3000, `not repaired in time\n${d.tail()}`);
    }
    console.log(
      `      (repaired ${Date.now() - changed} ms after the change; sync period ${SYNC_PERIOD_MS} ms)`,
    );
    await quietChecks(d.lines.length, 1);
  }

  it('a foreign flush of one of our chains: that chain alone compared, repaired within the period', async () => {
    await foreignChangeRepaired(() => ipt('-t', 'nat', '-F', sep('one', 'a')), '10.96.60.1', 'a');
  });

  it("the daemon's own tool run by another agent (iptables-restore) is foreign: found and repaired", async () => {
    // A declared chain is flushed by iptables-restore --noflush: the SEP chain of two's pod b.
    const flush = `*nat\n:${sep('two', 'b')} - [0:0]\nCOMMIT\n`;
    await foreignChangeRepaired(
      () => env.sb.exec('node', ['iptables-restore', '--noflush'], { input: flush }),
      '10.96.60.2',
      'b',
    );
  });
});
