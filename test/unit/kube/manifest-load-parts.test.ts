import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManifestSource } from '../../../src/kube/manifests.js';
import { LoadPartFeed, type LoadPart } from '../../../src/model/load-parts.js';
import type { Service } from '../../../src/model/types.js';

/**
 * The manifest source's first load in parts (model/load-parts.ts, for a new node's first full sync
 * started while the files are read): every LOAD_PART_FILES files, the Services that came or changed;
 * replaying the parts gives the complete state's Services, except the last files' (the complete
 * state is what a sync uses); never a part after start().
 */

const svc = (name: string, ip: string): string => `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: default}
spec: {clusterIP: ${ip}, ports: [{port: 80}]}
`;
const slice = (name: string, ip: string): string => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}-x, namespace: default, labels: {kubernetes.io/service-name: ${name}}}
addressType: IPv4
ports: [{port: 80}]
endpoints: [{addresses: [${ip}]}]
`;

describe('manifest source: the first load in parts', () => {
  let dir = '';
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'svcp-parts-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('parts replay to the Services of the files read; a later file changes or removes a streamed Service', async () => {
    for (let i = 0; i < 40; i++) {
      writeFileSync(join(dir, `a${String(i).padStart(2, '0')}.yaml`), svc(`s${i}`, `10.96.0.${i + 1}`));
    }
    // s1's slice and a redefinition of s2 (invalid) come in later files.
    writeFileSync(join(dir, 'z1.yaml'), slice('s1', '10.0.0.9'));
    writeFileSync(join(dir, 'z2.yaml'), svc('s2', 'not-an-ip'));
    for (let i = 0; i < 8; i++) writeFileSync(join(dir, `zz${i}.yaml`), svc(`t${i}`, `10.96.1.${i + 1}`));
    const parts: LoadPart[] = [];
    const source = new ManifestSource(dir, {
      readOnce: true,
      loadPartFiles: 5,
      onLoadPart: (p) => parts.push(p),
    });
    await source.start();
    const count = parts.length;
    assert.ok(count >= 8, `${count} parts`);
    const replay = new Map<string, Service>();
    for (const p of parts) {
      for (const [k, v] of p.services) {
        if (v === undefined) replay.delete(k);
        else replay.set(k, v);
      }
    }
    const final = source.current()!.services;
    // Every Service in the parts is the complete state's very object, or absent from it.
    for (const [k, v] of replay) assert.ok(final.get(k) === v || !final.has(k), k);
    assert.equal(final.has('default/s2'), false);
    assert.equal(replay.has('default/s2'), false, 's2 was removed by a later part');
    assert.equal(final.get('default/s1')?.ports[0]?.endpoints.length, 1);
    assert.equal(replay.get('default/s1'), final.get('default/s1'), "s1's slice came in a later part");
    await source.refresh();
    assert.equal(parts.length, count, 'no part after the first load');
    await source.stop();
  });

  it('the feed gives each subscriber every part, then ends or throws the load failure', async () => {
    const feed = new LoadPartFeed();
    const a = feed.subscribe();
    const b = feed.subscribe();
    const part = (k: string): LoadPart => ({ services: new Map([[k, undefined]]), nodes: new Map() });
    feed.push(part('x'));
    feed.push({ services: new Map(), nodes: new Map() });
    feed.push(part('y'));
    feed.end();
    const keys = async (it: AsyncIterable<LoadPart>): Promise<string[]> => {
      const out: string[] = [];
      for await (const p of it) out.push(...p.services.keys());
      return out;
    };
    assert.deepEqual(await keys(a), ['x', 'y']);
    assert.deepEqual(await keys(b), ['x', 'y']);
    const failing = new LoadPartFeed();
    const c = failing.subscribe();
    failing.push(part('x'));
    setTimeout(() => failing.fail(new Error('manifest path gone')), 5);
    await assert.rejects(keys(c), /manifest path gone/);
  });
});
