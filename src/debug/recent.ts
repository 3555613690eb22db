import { parseIP } from '../model/ip.js';

/**
 * `/proc/net/xt_recent/<list>` (the `-m recent` lists behind ClientIP session affinity): one line
 * per source, `src=10.244.0.5 ttl: 64 last_seen: 4296892 oldest_pkt: 1 4296892`. Pure.
 */
export function parseRecentList(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^src=(\S+)/.exec(line.trim());
    const ip = m ? parseIP(m[1] as string)?.ip : undefined;
    if (ip !== undefined) out.add(ip);
  }
  return out;
}

/** A list name that is safe to use as a file name under /proc/net/xt_recent. */
export function isRecentListName(name: string): boolean {
  return /^[A-Za-z0-9_.-]{1,200}$/.test(name) && name !== '.' && name !== '..';
}
