// Shared by driver.js and peer.js: how a message is filled and checked, identically for
// every implementation (and as crates/core/examples/raw_bench.rs does).
'use strict'

/** Fills `buf` for message `seq`: the sequence number, and seq-derived content bytes. */
function fill(buf, seq) {
  const n = buf.length
  if (n >= 4) buf.writeUInt32LE(seq >>> 0, 0)
  if (n > 4) {
    buf[n - 1] = seq & 0xff
    buf[n >> 1] = seq & 0xff
  }
  return buf
}

/** True when `data` is message `seq` of `size` bytes. */
function check(data, seq, size) {
  if (data.length !== size) return false
  if (size >= 4 && (data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24)) >>> 0 !== seq >>> 0) return false
  return size <= 4 || (data[size - 1] === (seq & 0xff) && data[size >> 1] === (seq & 0xff))
}

/** `dev:ino` of a descriptor. */
function identity(fd) {
  const s = require('node:fs').fstatSync(fd)
  return `${s.dev}:${s.ino}`
}

module.exports = { fill, check, identity }
