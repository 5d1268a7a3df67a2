// One reading of libvirt's XML for every parser in src/libvirt: attributes
// grouped under `$` without a prefix, every value kept as the string libvirt
// wrote (no number or entity conversion: the callers validate and decode).
import { XMLParser } from 'fast-xml-parser';

/** A parser in that layout; `isArray` names the elements that are always lists. */
export function libvirtXmlParser(isArray?: (name: string) => boolean): XMLParser {
  return new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '',
    attributesGroupName: '$',
    parseAttributeValue: false,
    parseTagValue: false,
    processEntities: false,
    trimValues: true,
    ...(isArray ? { isArray } : {}),
  });
}
