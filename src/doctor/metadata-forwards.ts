// Port forwards in domains' <metadata> that kvmnftd leaves out
// (libvirt/metadata-forwards.ts decides which and why): one finding per
// ignored entry, named as status and the notes name forwards. Pure. Nothing
// while metadata forwards are off: kvmnftd does not read domains' metadata then.
import { portRangeText } from '../config/kinds.js';
import { ignoredName, METADATA_NAMESPACE } from '../libvirt/metadata-forwards.js';
import type { DoctorFacts, Finding } from './types.js';

export function checkMetadataForwards(facts: DoctorFacts): Finding[] {
  const allowed = facts.config.metadataForwards.hostPorts.map(portRangeText).join(', ');
  return (facts.metadataIgnored ?? []).map((i) => {
    const show = `virsh metadata ${i.domain} ${METADATA_NAMESPACE}`;
    return {
      id: 'metadata-forward-ignored',
      severity: 'warning',
      title: `${ignoredName(i)}: ignored: ${i.reason}`,
      evidence: [`[metadata_forwards] host_ports = ${allowed}`, `the domain's forwards: ${show}`],
      fix:
        `Correct the entry and set the whole list again (${show} --key kvmnftd --live --config ` +
        "--set '<forwards>...</forwards>'), or change what it clashes with; see docs/configuration.md, " +
        `"Port forwards in a domain's metadata". To drop them: ${show} --remove --live --config`,
    };
  });
}
