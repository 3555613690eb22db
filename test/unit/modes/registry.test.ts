import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { allModes, modeNamed } from '../../../src/modes/registry.js';

/** The registry's promises to the CLI: one entry per mode, a fallback that ends, nothing else choosing. */
describe('mode registry', () => {
  it('every --proxy-mode value kube-proxy accepts on Linux that svcplane runs has one entry', () => {
    const names = allModes().map((m) => m.name);
    assert.deepEqual([...new Set(names)], names, 'names are unique');
    assert.ok(names.includes('iptables') && names.includes('ipvs'));
    assert.equal(modeNamed('ipvs').name, 'ipvs');
  });

  it('a fallback names a registered mode and the fallback chain ends', () => {
    for (const mode of allModes()) {
      const seen = new Set<string>([mode.name]);
      let next = mode.fallback;
      while (next !== undefined) {
        assert.ok(!seen.has(next), `${mode.name}: fallback cycle through ${next}`);
        seen.add(next);
        next = modeNamed(next).fallback;
      }
    }
    assert.equal(modeNamed('ipvs').fallback, 'iptables', "kube-proxy < 1.26's IPVS fallback");
  });

  it('IPVS mode is cleaned up before iptables mode (its rules hang off the shared chains)', () => {
    assert.ok(modeNamed('ipvs').cleanupPriority > modeNamed('iptables').cleanupPriority);
  });

  it('outside the registry and the mode folders, no source file compares the proxy mode to a name', () => {
    const files = (dir: string): string[] =>
      readdirSync(dir).flatMap((n) => {
        const p = join(dir, n);
        return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
      });
    const offenders = files('src').filter((f) => {
      if (f.startsWith(join('src', 'config'))) return false; // parses and validates the flag itself
      // `opts.proxyMode !== 'iptables'` (node-cidr.ts on main), `this.mode === 'iptables'` (metrics.ts).
      return /\bproxyMode\s*[!=]==|\bmode\s*[!=]==\s*'(iptables|ipvs|nftables)'/.test(
        readFileSync(f, 'utf8'),
      );
    });
    assert.deepEqual(offenders, []);
  });
});
