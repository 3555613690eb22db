import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { packageRoot } from '../../../src/util/paths.js';

/**
 * The operator docs (README.md, DEVELOPERS.md, docs/, deploy/) stand on their own: every relative
 * link and every file they name exists in the repository, none points outside it (a clone has no
 * `../shared`), and every `#anchor` is a heading of its target.
 */
const root = packageRoot();

function markdownFiles(): string[] {
  const walk = (dir: string): string[] =>
    existsSync(join(root, dir))
      ? readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
          e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.md') ? [join(dir, e.name)] : [],
        )
      : [];
  return ['README.md', 'DEVELOPERS.md', ...walk('docs'), ...walk('deploy')].filter((f) =>
    existsSync(join(root, f)),
  );
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', repeats numbered. */
export function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = fenced ? null : /^#{1,6} +(.*?)#*\s*$/.exec(line);
    if (!m) continue;
    const base = m[1]!
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-');
    let anchor = base;
    for (let n = 1; anchors.has(anchor); n++) anchor = `${base}-${n}`;
    anchors.add(anchor);
  }
  return anchors;
}

/** Every link target of `[text](target)` (inline links; code spans and fences included: they are read too). */
export function linkTargets(markdown: string): string[] {
  return [...markdown.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)].map((m) => m[1]!);
}

/** Repository paths named in prose (`src/…`, `test/…`, `docs/…` …) that end in a file name. */
export function namedRepoFiles(markdown: string): string[] {
  const dirs = 'src|test|scripts|deploy|docs|bench|examples|bin|\\.ci';
  const re = new RegExp(`(?<![\\w./-])(?:${dirs})/[\\w.-]+(?:/[\\w.-]+)*\\.[a-z]{1,5}(?![\\w*<>/-])`, 'g');
  return [...markdown.matchAll(re)].map((m) => m[0]);
}

/** Problems of one file's references; '' when none. */
export function referenceProblems(file: string, markdown: string, exists: (p: string) => boolean): string[] {
  const problems: string[] = [];
  const dir = dirname(join(root, file));
  const inside = (abs: string) => abs === root || abs.startsWith(root + sep);
  for (const m of markdown.matchAll(/(?<![\w.])(?:\.\.\/)+[\w.-]+/g)) {
    const abs = resolve(dir, m[0]);
    if (!inside(abs)) problems.push(`${file}: "${m[0]}" is outside the repository`);
  }
  if (/\/work\/|\.\.\/shared\b/.test(markdown)) problems.push(`${file}: names a path of the build machines`);
  for (const target of linkTargets(markdown)) {
    if (/^[a-z]+:/i.test(target)) continue; // https:, mailto:
    const [path = '', anchor] = target.split('#', 2);
    const abs = path === '' ? join(root, file) : resolve(dir, decodeURIComponent(path));
    if (!inside(abs)) {
      problems.push(`${file}: link ${target} leaves the repository`);
      continue;
    }
    if (!exists(abs)) {
      problems.push(`${file}: link ${target}: ${relative(root, abs)} does not exist`);
      continue;
    }
    if (anchor !== undefined && abs.endsWith('.md')) {
      if (!headingAnchors(readFileSync(abs, 'utf8')).has(anchor)) {
        problems.push(`${file}: link ${target}: no heading #${anchor} in ${relative(root, abs)}`);
      }
    }
  }
  for (const named of namedRepoFiles(markdown)) {
    if (!exists(join(root, named))) problems.push(`${file}: names ${named}, which does not exist`);
  }
  return problems;
}

describe('docs: references stay inside the repository and resolve', () => {
  const onDisk = (p: string) => existsSync(p);

  it('finds the operator docs (README, docs/)', () => {
    const files = markdownFiles();
    for (const f of ['README.md', 'docs/flags.md', 'docs/configuration.md']) assert.ok(files.includes(f), f);
  });

  for (const file of markdownFiles()) {
    it(`${file}: links and named files exist, nothing outside the repository`, () => {
      const problems = referenceProblems(file, readFileSync(join(root, file), 'utf8'), onDisk);
      assert.deepEqual(problems, []);
    });
  }

  it('the checker catches what it guards against (outside paths, dead links, dead anchors, missing files)', () => {
    const text = [
      'See `../shared/reference/kube-proxy-iptables.md` and ../../etc/passwd.',
      '[gone](docs/nothing-here.md), [anchor](README.md#no-such-heading), [up](../README.md)',
      'the test test/unit/no-such.test.ts',
    ].join('\n');
    const problems = referenceProblems('README.md', text, onDisk).join('\n');
    for (const expected of [
      '"../shared" is outside the repository',
      '"../../etc" is outside the repository',
      'names a path of the build machines',
      'link docs/nothing-here.md: docs/nothing-here.md does not exist',
      'link README.md#no-such-heading: no heading #no-such-heading',
      'link ../README.md leaves the repository',
      'names test/unit/no-such.test.ts, which does not exist',
    ]) {
      assert.ok(problems.includes(expected), `"${expected}" not in:\n${problems}`);
    }
    assert.deepEqual(
      referenceProblems('README.md', '[ok](docs/flags.md) [web](https://kubernetes.io/)', onDisk),
      [],
    );
  });

  it('GitHub heading anchors', () => {
    assert.deepEqual(
      [
        ...headingAnchors(
          '# svcplane\n## Replace kube-proxy, and back\n```\n# not a heading\n```\n## Modes\n## Modes\n',
        ),
      ],
      ['svcplane', 'replace-kube-proxy-and-back', 'modes', 'modes-1'],
    );
  });

  it('a LICENSE file holds the license package.json names (Apache-2.0, full text)', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { license: string };
    assert.equal(pkg.license, 'Apache-2.0');
    const license = readFileSync(join(root, 'LICENSE'), 'utf8');
    assert.match(license, /Apache License\s+Version 2\.0, January 2004/);
    assert.match(license, /END OF TERMS AND CONDITIONS/);
    assert.ok(statSync(join(root, 'LICENSE')).size > 10_000, 'the full text, not a pointer to it');
  });
});
