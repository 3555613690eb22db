/**
 * A FUSE filesystem whose one file never answers a read: what a manifest on a dead NFS server looks
 * like to svcplane (stat and open succeed, read blocks in the kernel). Speaks the FUSE protocol on
 * /dev/fuse itself (no libfuse on these machines) and mounts with `mount -i -t fuse`.
 *
 *   unshare --mount --propagation private node --import=tsx test/support/hung-fs.ts MOUNTPOINT
 *
 * Prints `ready` once mounted. Run it in a private mount namespace (as above): the mount dies with the
 * namespace when the last process in it exits, also when a test fails. Serves until killed; killing
 * it aborts the connection and the hung read fails with ENOTCONN.
 *
 * The mount holds one regular file, `hung.yaml` (100 bytes, mode 0644): LOOKUP, GETATTR and OPEN are
 * answered, READ never is.
 */
import { spawnSync } from 'node:child_process';
import { openSync, readSync, writeSync } from 'node:fs';

const OP = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  OPEN: 14,
  READ: 15,
  RELEASE: 18,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  RELEASEDIR: 29,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
} as const;
const ENOENT = 2;
const ENOSYS = 38;
const ROOT = 1n;
const FILE = 2n;
const FILE_NAME = 'hung.yaml';
const FILE_SIZE = 100n;
const FOPEN_DIRECT_IO = 1;

const mountpoint = process.argv[2];
if (!mountpoint) throw new Error('usage: hung-fs.ts MOUNTPOINT');

const fd = openSync('/dev/fuse', 'r+');
const mount = spawnSync(
  'mount',
  ['-i', '-t', 'fuse', '-o', 'fd=3,rootmode=40000,user_id=0,group_id=0', 'svcplane-hung', mountpoint],
  { stdio: ['ignore', 'inherit', 'inherit', fd] },
);
if (mount.status !== 0) throw new Error(`mount -t fuse failed (status ${String(mount.status)})`);
process.stdout.write('ready\n');

/** struct fuse_attr (88 bytes). */
function attr(node: bigint): Buffer {
  const b = Buffer.alloc(88);
  const dir = node === ROOT;
  b.writeBigUInt64LE(node, 0); // ino
  b.writeBigUInt64LE(dir ? 0n : FILE_SIZE, 8); // size
  b.writeBigUInt64LE(1n, 16); // blocks
  b.writeUInt32LE(dir ? 0o40755 : 0o100644, 60); // mode
  b.writeUInt32LE(dir ? 2 : 1, 64); // nlink
  b.writeUInt32LE(4096, 80); // blksize
  return b;
}

function reply(unique: bigint, error: number, body: Buffer = Buffer.alloc(0)): void {
  const head = Buffer.alloc(16);
  head.writeUInt32LE(16 + body.length, 0);
  head.writeInt32LE(-error, 4);
  head.writeBigUInt64LE(unique, 8);
  writeSync(fd, Buffer.concat([head, body]));
}

const buf = Buffer.alloc(1 << 20);
for (;;) {
  let n: number;
  try {
    n = readSync(fd, buf, 0, buf.length, null);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EINTR' || code === 'EAGAIN') continue;
    break; // ENODEV: unmounted
  }
  if (n < 40) continue;
  const opcode = buf.readUInt32LE(4);
  const unique = buf.readBigUInt64LE(8);
  const node = buf.readBigUInt64LE(16);
  switch (opcode) {
    case OP.INIT: {
      const out = Buffer.alloc(64);
      out.writeUInt32LE(7, 0); // major
      out.writeUInt32LE(buf.readUInt32LE(44), 4); // the kernel's minor
      out.writeUInt32LE(buf.readUInt32LE(48), 8); // max_readahead
      out.writeUInt16LE(16, 16); // max_background
      out.writeUInt16LE(12, 18); // congestion_threshold
      out.writeUInt32LE(4096, 20); // max_write
      out.writeUInt32LE(1, 24); // time_gran
      reply(unique, 0, out);
      break;
    }
    case OP.LOOKUP: {
      const name = buf.toString('utf8', 40, buf.indexOf(0, 40));
      if (node !== ROOT || name !== FILE_NAME) {
        reply(unique, ENOENT);
        break;
      }
      const out = Buffer.alloc(40);
      out.writeBigUInt64LE(FILE, 0); // nodeid; generation, entry/attr valid 0 (always ask again)
      reply(unique, 0, Buffer.concat([out, attr(FILE)]));
      break;
    }
    case OP.GETATTR:
      reply(unique, 0, Buffer.concat([Buffer.alloc(16), attr(node)]));
      break;
    case OP.OPEN:
    case OP.OPENDIR: {
      const out = Buffer.alloc(16);
      out.writeUInt32LE(opcode === OP.OPEN ? FOPEN_DIRECT_IO : 0, 8); // no page cache: every read asks
      reply(unique, 0, out);
      break;
    }
    case OP.READ:
      break; // never answered: the reader hangs in the kernel
    case OP.RELEASE:
    case OP.RELEASEDIR:
    case OP.FLUSH:
      reply(unique, 0);
      break;
    case OP.FORGET:
    case OP.BATCH_FORGET:
    case OP.INTERRUPT:
      break; // no reply expected (an interrupted read stays unanswered)
    case OP.DESTROY:
      process.exit(0);
      break;
    default:
      reply(unique, ENOSYS);
  }
}
