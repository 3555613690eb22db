import { writeFileSync } from 'node:fs';

/**
 * Preloaded by bench/manifests-bench.ts (`node --import …/rss-at-exit.js bin/svcplane.js …`): writes
 * this process's own peak RSS in KiB (getrusage RUSAGE_SELF) to $SVCP_BENCH_RSS_FILE at exit.
 * /usr/bin/time's figure is the larger of the process and its waited-for children (iptables-restore).
 */
const file = process.env.SVCP_BENCH_RSS_FILE;
if (file) process.on('exit', () => writeFileSync(file, String(process.resourceUsage().maxRSS)));
