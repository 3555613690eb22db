'use strict';
// Spec output plus a closing line "N passed, N failed, N skipped" that CI reads, followed on the same
// line by what was skipped and why, and what failed without being a test (a skip nobody asked for,
// a suite below its floor).
//
// Skips: a test that skips (this.skip(), it.skip, a pending it() without a body, a before hook that
// skips its suite) is a FAILURE unless the environment variable SVCPLANE_SKIP names its suite
// (comma-separated: unit, integration, ipvs, docker). Tests say why they skip through
// test/support/skip.ts (skipBecause), which records the reason read here.
//
// Floors: when SVCPLANE_SUITE names the suite this run is (scripts/test.sh sets it per step), the
// number of tests reached must be at least that suite's entry in test/floors.json, so a suite that
// quietly shrinks (a file no longer found, a describe emptied by a refactor) fails.
//
// SVCPLANE_SUMMARY_FILE: if set, the closing line's parts are appended there for scripts/test.sh:
// "P passed, F failed, S skipped" and one "skipped: ..." or "failed: ..." line per detail.
const fs = require('node:fs');
const path = require('node:path');
const Mocha = require('mocha');
const { Spec } = Mocha.reporters;
const { EVENT_RUN_END, EVENT_TEST_PASS, EVENT_TEST_FAIL, EVENT_TEST_PENDING } = Mocha.Runner.constants;

/** Where test/support/skip.ts records reasons (a WeakMap keyed by test or suite). */
const REASONS = Symbol.for('svcplane.skipReasons');
const SUITES = ['unit', 'integration', 'ipvs', 'docker'];

/** The suite a test belongs to: its file under test/<suite>/ (also dist/test/<suite>/), else SVCPLANE_SUITE. */
function suiteOf(test) {
  const file = test.file || (test.parent && test.parent.file) || '';
  const m = /[\\/]test[\\/]([a-z]+)[\\/]/.exec(file);
  if (m && SUITES.includes(m[1])) return m[1];
  return process.env.SVCPLANE_SUITE || 'tests';
}

/** The suites SVCPLANE_SKIP names. */
function requestedSkips() {
  return new Set(
    (process.env.SVCPLANE_SKIP || '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  );
}

function reasonOf(test) {
  const map = globalThis[REASONS];
  for (let r = test; r; r = r.parent) {
    const why = map && map.get(r);
    if (why) return why;
  }
  // Marked pending in the source (it.skip, xit, describe.skip, or it() without a body).
  return 'no reason given (a bare skip or a pending test in the source)';
}

function floorOf(suite) {
  try {
    const floors = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'floors.json'), 'utf8'));
    return typeof floors[suite] === 'number' ? floors[suite] : undefined;
  } catch {
    return undefined;
  }
}

/** "integration: 3 × not root" for each (suite, reason), in order of first appearance. */
function group(entries) {
  const counts = new Map();
  for (const [suite, why] of entries) {
    const k = `${suite}: ${why}`;
    counts.set(k, (counts.get(k) || 0) + 1);
  }
  return [...counts].map(([k, n]) => (n > 1 ? `${k} (${n} tests)` : k));
}

class SummaryReporter extends Spec {
  constructor(runner, options) {
    super(runner, options);
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const allowed = requestedSkips();
    const skips = []; // [suite, why] allowed
    const unasked = []; // [suite, why] failed
    const suites = new Set();
    runner.on(EVENT_TEST_PASS, (t) => {
      passed++;
      suites.add(suiteOf(t));
    });
    runner.on(EVENT_TEST_FAIL, (t) => {
      failed++;
      suites.add(suiteOf(t));
    });
    runner.on(EVENT_TEST_PENDING, (test) => {
      const suite = suiteOf(test);
      suites.add(suite);
      const why = reasonOf(test);
      if (allowed.has(suite)) {
        skipped++;
        skips.push([suite, `${why} [SVCPLANE_SKIP=${process.env.SVCPLANE_SKIP}]`]);
        return;
      }
      unasked.push([suite, why]);
      // A real failure: counted by mocha (exit status), listed with the others, counted by us.
      runner.fail(
        test,
        new Error(
          `skipped without being asked: ${why}. A skip fails unless SVCPLANE_SKIP names the suite (SVCPLANE_SKIP=${suite}).`,
        ),
        true,
      );
    });
    runner.once(EVENT_RUN_END, () => {
      const extra = [];
      const suite = process.env.SVCPLANE_SUITE;
      const floor = suite ? floorOf(suite) : undefined;
      const reached = passed + failed + skipped;
      if (floor !== undefined && reached < floor) {
        extra.push(
          `${suite}: only ${reached} tests ran, the floor is ${floor} (test/floors.json): a test file or suite went missing`,
        );
      }
      if (suite && floor === undefined && SUITES.includes(suite)) {
        extra.push(`${suite}: no floor in test/floors.json`);
      }
      if (extra.length) {
        failed += extra.length;
        for (const e of extra) process.stdout.write(`\n  FAILED: ${e}\n`);
        // Mocha's exit status is runner.failures, read by its own "end" listener, which runs after ours.
        runner.failures += extra.length;
      }
      const details = [
        ...group(skips).map((s) => `skipped: ${s}`),
        ...group(unasked).map((s) => `failed: unasked skip in ${s}`),
        ...extra.map((s) => `failed: ${s}`),
      ];
      const counts = `${passed} passed, ${failed} failed, ${skipped} skipped`;
      const file = process.env.SVCPLANE_SUMMARY_FILE;
      if (file) fs.appendFileSync(file, [counts, ...details].join('\n') + '\n');
      process.stdout.write('\n' + [counts, ...details].join('; ') + '\n');
    });
  }
}
module.exports = SummaryReporter;
