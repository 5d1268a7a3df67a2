// docs/rules.md cannot drift from what the planner does: its generated part
// is the golden cases verbatim. `npm run docs:rules` rewrites it.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { expectedFile, goldenCases, loadCase } from '../helpers/golden.js';

const DOC = join(import.meta.dirname, '..', '..', 'docs', 'rules.md');
const MARKER = '<!-- golden cases follow; everything below is generated -->\n';

function generated(): string {
  return goldenCases()
    .map((name) => {
      const c = loadCase(name);
      const config = readConfig(name);
      return `\n## Case \`${name}\`\n\nNetworks: ${c.xmlFiles.map((f) => `\`test/golden/${name}/${f}\``).join(', ')}${config}\n\n\`\`\`nft\n${readFileSync(expectedFile(name), 'utf8')}\`\`\`\n`;
    })
    .join('');
}

function readConfig(name: string): string {
  try {
    const text = readFileSync(join(expectedFile(name), '..', 'config.toml'), 'utf8');
    return `; config:\n\n\`\`\`toml\n${text}\`\`\``;
  } catch {
    return '';
  }
}

describe('docs/rules.md', () => {
  it('shows every golden case exactly as the planner produces it', () => {
    const doc = readFileSync(DOC, 'utf8');
    const at = doc.indexOf(MARKER);
    expect(at, 'the generated-section marker is missing from docs/rules.md').toBeGreaterThan(0);
    const want = doc.slice(0, at + MARKER.length) + generated();
    if (process.env['UPDATE_DOCS'] === '1') writeFileSync(DOC, want);
    expect(doc).toBe(want);
  });
});
