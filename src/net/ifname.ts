// Interface names reach nft as iifname/oifname matches, where `*` is a
// wildcard: a bridge called `v*` would match every interface starting with v.
// So only the characters Linux bridges and uplinks really use are accepted.
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

export function isSafeIfname(name: string): boolean {
  return IFNAME.test(name) && name !== '.' && name !== '..';
}

export const IFNAME_RULE = 'an interface name of 1-15 characters from A-Z a-z 0-9 _ . - (not "." or "..")';
