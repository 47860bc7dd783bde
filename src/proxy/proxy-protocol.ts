/**
 * PROXY protocol version 2 (binary) header, as sent by HAProxy's `send-proxy-v2`: the first bytes a TCP
 * upstream receives, telling a service that understands the protocol who really connected (issue 5 point 3).
 *
 * Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt §2.2. Only what a TCP gateway needs is
 * encoded: command PROXY, transport STREAM, family AF_INET or AF_INET6, no TLVs. Pure: no I/O.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** The 12-byte v2 signature (§2.2): `\r\n\r\n\0\r\nQUIT\n`, which no v1 header or HTTP request starts with. */
export const PROXY_V2_SIGNATURE: Buffer = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);

/** Version 2 in the high nibble, command PROXY (0x1) in the low nibble (§2.2, 13th byte). */
const VERSION_2_PROXY = 0x21;
/** Address family in the high nibble, transport STREAM (0x1) in the low one (§2.2, 14th byte). */
const TCP_OVER_IPV4 = 0x11;
const TCP_OVER_IPV6 = 0x21;
/** Bytes of the address block: 2 × 4-byte addresses + 2 ports, or 2 × 16-byte addresses + 2 ports. */
const IPV4_BLOCK = 12;
const IPV6_BLOCK = 36;

/** One end of the proxied connection, as Node reports it (`remoteAddress` / `remotePort`). */
export interface ProxyEndpoint {
  /** An IPv4 or IPv6 literal; an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) counts as IPv4. */
  readonly address: string;
  /** 0..65535. */
  readonly port: number;
}

/**
 * Encodes the v2 header for a TCP connection from `source` (the client) to `destination` (the address the
 * client connected to, i.e. the gateway's listening address).
 *
 * Both addresses are sent as IPv4 (family 0x11, 28 bytes in all) when both are IPv4 or IPv4-mapped IPv6 —
 * what a dual-stack socket reports for an IPv4 peer; otherwise both as IPv6 (family 0x21, 52 bytes), an
 * IPv4 one in its mapped form (§2.2: both addresses of a block share one family). An IPv6 zone index
 * (`fe80::1%eth0`) has no place in the block and is dropped.
 *
 * @throws TypeError when an address is not an IP literal or a port is not an integer in 0..65535: the caller
 *   then closes the connection instead of sending the upstream a header that lies.
 */
export function encodeProxyV2(source: ProxyEndpoint, destination: ProxyEndpoint): Buffer {
  const src = parseAddress(source.address, 'source');
  const dst = parseAddress(destination.address, 'destination');
  checkPort(source.port, 'source');
  checkPort(destination.port, 'destination');
  const v4 = src.length === 4 && dst.length === 4;
  const block = v4 ? IPV4_BLOCK : IPV6_BLOCK;
  const out = Buffer.alloc(16 + block);
  PROXY_V2_SIGNATURE.copy(out, 0);
  out[12] = VERSION_2_PROXY;
  out[13] = v4 ? TCP_OVER_IPV4 : TCP_OVER_IPV6;
  // Length of what follows the 16-byte fixed part, network byte order (§2.2, 15th and 16th bytes).
  out.writeUInt16BE(block, 14);
  const width = v4 ? 4 : 16;
  (v4 ? src : toIpv6(src)).copy(out, 16);
  (v4 ? dst : toIpv6(dst)).copy(out, 16 + width);
  out.writeUInt16BE(source.port, 16 + 2 * width);
  out.writeUInt16BE(destination.port, 18 + 2 * width);
  return out;
}

function checkPort(port: number, which: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new TypeError(`PROXY v2: the ${which} port is not in 0..65535 (${String(port)})`);
  }
}

/** The address as 4 bytes (IPv4, including IPv4-mapped IPv6) or 16 bytes (any other IPv6). */
function parseAddress(text: string, which: string): Buffer {
  if (typeof text !== 'string') throw new TypeError(`PROXY v2: no ${which} address`);
  if (isIPv4(text)) return Buffer.from(text.split('.').map(Number));
  const zone = text.indexOf('%');
  const bare = zone === -1 ? text : text.slice(0, zone);
  if (!isIPv6(bare)) throw new TypeError(`PROXY v2: the ${which} address is not an IP literal (${text})`);
  const bytes = ipv6Bytes(bare);
  const mapped = bytes.subarray(0, 12).equals(V4_MAPPED_PREFIX);
  return mapped ? Buffer.from(bytes.subarray(12)) : bytes;
}

/** `::ffff:0:0/96` (RFC 4291 §2.5.5.2). */
const V4_MAPPED_PREFIX = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

function toIpv6(bytes: Buffer): Buffer {
  return bytes.length === 16 ? bytes : Buffer.concat([V4_MAPPED_PREFIX, bytes]);
}

/**
 * 16 bytes of an IPv6 literal already checked by `net.isIPv6`: hex groups, at most one `::`, optionally a
 * dotted IPv4 tail (`::ffff:192.0.2.1`, `64:ff9b::192.0.2.1`).
 */
function ipv6Bytes(text: string): Buffer {
  const groups: number[] = [];
  const parse = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const [a = 0, b = 0, c = 0, d = 0] = g.split('.').map(Number);
        out.push((a << 8) | b, (c << 8) | d);
      } else {
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const gap = text.indexOf('::');
  if (gap === -1) {
    groups.push(...parse(text));
  } else {
    const head = parse(text.slice(0, gap));
    const tail = parse(text.slice(gap + 2));
    groups.push(...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail);
  }
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}
