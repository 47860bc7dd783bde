/** The open verified connections a reload's CRL can close (listener/connection.ts createVerifiedConnections). */
import { EventEmitter } from 'node:events';
import type { TLSSocket } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { createVerifiedConnections, type ConnectionState } from '../../../src/listener/connection.js';
import type { PeerIdentity } from '../../../src/identity/peer.js';

/** A socket stand-in: `destroy()` records the call and emits 'close', as a real socket does. */
function fakeSocket(): TLSSocket & { destroyed: boolean } {
  const s = new EventEmitter() as EventEmitter & { destroyed: boolean; destroy(): void };
  s.destroyed = false;
  s.destroy = () => {
    s.destroyed = true;
    s.emit('close');
  };
  return s as unknown as TLSSocket & { destroyed: boolean };
}

const state = (serialNumber: string | undefined): ConnectionState => ({
  identity:
    serialNumber === undefined
      ? undefined
      : ({ subject: `CN=${serialNumber}`, serialNumber } as unknown as PeerIdentity),
  xfcc: undefined,
  servername: undefined,
  listenerAllowed: true,
  clientAddress: '127.0.0.1',
  clientPort: 50_000,
});

describe('createVerifiedConnections', () => {
  it('closes the connections whose serial a CRL lists, however the serial is padded; leaves the others', () => {
    const warned: Record<string, unknown>[] = [];
    const v = createVerifiedConnections(
      { warn: (o: Record<string, unknown>) => warned.push(o) } as never,
      'main',
    );
    const revoked = fakeSocket();
    const padded = fakeSocket();
    const other = fakeSocket();
    v.add(revoked, state('AB12'));
    v.add(padded, state('00CD34'));
    v.add(other, state('AB13'));
    // CRL serials as certs/pki.ts normalizes them: uppercase, no leading zero byte.
    expect(v.closeRevoked(new Set(['AB12', 'CD34']))).toBe(2);
    expect([revoked.destroyed, padded.destroyed, other.destroyed]).toEqual([true, true, false]);
    expect(warned.map((w) => [w.listener, w.clientSerial, w.clientAddress, w.clientPort])).toEqual([
      ['main', 'AB12', '127.0.0.1', 50_000],
      ['main', '00CD34', '127.0.0.1', 50_000],
    ]);
    // Closed ones are gone: a second pass closes nothing.
    expect(v.closeRevoked(new Set(['AB12', 'CD34']))).toBe(0);
  });

  it('does not keep connections without a certificate, nor ones already closed', () => {
    const v = createVerifiedConnections({ warn: () => undefined } as never, 'main');
    const anonymous = fakeSocket();
    const gone = fakeSocket();
    v.add(anonymous, state(undefined));
    v.add(gone, state('AB12'));
    gone.emit('close');
    expect(v.closeRevoked(new Set(['AB12']))).toBe(0);
    expect(anonymous.destroyed).toBe(false);
    expect(gone.destroyed).toBe(false);
  });
});
