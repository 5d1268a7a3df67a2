// Statistics shared by the benchmarks: nearest-rank percentiles.

export interface Stats {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;

/** The nearest-rank percentile `p` of `xs` (unrounded; NaN when empty). */
export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Nearest-rank percentiles, rounded to 0.1. */
export function stats(xs: readonly number[]): Stats {
  const n = xs.length;
  if (n === 0) return { n: 0, p50: NaN, p95: NaN, p99: NaN, max: NaN, mean: NaN };
  return {
    n,
    p50: round(percentile(xs, 50)),
    p95: round(percentile(xs, 95)),
    p99: round(percentile(xs, 99)),
    max: round(Math.max(...xs)),
    mean: round(xs.reduce((a, b) => a + b, 0) / n),
  };
}

export const median = (xs: readonly number[]): number => stats(xs).p50;
