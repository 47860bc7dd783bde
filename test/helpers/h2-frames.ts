/**
 * HTTP/2 frames written and read by hand (RFC 9113 §4.1), for tests whose client must not be a well-behaved
 * library: floods, resets, a window left at 0. Only what those tests need: frame headers, a few HPACK
 * literals without Huffman coding, and a reader that splits a byte stream into frames.
 */

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly stream: number;
  readonly payload: Buffer;
}

export const FRAME = {
  DATA: 0x0,
  HEADERS: 0x1,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

/** The client connection preface (RFC 9113 §3.4), to be followed by a SETTINGS frame. */
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** One frame: 9-byte header (length, type, flags, stream) and the payload. */
export function frame(
  type: number,
  flags: number,
  stream: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** A 32-bit big-endian number (WINDOW_UPDATE increments, RST_STREAM codes). */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** HPACK "literal without indexing, indexed name" (RFC 7541 §6.2.2), no Huffman; short values only. */
export function literal(index: number, value: string): Buffer {
  const v = Buffer.from(value, 'latin1');
  if (index >= 15 || v.length >= 127) throw new Error('literal too long for this encoder');
  return Buffer.concat([Buffer.from([index, v.length]), v]);
}

/** HPACK "literal without indexing, new name" (RFC 7541 §6.2.2), no Huffman; short names and values only. */
export function literalNew(name: string, value: string): Buffer {
  const n = Buffer.from(name, 'latin1');
  const v = Buffer.from(value, 'latin1');
  if (n.length >= 127 || v.length >= 127) throw new Error('literal too long for this encoder');
  return Buffer.concat([Buffer.from([0x00, n.length]), n, Buffer.from([v.length]), v]);
}

/**
 * A request's header block: `:method` (static table GET 0x82, POST 0x83), `:scheme https` (0x87), `:path`
 * (index 4) and `:authority` (index 1).
 */
export function requestHeaders(method: 'GET' | 'POST', path: string, authority: string): Buffer {
  return Buffer.concat([
    Buffer.from([method === 'GET' ? 0x82 : 0x83, 0x87]),
    literal(4, path),
    literal(1, authority),
  ]);
}

/** Parses the whole frames in `buf`; returns them and the bytes of a partial frame left at the end. */
export function splitFrames(buf: Buffer): { frames: Frame[]; rest: Buffer } {
  const frames: Frame[] = [];
  let rest = buf;
  while (rest.length >= 9) {
    const len = rest.readUIntBE(0, 3);
    if (rest.length < 9 + len) break;
    frames.push({
      type: rest[3] as number,
      flags: rest[4] as number,
      stream: rest.readUInt32BE(5) & 0x7fffffff,
      payload: rest.subarray(9, 9 + len),
    });
    rest = rest.subarray(9 + len);
  }
  return { frames, rest };
}

/** The whole frames in `buf` (a partial frame at the end is ignored). */
export function parseFrames(buf: Buffer): Frame[] {
  return splitFrames(buf).frames;
}

/** A reader for a socket's `data` events: calls `onFrame` for each frame as its last byte arrives. */
export function frameReader(onFrame: (f: Frame) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk) => {
    const { frames, rest } = splitFrames(pending.length === 0 ? chunk : Buffer.concat([pending, chunk]));
    pending = rest;
    for (const f of frames) onFrame(f);
  };
}

/** The first GOAWAY among `frames`: its last stream id and error code. */
export function goawayOf(frames: readonly Frame[]): { lastStream: number; code: number } | undefined {
  const g = frames.find((f) => f.type === FRAME.GOAWAY && f.payload.length >= 8);
  return g
    ? { lastStream: g.payload.readUInt32BE(0) & 0x7fffffff, code: g.payload.readUInt32BE(4) }
    : undefined;
}

const CODE_NAMES: Record<number, string> = {
  0x0: 'NO_ERROR',
  0x1: 'PROTOCOL_ERROR',
  0x2: 'INTERNAL_ERROR',
  0x3: 'FLOW_CONTROL_ERROR',
  0x6: 'FRAME_SIZE_ERROR',
  0x7: 'REFUSED_STREAM',
  0x8: 'CANCEL',
  0x9: 'COMPRESSION_ERROR',
  0xb: 'ENHANCE_YOUR_CALM',
};

/** An error code as its RFC 9113 §7 name and hex value, for log lines. */
export function codeName(code: number | undefined): string {
  return code === undefined ? 'none' : `${CODE_NAMES[code] ?? 'code'} (0x${code.toString(16)})`;
}
