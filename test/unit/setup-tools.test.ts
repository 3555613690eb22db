import assert from 'node:assert/strict';
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';

/**
 * scripts/setup.sh installs every tool the tests and svcplane call: each command named at the head of
 * an argument array handed to run/cmd/tryCmd/exec/startProcess/Background in src/, test/ and bench/
 * must be installed here and come from a package setup.sh installs, or from a package every Debian
 * system has (Priority: required). Container-side commands (test/docker) are the image's business.
 */

const ROOT = packageRoot();
const CALL =
  /\b(?:run|cmd|tryCmd|startProcess|exec|Background)\(\s*(?:\[|[^,()\n]{1,60},\s*\[)\s*'([a-z][a-z0-9_.-]*)'/g;
/** Not system tools: the runtime itself and svcplane's own CLI. */
const OWN = new Set(['node', 'svcplane']);

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (p !== join(ROOT, 'test', 'docker') && e.name !== 'fixtures') out.push(...sources(p));
    } else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

function aptPackages(): string[] {
  const m = /^APT_PACKAGES=\(([^)]*)\)/m.exec(readFileSync(join(ROOT, 'scripts/setup.sh'), 'utf8'));
  assert.ok(m, 'APT_PACKAGES=(...) in scripts/setup.sh');
  return m[1]!.trim().split(/\s+/);
}

async function owner(file: string): Promise<string | undefined> {
  // usrmerge: dpkg knows /sbin/ip or /usr/sbin/ip, whichever the package ships.
  for (const f of [file, file.replace(/^\/usr(?=\/s?bin\/)/, '')]) {
    const r = await run(['dpkg-query', '-S', f], { allowFailure: true });
    if (r.exitCode === 0) return r.stdout.split(':')[0]!.trim();
  }
  return undefined;
}

describe('scripts/setup.sh installs every tool the code and tests call', () => {
  it('each command is installed and comes from a package setup.sh installs (or a required one)', async function () {
    this.timeout(30_000);
    const tools = new Set<string>();
    for (const dir of ['src', 'test', 'bench']) {
      for (const file of sources(join(ROOT, dir))) {
        for (const m of readFileSync(file, 'utf8').matchAll(CALL)) tools.add(m[1]!);
      }
    }
    for (const t of ['curl', 'ip', 'iptables', 'ipvsadm', 'conntrack', 'socat']) {
      assert.ok(tools.has(t), `the scan finds ${t} (the pattern still matches the call sites)`);
    }
    const wanted = new Set(aptPackages());
    const problems: string[] = [];
    for (const tool of [...tools].filter((t) => !OWN.has(t)).sort()) {
      const path = (
        await run(['sh', '-c', 'command -v "$1"', 'sh', tool], { allowFailure: true })
      ).stdout.trim();
      if (!path || !statSync(path, { throwIfNoEntry: false })) {
        problems.push(`${tool}: not installed`);
        continue;
      }
      const pkg = await owner(realpathSync(path));
      if (!pkg) {
        problems.push(`${tool}: ${path} belongs to no Debian package`);
        continue;
      }
      if (wanted.has(pkg)) continue;
      const prio = (await run(['dpkg-query', '-W', '-f', '${Priority}', pkg])).stdout.trim();
      if (prio !== 'required')
        problems.push(`${tool}: package ${pkg} (${prio}) is not in setup.sh's APT_PACKAGES`);
    }
    assert.deepEqual(problems, []);
  });
});
