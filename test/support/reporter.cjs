'use strict';
// Spec output plus a last line "N passed, N failed, N skipped" that CI reads.
const Mocha = require('mocha');
const { Spec } = Mocha.reporters;
const { EVENT_RUN_END, EVENT_TEST_PASS, EVENT_TEST_FAIL, EVENT_TEST_PENDING } = Mocha.Runner.constants;

class SummaryReporter extends Spec {
  constructor(runner, options) {
    super(runner, options);
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    runner.on(EVENT_TEST_PASS, () => passed++);
    runner.on(EVENT_TEST_FAIL, () => failed++);
    runner.on(EVENT_TEST_PENDING, () => skipped++);
    runner.once(EVENT_RUN_END, () => {
      const line = `${passed} passed, ${failed} failed, ${skipped} skipped`;
      const file = process.env.SVCPLANE_SUMMARY_FILE;
      if (file) require('node:fs').appendFileSync(file, line + '\n');
      process.stdout.write('\n' + line + '\n');
    });
  }
}
module.exports = SummaryReporter;
