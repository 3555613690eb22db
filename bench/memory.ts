/** Peak RSS / heap of this process, sampled every 20 ms (plus the kernel's own maxRSS at the end). */
export class MemoryPeak {
  rss = 0;
  heap = 0;
  private readonly timer: NodeJS.Timeout;
  constructor() {
    this.sample();
    this.timer = setInterval(() => this.sample(), 20);
  }
  sample(): void {
    const m = process.memoryUsage();
    this.rss = Math.max(this.rss, m.rss);
    this.heap = Math.max(this.heap, m.heapUsed);
  }
  /** Peak so far (the kernel's maxRSS included). */
  peak(): { rssMB: number; heapMB: number } {
    this.sample();
    return { rssMB: mb(Math.max(this.rss, process.resourceUsage().maxRSS * 1024)), heapMB: mb(this.heap) };
  }
  stop(): { rssMB: number; heapMB: number } {
    clearInterval(this.timer);
    return this.peak();
  }
}

export const mb = (b: number): number => Math.round(b / 1048576);
