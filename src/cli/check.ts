// `kvmnftd check`: validate a config file and nothing else. Silent when it is
// fine; otherwise one plain line per problem on stderr (no log framing: a
// validator's output is read by people and by Ansible's `validate=`).
import { checkConfigFile } from '../config/config.js';

const EXIT_OK = 0;
const EXIT_INVALID = 2;

export function runCheck(path: string | undefined): number {
  const problems = checkConfigFile(path);
  for (const p of problems) process.stderr.write(`${oneLine(p.message)}\n`);
  return problems.length === 0 ? EXIT_OK : EXIT_INVALID;
}

/** A message on one line, whatever a value in it holds. */
function oneLine(text: string): string {
  return text.replace(/[\r\n\u2028\u2029]+/g, ' ');
}
