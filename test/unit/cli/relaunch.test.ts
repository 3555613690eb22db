import assert from 'node:assert/strict';
import { relaunchArgv } from '../../../src/cli/relaunch.js';

/**
 * bin/svcplane.js starts node again with the daemon's young-generation flag (src/util/memory.ts) for
 * the daemon only, once, and never against a choice the user made on node's command line or in
 * NODE_OPTIONS.
 */
describe('relaunchArgv: the daemon started again with its V8 flags', () => {
  const NODE = '/usr/bin/node';
  const BIN = '/app/bin/svcplane.js';
  const again = (args: string[], execArgv: string[] = [], nodeOptions?: string) =>
    relaunchArgv([NODE, BIN, ...args], NODE, execArgv, nodeOptions);

  it('the daemon forms: no command, kube-proxy flags first, `run`', () => {
    assert.deepEqual(again([]), [NODE, '--max-semi-space-size=4', BIN]);
    assert.deepEqual(again(['--config=/c.conf', '-v=2']), [
      NODE,
      '--max-semi-space-size=4',
      BIN,
      '--config=/c.conf',
      '-v=2',
    ]);
    assert.deepEqual(again(['run', '--manifests=/m'], ['--enable-source-maps']), [
      NODE,
      '--max-semi-space-size=4',
      '--enable-source-maps',
      BIN,
      'run',
      '--manifests=/m',
    ]);
  });

  it('not the one-shot commands, the version or the help', () => {
    for (const args of [
      ['sync', '--manifests=/m'],
      ['diff'],
      ['explain'],
      ['cleanup'],
      ['netns', 'list'],
      ['-V'],
      ['--version'],
      ['--help'],
      ['run', '-h'],
      ['help', 'run'],
    ]) {
      assert.equal(again(args), undefined, args.join(' '));
    }
  });

  it('once: not when the flag is in effect (started again) or chosen by the user', () => {
    assert.equal(again(['run'], ['--max-semi-space-size=4']), undefined);
    assert.equal(again(['run'], ['--max-semi-space-size=32']), undefined);
    assert.equal(again(['run'], ['--max_semi_space_size=16']), undefined);
    assert.equal(again(['run'], [], '--max-old-space-size=512 --max-semi-space-size=16'), undefined);
    assert.deepEqual(again(['run'], [], '--max-old-space-size=512'), [
      NODE,
      '--max-semi-space-size=4',
      BIN,
      'run',
    ]);
  });
});
