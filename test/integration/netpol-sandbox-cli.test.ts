import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';
import { randomSandboxId, requireRoot } from '../support/sandbox.js';

/**
 * Trying a NetworkPolicy by hand, as the README's operator does, each step a separate process of
 * bin/svcplane.js: `svcplane netns up`, `pod add NAME --namespace NS --labels k=v` (the sandbox writes
 * its pods as Namespace and Pod objects, pods.json), a directory with a policy and a link to pods.json,
 * `svcplane sync --network-policy` in the node, probes, `netns down`.
 */

const BIN = join(packageRoot(), 'bin', 'svcplane.js');
const svcplane = (...args: string[]) =>
  run([process.execPath, BIN, ...args], { allowFailure: true, timeoutMs: 60_000 });

describe('svcplane netns pod add --namespace --labels, then sync --network-policy (separate processes)', function () {
  this.timeout(120_000);
  const id = randomSandboxId();
  let dir = '';

  before(function () {
    requireRoot(this);
  });
  after(async function () {
    this.timeout(30_000);
    await svcplane('netns', 'down', '--id', id);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('pods carry namespaces and labels into pods.json; a policy over them is enforced', async () => {
    assert.equal((await svcplane('netns', 'up', '--id', id, '--pods', '0')).exitCode, 0);
    const web = await svcplane(
      'netns',
      'pod',
      'add',
      'web',
      '--id',
      id,
      '--namespace',
      'shop',
      '--labels',
      'app=web',
      '--tcp',
      '80',
    );
    assert.equal(web.exitCode, 0, web.stderr);
    assert.match(web.stdout, /^web\t\S+\t10\.244\.0\.\d+\t\S+\t\S+\t80\/tcp\tshop\tapp=web$/m);
    const path = /pods as Kubernetes objects: (\S+)/.exec(web.stdout)?.[1];
    assert.ok(path, web.stdout);
    for (const [name, ns, labels] of [
      ['client', 'shop', 'role=client'],
      ['other', 'shop', 'role=other'],
    ] as const) {
      const r = await svcplane(
        'netns',
        'pod',
        'add',
        name,
        '--id',
        id,
        '--namespace',
        ns,
        '--labels',
        labels,
      );
      assert.equal(r.exitCode, 0, r.stderr);
    }
    const bad = await svcplane('netns', 'pod', 'add', 'x', '--id', id, '--labels', 'app=no good');
    assert.notEqual(bad.exitCode, 0);
    assert.match(bad.stderr, /label "app=no good"/);

    const list = JSON.parse(await readFile(path, 'utf8')) as {
      items: {
        kind: string;
        metadata: { name: string; namespace?: string; labels?: Record<string, string> };
      }[];
    };
    assert.deepEqual(
      list.items.map(
        (o) =>
          `${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name} ${JSON.stringify(o.metadata.labels ?? {})}`,
      ),
      [
        'Namespace /shop {}',
        'Pod shop/web {"app":"web"}',
        'Pod shop/client {"role":"client"}',
        'Pod shop/other {"role":"other"}',
      ],
    );

    dir = await mkdtemp(join(tmpdir(), 'svcplane-try-'));
    await symlink(path, join(dir, 'pods.json'));
    await writeFile(
      join(dir, 'policy.yaml'),
      'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: shop}\n' +
        'spec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]\n',
    );
    const node = `svcp-${id}-node`;
    const sync = await run(
      [
        process.execPath,
        BIN,
        'sync',
        `--manifests=${dir}`,
        '--hostname-override=node-1',
        '--network-policy',
        '--cluster-cidr=10.244.0.0/16',
      ],
      { netns: node, allowFailure: true, timeoutMs: 60_000 },
    );
    assert.equal(sync.exitCode, 0, sync.stderr);
    assert.match(sync.stdout, /^netpol: full sync/m);

    const webIP = /^web\t\S+\t(\S+)/m.exec(web.stdout)![1]!;
    const probe = async (from: string): Promise<{ ok: boolean; reply?: { pod: string } }> =>
      JSON.parse(
        (
          await svcplane('netns', 'probe', '--id', id, '--timeout', '1500', from, 'tcp', webIP, '80')
        ).stdout.trim(),
      ) as {
        ok: boolean;
        reply?: { pod: string };
      };
    assert.equal((await probe('client')).reply?.pod, 'web');
    assert.equal((await probe('other')).ok, false);
  });
});
