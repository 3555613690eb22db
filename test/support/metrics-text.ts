/**
 * Reading a Prometheus text scrape (/metrics, or a registry's `metrics()`), one way for every test.
 */

/** The value of one series, named as /metrics prints it (`name{labels}`), or undefined when absent. */
export function seriesValue(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/**
 * The sum of a metric's samples over all its label sets (or those whose label set contains
 * `labels`), or undefined when it has none.
 */
export function metricSum(text: string, name: string, labels = ''): number | undefined {
  let sum: number | undefined;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    const m = /^(\{[^}]*\})? (\S+)$/.exec(rest);
    if (!m || (labels !== '' && !(m[1] ?? '').includes(labels))) continue;
    sum = (sum ?? 0) + Number(m[2]);
  }
  return sum;
}
