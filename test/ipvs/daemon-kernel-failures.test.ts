import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import type { Sandbox } from '../../src/netns/sandbox.js';
import { eventually, type LogLine } from '../support/daemon.js';
import { podEndpoints, serviceObject, sliceObject } from '../support/iptables-harness.js';
import { Background, tryCmd, useUmlDaemon, waitFor } from './helpers.js';
import { scrapeMetrics } from '../support/http.js';

/**
 * The daemon (`svcplane run`, from the build) against kernel failures only User-mode Linux can stage
 * (iptables legacy backend, a module loader we control): another process holding the xtables lock,
 * and a kernel module that is missing (hidden from the module loader, see uml-init.sh). Each time the
 * previous rules keep serving, the failure is counted (kube-proxy's metric) and logged with the tool's
 * words, the retries back off exponentially, and the daemon converges once the cause is gone: for the
 * module, through the kernel's own module autoload.
 */

const PORT = 8080;
const WEB = '10.96.80.1';
const STICKY = '10.96.80.2';
const LOCK = '/run/xtables.lock';
const HIDDEN = '/run/uml/hidden-modules';
const FAILED = 'sync failed; previous rules stay in place';

function service(sb: Sandbox, name: string, ip: string, pods: readonly string[], affinity = false): object[] {
  return [
    serviceObject(name, {
      clusterIPs: [ip],
      ports: [{ name: 'http', port: 80, targetPort: PORT }],
      ...(affinity ? { sessionAffinity: { timeoutSeconds: 10800 } } : {}),
    }),
    sliceObject(name, 'IPv4', [{ name: 'http', port: PORT }], podEndpoints(sb, pods)),
  ];
}

describe('the daemon against real kernel failures: xtables lock, missing module (UML, legacy)', function () {
  this.timeout(180_000);
  const uml = useUmlDaemon(PORT);
  let holder: Background | undefined;

  const answer = async (ip: string): Promise<string> => {
    const r = await uml.sb.request('client', { proto: 'tcp', ip, port: 80, timeoutMs: 1000 });
    return r.ok ? r.reply.pod : r.error;
  };
  const failures = async (): Promise<number> => {
    const text = await scrapeMetrics(uml.sb);
    // Per family (kube-proxy's ip_family label); a family without a failure yet has no sample.
    assert.match(text, /^# TYPE kubeproxy_sync_proxy_rules_iptables_restore_failures_total counter$/m);
    let sum = 0;
    for (const m of text.matchAll(
      /^kubeproxy_sync_proxy_rules_iptables_restore_failures_total\{ip_family="IPv[46]"\} (\S+)$/gm,
    ))
      sum += Number(m[1]);
    return sum;
  };
  /** Backoff: the announced retry delays double, and each retry waited at least as announced. */
  function assertBackoff(lines: readonly LogLine[]): void {
    const delays = lines.map((l) => Number(l.retryInMs));
    for (let i = 1; i < delays.length; i++) {
      assert.equal(delays[i], delays[i - 1]! * 2, `retryInMs ${delays.join(', ')}`);
    }
    // A failed attempt logs when it ends; the next one starts after the announced delay.
    const at = lines.map((l) => Date.parse(String(l.timestamp)));
    for (let i = 1; i < at.length; i++) {
      assert.ok(
        at[i]! - at[i - 1]! >= delays[i - 1]!,
        `attempt ${i + 1} came ${at[i]! - at[i - 1]!} ms after the one before`,
      );
    }
  }

  before(async () => {
    const daemon = await uml.start(service(uml.sb, 'web', WEB, ['a']), [
      '--cluster-cidr=10.244.0.0/16',
      '--iptables-sync-period=1h',
      '--iptables-min-sync-period=100ms',
      '--healthz-bind-address=127.0.0.1:10256',
    ]);
    await daemon.waitFor('the first sync', 0, (l) => l.message === 'synced', 60_000);
  });

  after(async function () {
    this.timeout(30_000);
    await holder?.stop();
    await writeFile(HIDDEN, '').catch(() => undefined);
  });

  it('the xtables lock held by another process: refused after -w 5, previous rules serve, counted, backoff, then converged', async () => {
    const d = uml.daemon;
    assert.equal(await answer(WEB), 'a');
    const before = await failures();
    // One process that holds the lock itself (flock(1) would pass it to its child), ended by PID.
    holder = new Background([
      'perl',
      '-e',
      'use Fcntl ":flock"; open(my $f, ">>", $ARGV[0]) or die; flock($f, LOCK_EX) or die; sleep 600',
      LOCK,
    ]);
    await waitFor('lock held', async () => (await tryCmd(['flock', '-n', LOCK, 'true'])).exitCode !== 0);

    const from = d.lines.length;
    await uml.write(service(uml.sb, 'web', WEB, ['b']));
    const failed = await d.waitFor('two refused restores', from, (l) => l.message === FAILED, 60_000, 2);
    assert.match(JSON.stringify(failed[0]), /xtables lock/, JSON.stringify(failed[0]).slice(0, 600));
    assert.equal(await answer(WEB), 'a', 'the previous rules serve');
    assert.ok((await failures()) >= before + 2, 'counted');
    assertBackoff(failed);

    const released = d.lines.length;
    await holder.stop();
    holder = undefined;
    const [synced] = await d.waitFor(
      'the retry that converges',
      released,
      (l) => l.message === 'synced',
      60_000,
    );
    assert.equal(synced!.full, true, 'the sync after failures is full');
    await eventually('web on b', 10_000, async () => ((await answer(WEB)) === 'b' ? true : undefined));
  });

  it('a kernel module missing (xt_recent, for ClientIP affinity): refused, previous rules serve, counted, backoff; loaded on demand once available', async () => {
    const d = uml.daemon;
    assert.equal(await answer(WEB), 'b');
    // Hide xt_recent from the module loader, then unload it (rules of earlier tests may hold it a moment).
    await writeFile(HIDDEN, 'xt_recent\n');
    await eventually('xt_recent unloaded', 30_000, async () => {
      await tryCmd(['rmmod', 'xt_recent']);
      return (await readFile('/proc/modules', 'utf8')).includes('xt_recent ') ? undefined : true;
    });
    const before = await failures();

    // web moves back to a, and a Service with ClientIP affinity (rules with -m recent) arrives.
    const from = d.lines.length;
    await uml.write([
      ...service(uml.sb, 'web', WEB, ['a']),
      ...service(uml.sb, 'sticky', STICKY, ['a', 'b'], true),
    ]);
    const failed = await d.waitFor('three refused restores', from, (l) => l.message === FAILED, 30_000, 3);
    assert.match(JSON.stringify(failed[0]), /recent/, JSON.stringify(failed[0]).slice(0, 600));
    assert.equal(await answer(WEB), 'b', 'the previous rules serve');
    assert.equal(await answer(STICKY), 'timeout', 'the new Service has no rules yet');
    assert.ok((await failures()) >= before + 3, 'counted');
    assertBackoff(failed);

    // The module becomes available: the kernel loads it itself (kernel.modprobe) on the next retry.
    const available = d.lines.length;
    await writeFile(HIDDEN, '');
    const [synced] = await d.waitFor(
      'the retry that converges',
      available,
      (l) => l.message === 'synced',
      60_000,
    );
    assert.equal(synced!.full, true);
    assert.ok((await readFile('/proc/modules', 'utf8')).includes('xt_recent '), 'xt_recent autoloaded');
    await eventually('web on a', 10_000, async () => ((await answer(WEB)) === 'a' ? true : undefined));
    const first = await answer(STICKY);
    assert.ok(first === 'a' || first === 'b', `sticky answered: ${first}`);
    for (let i = 0; i < 5; i++)
      assert.equal(await answer(STICKY), first, 'the client sticks to its endpoint');
  });
});
