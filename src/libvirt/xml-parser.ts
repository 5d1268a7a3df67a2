// One reading of libvirt's XML for every parser in src/libvirt: attributes
// grouped under `$` without a prefix, every value kept as the string libvirt
// wrote (no number or entity conversion: the callers validate and decode).
//
// fast-xml-parser is loaded through its CommonJS entry, one bundled file: its
// ES module entry is some thirty modules (parser, validator, builder and their
// helpers). Imported alone into a bare Node, +4.2 MiB of RSS against +1.0 MiB
// for the bundle; in the daemon the difference is within run-to-run noise
// (docs/performance.md, 2026-12-03). Same package, same version.
import { createRequire } from 'node:module';
import type * as FastXmlParser from 'fast-xml-parser';

const fastXmlParser = createRequire(import.meta.url)('fast-xml-parser') as typeof FastXmlParser;

/** fast-xml-parser's validator: well-formedness with the line of the first error. */
export const XMLValidator: typeof FastXmlParser.XMLValidator = fastXmlParser.XMLValidator;

/** A parser in that layout; `isArray` names the elements that are always lists. */
export function libvirtXmlParser(isArray?: (name: string) => boolean): FastXmlParser.XMLParser {
  return new fastXmlParser.XMLParser({
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
