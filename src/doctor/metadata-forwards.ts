// Port forwards in domains' <metadata> that kvmnftd leaves out
// (libvirt/metadata-forwards.ts decides which and why): one finding per
// ignored entry, naming it as status and the notes do. Pure.
import { metadataForwardsOn } from '../config/port-forward.js';
import { ignoredName, METADATA_NAMESPACE } from '../libvirt/metadata-forwards.js';
import type { DoctorFacts, Finding } from './types.js';

export function checkMetadataForwards(facts: DoctorFacts): Finding[] {
  const on = metadataForwardsOn(facts.config);
  const allowed = facts.config.metadataForwards.hostPorts.map((r) =>
    r.start === r.end ? String(r.start) : `"${r.start}-${r.end}"`,
  );
  return (facts.metadataIgnored ?? []).map((i) => {
    const name = ignoredName(i);
    const uri = `virsh metadata ${i.domain} ${METADATA_NAMESPACE}`;
    return {
      id: 'metadata-forward-ignored',
      // Off on purpose is the admin's choice; anything else is a forward someone asked for that does not work.
      severity: on ? 'warning' : 'info',
      title: `${name}: ignored: ${i.reason}`,
      evidence: [
        `[metadata_forwards] host_ports = [${allowed.join(', ')}]`,
        `the domain's forwards: ${uri}`,
      ],
      fix: on
        ? `Correct the entry (${uri} --key kvmnftd --live --config --set '<forwards>...</forwards>'), or ` +
          "change what it clashes with; see docs/configuration.md, \"Port forwards in a domain's metadata\"."
        : 'To allow them, list the host ports in [metadata_forwards] host_ports; otherwise remove the metadata: ' +
          `${uri} --remove --live --config`,
    } satisfies Finding;
  });
}
