import { BlockList, isIPv4, isIPv6 } from 'node:net';

/** One CIDR, parsed: `undefined` from `parseCidr` means it is not one (the validator's message says why). */
export interface Cidr {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

/** `10.0.0.0/8`, `::1/128`, or a bare address (a /32 or /128). */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const address = slash === -1 ? text : text.slice(0, slash);
  const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined;
  if (family === undefined) return undefined;
  const max = family === 'ipv4' ? 32 : 128;
  const bits = slash === -1 ? String(max) : text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) return undefined;
  return { address, prefix: Number(bits), family };
}

/**
 * The set of peer addresses allowed to describe a request to decide (the proxies in front). Built once from
 * validated CIDRs; `has` is one BlockList lookup per request.
 */
export class TrustedPeers {
  private readonly list = new BlockList();
  private readonly empty: boolean;

  /** @throws {TypeError} for an entry that is not a CIDR (the config validator reports it first, with its path). */
  constructor(cidrs: readonly string[]) {
    for (const text of cidrs) {
      const cidr = parseCidr(text);
      if (cidr === undefined) throw new TypeError(`trusted proxy: expected a CIDR such as 10.0.0.0/8, got ${JSON.stringify(text)}`);
      this.list.addSubnet(cidr.address, cidr.prefix, cidr.family);
    }
    this.empty = cidrs.length === 0;
  }

  /** Whether `address` (a socket's remoteAddress; IPv4-mapped IPv6 counts as its IPv4 address) is trusted. */
  has(address: string | undefined): boolean {
    if (this.empty || address === undefined) return false;
    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; the CIDRs name them as IPv4.
    if (address.startsWith('::ffff:') && isIPv4(address.slice(7))) return this.list.check(address.slice(7), 'ipv4');
    return isIPv4(address) ? this.list.check(address, 'ipv4') : this.list.check(address, 'ipv6');
  }
}
