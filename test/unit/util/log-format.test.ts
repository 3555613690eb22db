import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import winston from 'winston';
import { configureLogging, formatTextLine, levelForVerbosity, log } from '../../../src/util/log.js';

/**
 * --logging-format text (the default, klog's one-line shape) and json; -v as kube-proxy means it;
 * error stacks only from -v=4; credentials redacted in both formats. Before issue 13 logs were JSON
 * only, with a stack trace in every logged error.
 */

const JWT =
  'eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0.c2lnbmF0dXJlLWJ5dGVz';

describe('log formats', () => {
  const lines: string[] = [];
  const sink = new winston.transports.Stream({
    stream: new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString().trimEnd());
        done();
      },
    }),
  });
  before(() => log.add(sink));
  after(() => {
    log.remove(sink);
    configureLogging({ format: 'text', verbosity: 0 });
  });
  beforeEach(() => lines.splice(0));

  it('text by default: one klog-style line, strings quoted, numbers bare', () => {
    configureLogging({ format: 'text', verbosity: 0 });
    log.warn('IPv6 iptables unavailable', { family: 'IPv6', retries: 3, ok: false });
    assert.equal(lines.length, 1);
    assert.match(
      lines[0]!,
      /^W\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ svcplane\] "IPv6 iptables unavailable" family="IPv6" retries=3 ok=false$/,
    );
    log.error('sync failed', { error: new Error('exit status 4') });
    assert.match(lines[1]!, /^E\d{4} .* "sync failed" error="exit status 4"$/, 'an error is its message');
  });

  it('no stack trace below -v=4; the stack from -v=4 on', () => {
    configureLogging({ format: 'text', verbosity: 2 });
    log.error('cannot start', { error: new Error('boom') });
    assert.doesNotMatch(lines[0]!, /at /);
    configureLogging({ format: 'text', verbosity: 4 });
    log.error('cannot start', { error: new Error('boom') });
    assert.match(lines[1]!, /error="Error: boom\\n +at /);
    assert.equal(lines[1]!.split('\n').length, 1, 'still one line');
  });

  it('json: one object per line with level, message, timestamp and the fields', () => {
    configureLogging({ format: 'json', verbosity: 0 });
    log.info('synced once', { backend: 'iptables/IPv4', lines: 12 });
    const rec = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.equal(rec.level, 'info');
    assert.equal(rec.message, 'synced once');
    assert.equal(rec.backend, 'iptables/IPv4');
    assert.equal(rec.lines, 12);
    assert.match(String(rec.timestamp), /^\d{4}-\d\d-\d\dT/);
    log.error('x', { error: new Error('boom') });
    assert.equal((JSON.parse(lines[1]!) as { error: { stack?: string } }).error.stack, undefined);
  });

  it('redacts credentials in both formats', () => {
    for (const format of ['text', 'json'] as const) {
      configureLogging({ format, verbosity: 4 });
      log.warn(`exec plugin: refresh_token=rt-SECRET1 ${JWT}`, {
        token: 'tk-SECRET2',
        error: new Error('GET https://admin:pw-SECRET3@10.0.0.1:6443/api: Bearer bt-SECRET4'),
      });
    }
    assert.equal(lines.length, 2);
    for (const l of lines) {
      for (const s of ['rt-SECRET1', JWT, 'tk-SECRET2', 'pw-SECRET3', 'bt-SECRET4']) {
        assert.ok(!l.includes(s), `${s} in ${l}`);
      }
    }
  });

  it("-v levels mean kube-proxy's: 0 and 1 info, 2 each sync, 4 details", () => {
    assert.equal(levelForVerbosity(0), 'info');
    assert.equal(levelForVerbosity(1), 'info');
    assert.equal(levelForVerbosity(2), 'verbose');
    assert.equal(levelForVerbosity(3), 'verbose');
    assert.equal(levelForVerbosity(4), 'debug');
    configureLogging({ format: 'text', verbosity: 0 });
    log.verbose('synced');
    assert.equal(lines.length, 0, 'a sync is not logged at -v=0');
    configureLogging({ format: 'text', verbosity: 2 });
    log.verbose('synced');
    assert.equal(lines.length, 1);
  });

  it('formatTextLine is pure', () => {
    const at = new Date(2026, 11, 6, 9, 5, 3, 7).getTime() * 1000 + 42;
    assert.equal(
      formatTextLine({ level: 'info', message: 'x "y"', n: 1, obj: { a: 1 } }, at).replace(
        / +\d+ svcplane/,
        ' P svcplane',
      ),
      'I1206 09:05:03.007042 P svcplane] "x \\"y\\"" n=1 obj={"a":1}',
    );
  });
});
