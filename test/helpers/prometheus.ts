// Reading `kvmnftd metrics` output in tests: the samples by series, and a real
// `promtool check metrics` (Debian's prometheus package, .ci/install-deps).
import { execa } from 'execa';

/** Sample values by series as written (`name` or `name{label="v",...}`); comments skipped. */
export function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

/** One series' value, or undefined. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const l = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',');
  return samples(text).get(l === '' ? name : `${name}{${l}}`);
}

/** `promtool check metrics` on the text (stdin): its exit code and what it said; fails if promtool is missing. */
export async function promtoolCheck(text: string): Promise<{ exitCode: number; output: string }> {
  const r = await execa('promtool', ['check', 'metrics'], { input: text, reject: false });
  if (r.failed && r.exitCode === undefined)
    throw new Error(`promtool must be installed (Debian package prometheus, .ci/install-deps): ${r.message}`);
  return { exitCode: r.exitCode ?? -1, output: `${r.stdout}${r.stderr}` };
}
