// Plain-text tables for the benchmarks' console output.

export const pad = (s: string | number, w: number, left = false): string =>
  left ? String(s).padEnd(w) : String(s).padStart(w);

/** Columns padded to their widest cell; the first column left-aligned, the others right-aligned. */
export function table(headers: string[], rows: Array<Array<string | number>>): string {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells: Array<string | number>) => cells.map((c, i) => pad(c, w[i]!, i === 0)).join('  ');
  return [line(headers), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(line)].join('\n');
}
