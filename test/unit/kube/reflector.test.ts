import { strict as assert } from 'node:assert';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { resourceSpecs } from '../../../src/kube/api-source.js';
import {
  ApiError,
  CredentialError,
  errorCategory,
  kubeTransport,
  LineSplitter,
  ProtocolError,
  Reflector,
  type ApiTransport,
  type ReflectorOptions,
} from '../../../src/kube/informer.js';
import { buildClusterState } from '../../../src/model/build.js';
import { FakeApiServer, type LoggedRequest } from '../../support/fake-apiserver.js';

/**
 * The reflector against the API stand-in answering as kube-apiserver does: list items without
 * TypeMeta, paging and expired continue tokens, 410 and too-new resourceVersions, slow bodies,
 * oversized watch events.
 */

const NODE = 'node-1';
const FAST: Partial<ReflectorOptions> = {
  watchTimeoutSeconds: 1,
  watchdogGraceMs: 200,
  listIdleTimeoutMs: 1000,
  minWatchMs: 100,
  backoff: { initialMs: 20, maxMs: 200, factor: 2, jitter: 0.2 },
};

const svc = (name: string, ip = '10.96.0.10'): object => ({
  metadata: { name, namespace: 'default' },
  spec: { type: 'ClusterIP', clusterIP: ip, clusterIPs: [ip], ports: [{ port: 80, protocol: 'TCP' }] },
});

async function waitFor(cond: () => boolean, ms = 4000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const lists = (api: FakeApiServer): LoggedRequest[] => api.log.filter((r) => r.verb === 'list');

describe('Reflector against kube-apiserver-shaped answers', function () {
  this.timeout(20_000);
  let api: FakeApiServer;
  let reflector: Reflector | undefined;

  const start = (opts: Partial<ReflectorOptions> = FAST, transport?: ApiTransport): Reflector => {
    reflector = new Reflector(
      transport ?? kubeTransport(api.kubeConfig()),
      resourceSpecs(NODE).services,
      opts,
    );
    reflector.start();
    return reflector;
  };

  afterEach(async () => {
    await reflector?.stop();
    reflector = undefined;
    await api.stop();
  });

  it('fills in kind/apiVersion that list items lack, so the model accepts every Service (issue 11)', async () => {
    api = await FakeApiServer.create();
    api.create('Service', svc('a'));
    api.create('Service', svc('b', '10.96.0.11'));
    const raw = (await (await fetch(`${api.url}/api/v1/services`)).json()) as { items: { kind?: string }[] };
    assert.deepEqual(
      raw.items.map((i) => i.kind),
      [undefined, undefined],
      'the stand-in answers as kube-apiserver',
    );
    const r = start();
    await r.waitForSync();
    for (const o of r.items().values()) {
      assert.equal(o.kind, 'Service');
      assert.equal(o.apiVersion, 'v1');
    }
    const state = buildClusterState([...r.items().values()].map((obj) => ({ obj })));
    assert.deepEqual(state.problems, []);
    assert.deepEqual([...state.services.keys()].sort(), ['default/a', 'default/b']);
  });

  it('follows continue tokens when the server pages a resourceVersion=0 list (watch cache off)', async () => {
    api = await FakeApiServer.create({ watchCache: false });
    for (let i = 0; i < 1201; i++) api.create('Service', svc(`s${String(i).padStart(4, '0')}`));
    const r = start();
    await r.waitForSync();
    assert.equal(r.items().size, 1201);
    const q = lists(api).map((l) => l.query);
    assert.equal(q.length, 3, 'three pages of 500');
    assert.deepEqual(
      { ...q[0], labelSelector: undefined },
      { labelSelector: undefined, limit: '500', resourceVersion: '0' },
    );
    for (const page of q.slice(1)) {
      assert.ok(page.continue, 'later pages carry the continue token');
      assert.equal(page.resourceVersion, undefined, 'and no resourceVersion (400 otherwise)');
      assert.equal(page.limit, '500');
    }
  });

  it('a continue token that expired (410) is followed by one full list at the latest resourceVersion', async () => {
    api = await FakeApiServer.create({ watchCache: false });
    for (let i = 0; i < 700; i++) api.create('Service', svc(`s${String(i).padStart(4, '0')}`));
    const inner = kubeTransport(api.kubeConfig());
    let pages = 0;
    const transport: ApiTransport = {
      get: async (p, signal) => {
        const res = await inner.get(p, signal);
        // Between page 1 and page 2: writes, then etcd compacts them away.
        if (!p.includes('watch=') && ++pages === 1) {
          api.create('Service', svc('late'));
          api.compact();
        }
        return res;
      },
    };
    const r = start(FAST, transport);
    await r.waitForSync();
    assert.equal(r.items().size, 701, 'every object, the late one included');
    const q = lists(api);
    assert.deepEqual(
      q.map((l) => [
        l.status,
        l.query.resourceVersion ?? '',
        l.query.limit ?? '',
        l.query.continue ? 'continue' : '',
      ]),
      [
        [200, '0', '500', ''],
        [410, '', '500', 'continue'],
        [200, '', '', ''],
      ],
    );
  });

  it('after a watch 410: relist from the last resourceVersion without a limit (served from the cache)', async () => {
    api = await FakeApiServer.create();
    api.create('Service', svc('a'));
    const r = start();
    await r.waitForSync();
    await waitFor(() => api.openWatches === 1);
    const rv = r.status().resourceVersion!;
    api.create('Service', {
      ...svc('foreign'),
      metadata: { name: 'foreign', labels: { 'service.kubernetes.io/service-proxy-name': 'x' } },
    });
    api.compact();
    api.closeAllWatches();
    await waitFor(() => lists(api).length === 2, 4000, 'relist');
    assert.deepEqual(lists(api)[1]!.query.resourceVersion, rv);
    assert.equal(lists(api)[1]!.query.limit, undefined);
    assert.equal(r.items().size, 1);
  });

  it('a paging server: the relist is exact and expired too, so it lists the latest state at once', async () => {
    api = await FakeApiServer.create({ watchCache: false });
    for (let i = 0; i < 600; i++) api.create('Service', svc(`s${String(i).padStart(4, '0')}`));
    const r = start();
    await r.waitForSync();
    await waitFor(() => api.openWatches === 1);
    // A write the reflector does not see (another proxy's Service), then compaction.
    api.create('Service', {
      ...svc('x'),
      metadata: { name: 'x', labels: { 'service.kubernetes.io/service-proxy-name': 'other' } },
    });
    api.compact();
    api.closeAllWatches();
    await waitFor(() => lists(api).length === 5, 4000, 'the relist');
    assert.equal(r.items().size, 600);
    const after = lists(api).slice(2);
    assert.deepEqual(
      after.map((l) => [
        l.status,
        l.query.resourceVersion === undefined ? '' : 'rv',
        l.query.continue ? 'continue' : '',
      ]),
      [
        [410, 'rv', ''], // exact (limit + resourceVersion) at a compacted version
        [200, '', ''], // the latest state, paged
        [200, '', 'continue'],
      ],
    );
  });

  it('a resourceVersion the server has not reached (504 ResourceVersionTooLarge): relist the latest state', async () => {
    api = await FakeApiServer.create({ tooLargeResourceVersionWaitMs: 100 });
    for (let i = 0; i < 5; i++) api.create('Service', svc(`s${i}`));
    const port = api.port;
    const r = start();
    await r.waitForSync();
    await waitFor(() => api.openWatches === 1);
    // Fail over to a server that is behind (a fresh one on the same port, resourceVersion lower).
    await api.stop();
    api = await FakeApiServer.create({ port, tooLargeResourceVersionWaitMs: 100 });
    api.create('Service', svc('other'));
    await waitFor(() => r.items().has('default/other'), 6000, 'relisted from the new server');
    assert.equal(r.items().size, 1);
    assert.ok(
      api.log.some((l) => l.status === 504),
      'the watch from the newer resourceVersion got 504',
    );
    assert.equal(lists(api).at(-1)!.query.resourceVersion, undefined, 'then a list of the latest state');
  });

  it('the list deadline measures inactivity: a slow list that keeps sending completes', async () => {
    api = await FakeApiServer.create();
    for (let i = 0; i < 40; i++) api.create('Service', svc(`s${i}`));
    // ~30 KB at 2 KB every 50 ms: ~0.8 s in total, never 300 ms without a byte.
    api.dribbleLists({ bytes: 2048, intervalMs: 50 });
    const t0 = Date.now();
    const r = start({ ...FAST, listIdleTimeoutMs: 300 });
    await r.waitForSync();
    assert.ok(Date.now() - t0 > 300, `the list took ${Date.now() - t0} ms`);
    assert.equal(r.items().size, 40);
    assert.equal(lists(api).length, 1, 'one list: never aborted');
  });

  it('a watch event beyond maxEventBytes: a clear error, a relist, nothing lost', async () => {
    api = await FakeApiServer.create();
    api.create('Service', svc('a'));
    const r = start({ ...FAST, maxEventBytes: 64 * 1024 });
    await r.waitForSync();
    await waitFor(() => api.openWatches === 1);
    // A big but legal event first (in many chunks), then an endless line.
    const annotations = { big: 'x'.repeat(40 * 1024) };
    api.update('Service', { ...svc('a'), metadata: { name: 'a', namespace: 'default', annotations } });
    await waitFor(
      () => (r.items().get('default/a')?.metadata as { annotations?: unknown })?.annotations !== undefined,
    );
    assert.equal(api.writeToWatches(Buffer.alloc(100 * 1024, 0x61)), 1);
    await waitFor(() => lists(api).length === 2, 4000, 'relist after the oversized event');
    assert.match(r.status().lastError ?? '', /watch event larger than 65536 bytes/);
    assert.equal(r.status().lastErrorCategory, 'bad-response');
    assert.equal(r.items().size, 1);
  });

  it('sends no credentials to a plain http:// server (as client-go)', async () => {
    api = await FakeApiServer.create();
    const r = start(FAST, kubeTransport(api.kubeConfig('secret-token')));
    await r.waitForSync();
    assert.equal(api.lastAuthorization, undefined);
  });
});

describe('Reflector parts', () => {
  it('LineSplitter: lines across chunks, multi-byte characters split between chunks', () => {
    const s = new LineSplitter(1024);
    const text = Buffer.from('{"a":"é€😀"}\n{"b":1}\n{"c"');
    const out: string[] = [];
    for (let i = 0; i < text.length; i++) out.push(...s.push(text.subarray(i, i + 1)));
    assert.deepEqual(out, ['{"a":"é€😀"}', '{"b":1}']);
    assert.equal(s.pending, 4);
    assert.deepEqual(s.push(Buffer.from(':2}\n\n')), ['{"c":2}', '']);
  });

  it('LineSplitter: refuses a line beyond its bound before buffering it', () => {
    const s = new LineSplitter(10);
    assert.deepEqual(s.push(Buffer.from('0123456789\n')), ['0123456789']);
    s.push(Buffer.from('01234'));
    assert.throws(
      () => s.push(Buffer.from('567890')),
      (e: unknown) => e instanceof ProtocolError && e.relist,
    );
  });

  it('LineSplitter: linear in the bytes of a long line (8x the bytes, far below the 64x of a quadratic)', () => {
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    const time = (mb: number): number => {
      let best = Infinity;
      // CPU time, not wall time: on a loaded machine the wall clock measures the scheduler.
      for (let run = 0; run < 5; run++) {
        const s = new LineSplitter(1024 * 1024 * 1024);
        const t0 = process.cpuUsage();
        for (let n = 0; n < (mb * 1024 * 1024) / chunk.length; n++) s.push(chunk);
        assert.equal(s.push(Buffer.from('\n'))[0]!.length, mb * 1024 * 1024);
        const used = process.cpuUsage(t0);
        best = Math.min(best, (used.user + used.system) / 1000);
      }
      return best;
    };
    time(2); // warm-up
    // The old splitter (string += chunk, indexOf from the start) was quadratic: 64 MB took 36 s.
    // A major GC of the whole unit run's heap or page faults of the 32 MB line can still land in one
    // measurement (4 MB 5 ms, 32 MB 133 ms seen at load 9): up to three tries, both sizes measured
    // afresh each time. A quadratic splitter (64x) fails every try.
    const tries: string[] = [];
    let linear = false;
    let big = Infinity;
    for (let attempt = 0; attempt < 3 && !linear; attempt++) {
      const small = Math.max(time(4), 2);
      big = time(32);
      tries.push(`4 MB: ${small.toFixed(0)} ms, 32 MB: ${big.toFixed(0)} ms`);
      linear = big < small * 24;
    }
    assert.ok(linear, tries.join('; '));
    assert.ok(big < 5000, `32 MB line split in ${big.toFixed(0)} ms`);
  });

  it('errorCategory: fixed categories for health, never the text', () => {
    assert.equal(errorCategory(new ApiError(401, 'x')), 'unauthorized');
    assert.equal(errorCategory(new ApiError(403, 'x')), 'forbidden');
    assert.equal(errorCategory(new ApiError(500, 'x')), 'server-error');
    assert.equal(errorCategory(new CredentialError('x')), 'credentials');
    assert.equal(errorCategory(new ProtocolError('x', true)), 'bad-response');
    const tls = Object.assign(new Error('self-signed'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
    assert.equal(errorCategory(new Error('list services: x', { cause: tls })), 'tls');
    assert.equal(errorCategory(new Error('connect ECONNREFUSED')), 'unreachable');
  });

  it('an exec credential plugin that fails: a CredentialError without its output', async () => {
    const api = await FakeApiServer.create({ tls: true });
    const dir = mkdtempSync(join(tmpdir(), 'svcplane-exec-'));
    try {
      const plugin = join(dir, 'plugin.sh');
      writeFileSync(
        plugin,
        '#!/bin/sh\necho "oauth2: cannot fetch token: refresh_token=rt-SECRET1 client_secret=cs-SECRET2" >&2\nexit 1\n',
      );
      chmodSync(plugin, 0o755);
      const kc = new KubeConfig();
      kc.loadFromString(
        api.kubeconfigYaml(
          `{exec: {apiVersion: client.authentication.k8s.io/v1, command: ${plugin}, interactiveMode: Never}}`,
        ),
      );
      const err = await kubeTransport(kc)
        .get('/api/v1/services', new AbortController().signal)
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      assert.ok(err instanceof CredentialError, String(err));
      assert.doesNotMatch(err.message, /SECRET|refresh_token|client_secret/);
      assert.match(err.message, /credential plugin or auth provider failed/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await api.stop();
    }
  });
});
