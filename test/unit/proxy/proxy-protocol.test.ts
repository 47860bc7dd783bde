import { describe, expect, it } from 'vitest';
import { encodeProxyV2, PROXY_V2_SIGNATURE } from '../../../src/proxy/proxy-protocol.js';

const hex = (b: Buffer): string => b.toString('hex');
const SIG = '0d0a0d0a000d0a515549540a';

describe('encodeProxyV2: IPv4', () => {
  it('matches the bytes HAProxy itself sends (send-proxy-v2, 172.19.0.1:42578 → 172.19.0.3:80)', () => {
    // HAProxy's header as captured by netcat (seriousben/experiment-proxy-protocol README):
    // 0d0a0d0a000d0a515549540a 21 11 000c ac130001 ac130003 a652 0050
    const out = encodeProxyV2({ address: '172.19.0.1', port: 42578 }, { address: '172.19.0.3', port: 80 });
    expect(hex(out)).toBe(`${SIG}2111000cac130001ac130003a6520050`);
    expect(out.length).toBe(28);
  });

  it('writes signature, version/command, family/transport, length, addresses and ports in that order', () => {
    const out = encodeProxyV2({ address: '127.0.0.1', port: 1 }, { address: '10.0.0.2', port: 65535 });
    expect(out.subarray(0, 12).equals(PROXY_V2_SIGNATURE)).toBe(true);
    expect(out[12]).toBe(0x21); // version 2, PROXY
    expect(out[13]).toBe(0x11); // AF_INET, STREAM
    expect(out.readUInt16BE(14)).toBe(12);
    expect(hex(out.subarray(16))).toBe('7f0000010a0000020001ffff');
  });

  it.each([
    ['both IPv4-mapped', '::ffff:192.0.2.1', '::ffff:198.51.100.7'],
    ['mapped source, plain IPv4 destination', '::ffff:192.0.2.1', '198.51.100.7'],
    ['upper-case mapped prefix', '::FFFF:192.0.2.1', '::ffff:c633:6407'],
  ])('sends IPv4-mapped IPv6 addresses as IPv4 (%s)', (_name, src, dst) => {
    const out = encodeProxyV2({ address: src, port: 443 }, { address: dst, port: 8786 });
    expect(hex(out)).toBe(`${SIG}2111000cc0000201c633640701bb2252`);
  });
});

describe('encodeProxyV2: IPv6', () => {
  it('encodes two IPv6 addresses in a 36-byte block', () => {
    const out = encodeProxyV2({ address: '2001:db8::1', port: 50000 }, { address: '::1', port: 8786 });
    expect(out.length).toBe(52);
    expect(hex(out)).toBe(
      `${SIG}21210024` +
        '20010db8000000000000000000000001' +
        '00000000000000000000000000000001' +
        'c350' +
        '2252',
    );
  });

  it('expands every group of a full address and keeps leading zeros', () => {
    const out = encodeProxyV2(
      { address: 'fe80:1:22:333:4444:5:6:7', port: 1 },
      { address: '2001:db8:0:0:1::', port: 2 },
    );
    expect(hex(out.subarray(16, 48))).toBe(
      'fe800001002203334444000500060007' + '20010db8000000000001000000000000',
    );
  });

  it('maps the IPv4 side into ::ffff:0:0/96 when the other side is real IPv6 (one family per block)', () => {
    const out = encodeProxyV2({ address: '192.0.2.1', port: 1 }, { address: '2001:db8::2', port: 2 });
    expect(out[13]).toBe(0x21);
    expect(hex(out.subarray(16, 32))).toBe('00000000000000000000ffffc0000201');
  });

  it('drops an IPv6 zone index', () => {
    const a = encodeProxyV2({ address: 'fe80::1%eth0', port: 1 }, { address: 'fe80::2', port: 2 });
    const b = encodeProxyV2({ address: 'fe80::1', port: 1 }, { address: 'fe80::2', port: 2 });
    expect(a.equals(b)).toBe(true);
  });

  it('reads a dotted IPv4 tail that is not the mapped prefix as IPv6 (NAT64 64:ff9b::/96)', () => {
    const out = encodeProxyV2({ address: '64:ff9b::192.0.2.1', port: 1 }, { address: '::1', port: 2 });
    expect(out[13]).toBe(0x21);
    expect(hex(out.subarray(16, 32))).toBe('0064ff9b0000000000000000c0000201');
  });
});

describe('encodeProxyV2: refuses what it cannot say truthfully', () => {
  it.each([
    ['a host name', { address: 'localhost', port: 1 }, { address: '127.0.0.1', port: 2 }],
    ['an empty address', { address: '', port: 1 }, { address: '127.0.0.1', port: 2 }],
    [
      'a missing address',
      { address: undefined as unknown as string, port: 1 },
      { address: '127.0.0.1', port: 2 },
    ],
    ['a port above 65535', { address: '127.0.0.1', port: 65536 }, { address: '127.0.0.1', port: 2 }],
    ['a negative port', { address: '127.0.0.1', port: 1 }, { address: '127.0.0.1', port: -1 }],
    ['a fractional port', { address: '127.0.0.1', port: 1.5 }, { address: '127.0.0.1', port: 2 }],
    [
      'an IPv4 address with a bad octet',
      { address: '256.0.0.1', port: 1 },
      { address: '127.0.0.1', port: 2 },
    ],
  ])('throws a TypeError for %s', (_name, src, dst) => {
    expect(() => encodeProxyV2(src, dst)).toThrow(TypeError);
  });
});
