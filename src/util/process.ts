import { writeFile } from 'node:fs/promises';
import { log } from './log.js';

/**
 * kube-proxy's --oom-score-adj (oomScoreAdj): written to /proc/self/oom_score_adj so the kernel's OOM
 * killer spares the dataplane (-999 by default). Lowering it needs CAP_SYS_RESOURCE; as kube-proxy
 * does, a failure is logged at -v=2 and start-up goes on.
 */
export async function setOomScoreAdj(value: number, path = '/proc/self/oom_score_adj'): Promise<boolean> {
  try {
    await writeFile(path, `${value}\n`);
    return true;
  } catch (err) {
    log.verbose('cannot apply oom_score_adj', { value, reason: (err as Error).message });
    return false;
  }
}
