// Shared by driver.js and peer.js: what every message contains and how it is checked,
// identically for every implementation (crates/core/examples/raw_bench.rs generates the
// same bytes), and the length-prefix framer the net.Socket baseline uses on both ends.
'use strict'

// ---------------------------------------------------------------------------------------
// Message content.
//
// Message `seq` of `size` bytes is: seq as a u32 little-endian, then PATTERN starting at
// offset(seq), truncated to `size` bytes. PATTERN is a fixed pseudo-random byte string
// (xorshift32), so a byte out of place, a chunk from another message (a different offset)
// or a stale buffer fails the comparison, which covers every byte of every message.
// Filling and checking cost a memcpy / memcmp (a plain loop below 128 bytes, where a call
// into C++ costs more than the loop).

/** Distinct content offsets: 65,536, chosen by a multiplicative hash of seq. */
const OFFSETS = 1 << 16
const SEED = 0x9e3779b9
const SMALL = 128

/** Where message `seq`'s content starts in the pattern (raw_bench.rs: `offset`). */
function offset(seq) {
  return Math.imul(seq, 0x9e3779b1) >>> 16
}

/** The pattern's first `n` bytes (raw_bench.rs: `pattern`). */
function pattern(n) {
  const p = Buffer.allocUnsafe(n)
  let x = SEED
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    p[i] = x & 0xff
  }
  return p
}

/**
 * The fill and check functions for messages of `size` bytes:
 *   fill(buf, seq, at = 0)   writes message seq into buf[at, at + size)
 *   check(data, seq)         true when data is exactly message seq
 *   text(seq)                the string form (for fork 'json'): `size` base64 characters
 *                            from a seq-dependent offset of the pattern's base64
 */
function messages(size) {
  const P = pattern(OFFSETS + size + 8)
  const body = Math.max(0, size - 4)
  let TEXT = null

  function fill(buf, seq, at = 0) {
    const o = offset(seq)
    if (size >= 4) buf.writeUInt32LE(seq >>> 0, at)
    else for (let i = 0; i < size; i++) buf[at + i] = (seq >>> (8 * i)) & 0xff
    if (body <= SMALL) {
      const d = at + 4 - o
      for (let i = o, end = o + body; i < end; i++) buf[d + i] = P[i]
    } else {
      P.copy(buf, at + 4, o, o + body)
    }
    return buf
  }

  function check(data, seq) {
    if (data.length !== size) return false
    if (size < 4) {
      for (let i = 0; i < size; i++) if (data[i] !== ((seq >>> (8 * i)) & 0xff)) return false
      return true
    }
    if ((data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24)) >>> 0 !== seq >>> 0) return false
    const o = offset(seq)
    if (body <= SMALL) {
      const d = 4 - o
      for (let i = o, end = o + body; i < end; i++) if (data[d + i] !== P[i]) return false
      return true
    }
    return P.compare(data, 4, size, o, o + body) === 0
  }

  function text(seq) {
    if (TEXT === null) TEXT = P.toString('base64') // 4/3 of the pattern: long enough
    const o = offset(seq)
    return TEXT.slice(o, o + size)
  }

  return { size, fill, check, text }
}

const bySize = new Map()
function forSize(size) {
  let m = bySize.get(size)
  if (!m) bySize.set(size, (m = messages(size)))
  return m
}

/** Fills `buf` with message `seq` of `buf.length` bytes (for callers without `messages`). */
function fill(buf, seq) {
  return forSize(buf.length).fill(buf, seq)
}

/** True when `data` is exactly message `seq` of `size` bytes. */
function check(data, seq, size) {
  return forSize(size).check(data, seq)
}

// ---------------------------------------------------------------------------------------
// The net.Socket baseline's framing: a u32 little-endian length, then the payload.

/**
 * A length-prefix framer as a competent user writes one: it keeps the unparsed chunks
 * and their byte count, never re-concatenates them while a frame is incomplete, hands
 * out a zero-copy `subarray` when a frame lies within one chunk, and otherwise copies
 * the frame out exactly once, when all its bytes are there. (A frame delivered as a
 * subarray keeps its whole chunk alive as long as it is referenced: that is how
 * net.Socket data behaves.)
 *
 *   const framer = new Framer((frame) => use(frame))
 *   socket.on('data', (chunk) => framer.push(chunk))
 *
 * `onFrame` may return `false` to stop parsing (the rest of the chunk is dropped):
 * the benchmark stops once it has what it expects.
 */
class Framer {
  constructor(onFrame) {
    this.onFrame = onFrame
    this.chunks = [] // pending chunks; the first one starts at a frame boundary
    this.bytes = 0 // their total length
    this.need = -1 // payload length of the pending frame once its header is known
  }

  push(chunk) {
    if (this.bytes === 0) {
      this.parse(chunk)
      return
    }
    this.chunks.push(chunk)
    this.bytes += chunk.length
    if (this.need < 0) {
      if (this.bytes < 4) return
      this.need = this.header()
    }
    if (this.bytes < 4 + this.need) return
    // The frame is complete: assemble it once, then parse what follows in the last chunk.
    const len = this.need
    const chunks = this.chunks
    this.chunks = []
    this.bytes = 0
    this.need = -1
    // Skip the 4 header bytes (possibly split across chunks).
    let i = 0
    let at = 4
    while (at >= chunks[i].length) at -= chunks[i++].length
    let frame
    let rest
    if (chunks[i].length - at >= len) {
      // The payload lies within one chunk (only the header was split): no copy.
      frame = chunks[i].subarray(at, at + len)
      rest = chunks[i].subarray(at + len)
    } else {
      frame = Buffer.allocUnsafe(len)
      let have = 0
      for (;;) {
        const c = chunks[i]
        const take = Math.min(c.length - at, len - have)
        c.copy(frame, have, at, at + take)
        have += take
        if (have === len) {
          rest = c.subarray(at + take)
          break
        }
        i++
        at = 0
      }
    }
    if (this.onFrame(frame) === false) return
    if (rest.length) this.parse(rest)
  }

  /** Parses a chunk that starts at a frame boundary, with nothing pending. */
  parse(chunk) {
    let off = 0
    const n = chunk.length
    while (n - off >= 4) {
      const len = chunk[off] | (chunk[off + 1] << 8) | (chunk[off + 2] << 16) | (chunk[off + 3] * 0x1000000)
      if (n - off - 4 < len) break
      const frame = chunk.subarray(off + 4, off + 4 + len)
      off += 4 + len
      if (this.onFrame(frame) === false) return
    }
    if (off < n) {
      const rest = off === 0 ? chunk : chunk.subarray(off)
      this.chunks.push(rest)
      this.bytes = rest.length
      if (rest.length >= 4) this.need = this.header()
    }
  }

  /** The pending frame's payload length, from the first 4 pending bytes. */
  header() {
    const c = this.chunks[0]
    if (c.length >= 4) return c.readUInt32LE(0)
    const h = Buffer.concat(this.chunks, 4)
    return h.readUInt32LE(0)
  }
}

/** The 4-byte length prefix for a payload of `len` bytes. */
function lengthPrefix(len) {
  const h = Buffer.allocUnsafe(4)
  h.writeUInt32LE(len, 0)
  return h
}

/** `dev:ino` of a descriptor. */
function identity(fd) {
  const s = require('node:fs').fstatSync(fd)
  return `${s.dev}:${s.ino}`
}

/**
 * A check that a descriptor is the file `expected` (`dev:ino`) names, comparing numbers
 * as a C program would (no string per descriptor).
 */
function sameFile(expected) {
  const [dev, ino] = expected.split(':').map(Number)
  const fs = require('node:fs')
  return (fd) => {
    const s = fs.fstatSync(fd)
    return s.ino === ino && s.dev === dev
  }
}

module.exports = { messages, fill, check, offset, pattern, Framer, lengthPrefix, identity, sameFile }
