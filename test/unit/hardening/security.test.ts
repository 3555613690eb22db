import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { optionsFromArgs } from '../../../src/config/options.js';
import { bindHostPort } from '../../../src/controller/servers-factory.js';

/** Security defaults: metrics on localhost only, least-privilege RBAC, no shell anywhere. */

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..');

describe('hardening: security defaults', () => {
  it('binds metrics to 127.0.0.1:10249 and healthz to 0.0.0.0:10256 by default', () => {
    const opts = optionsFromArgs([]);
    assert.equal(opts.metricsBindAddress, '127.0.0.1:10249');
    assert.equal(bindHostPort(opts.metricsBindAddress).host, '127.0.0.1');
    assert.equal(opts.healthzBindAddress, '0.0.0.0:10256');
    assert.throws(() => bindHostPort('127.0.0.1:70000'), /port out of range/);
  });

  it('the DaemonSet RBAC grants exactly list and watch on what svcplane reads (NetworkPolicy enforcement included)', () => {
    const docs = parseAllDocuments(readFileSync(join(ROOT, 'deploy/base/rbac.yaml'), 'utf8')).map(
      (d) =>
        d.toJS() as {
          kind?: string;
          rules?: { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[];
        },
    );
    const roles = docs.filter((d) => d.kind === 'ClusterRole' || d.kind === 'Role');
    assert.equal(roles.length, 1);
    const granted = roles[0]!.rules!.flatMap((r) => {
      assert.equal(r.resourceNames, undefined, 'no per-name rules');
      return r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g}/${res}:${v}`)));
    });
    // The informers list, then watch; the Node is listed by field selector (never a GET by name).
    assert.deepEqual(granted.sort(), [
      '/namespaces:list',
      '/namespaces:watch',
      '/nodes:list',
      '/nodes:watch',
      '/pods:list',
      '/pods:watch',
      '/services:list',
      '/services:watch',
      'discovery.k8s.io/endpointslices:list',
      'discovery.k8s.io/endpointslices:watch',
      'networking.k8s.io/networkpolicies:list',
      'networking.k8s.io/networkpolicies:watch',
    ]);
  });

  it('spawns child processes only through src/util/exec.ts, never through a shell', () => {
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (p.endsWith('.ts') && !p.endsWith(join('src', 'util', 'exec.ts'))) {
          const text = readFileSync(p, 'utf8');
          if (/from 'node:child_process'|from 'execa'|shell:\s*true/.test(text)) offenders.push(p);
        }
      }
    };
    walk(join(ROOT, 'src'));
    // No exception: the sandbox's agents too are spawned through exec.ts (spawnConversation,
    // spawnDetached); eslint.config.js's no-restricted-imports keeps it so.
    assert.deepEqual(
      offenders.map((p) => p.slice(ROOT.length + 1)),
      [],
    );
  });
});
