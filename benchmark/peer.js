// The child side of a benchmark case: receives and verifies (one-way, fds), or echoes
// (round trip). argv: impl mode size count [nfds expectedIdentity]
// Prints one JSON line {"ok":…,"count":…} when done (one-way), then exits.
'use strict'
const fs = require('node:fs')
const net = require('node:net')
const { check, identity } = require('./common')

const [impl, mode, sizeArg, countArg, nfdsArg, expected] = process.argv.slice(2)
const size = Number(sizeArg)
const count = Number(countArg)
const nfds = Number(nfdsArg || 0)
let seq = 0
let ok = true

function done() {
  process.stdout.write(JSON.stringify({ ok, count: seq, maxRssKiB: process.resourceUsage().maxRSS }) + '\n')
}

/** Verifies one received message (and its descriptors, then closes them). */
function receive(data, fds) {
  ok = ok && check(data, seq, size)
  if (nfds) {
    ok = ok && fds.length === nfds
    for (const fd of fds) ok = ok && identity(fd) === expected
  }
  seq++
}

if (impl === 'channel' || impl === 'channel-seqpacket') {
  const { Channel, closeFds } = require('..')
  const ch = Channel.fromParent()
  ch.on('message', (m) => {
    if (mode === 'echo') {
      ch.send(m.data)
      return
    }
    receive(m.data, m.fds)
    if (m.fds.length) closeFds(m.fds)
    if (seq === count) {
      done()
      ch.close()
    }
  })
} else if (impl === 'net') {
  const socket = new net.Socket({ fd: 3, readable: true, writable: true })
  let pending = []
  let pendingBytes = 0
  socket.on('data', (chunk) => {
    pending.push(chunk)
    pendingBytes += chunk.length
    let buf = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes)
    let off = 0
    while (buf.length - off >= 4) {
      const len = buf.readUInt32LE(off)
      if (buf.length - off - 4 < len) break
      const data = buf.subarray(off + 4, off + 4 + len)
      off += 4 + len
      if (mode === 'echo') {
        const out = Buffer.allocUnsafe(4 + len)
        out.writeUInt32LE(len, 0)
        data.copy(out, 4)
        socket.write(out)
        continue
      }
      receive(data, [])
      if (seq === count) {
        done()
        socket.destroy()
        return
      }
    }
    buf = buf.subarray(off)
    pending = buf.length ? [buf] : []
    pendingBytes = buf.length
  })
} else if (impl === 'fork-json' || impl === 'fork-advanced') {
  process.on('message', (m, handle) => {
    if (mode === 'echo') {
      process.send(m)
      return
    }
    if (impl === 'fork-json') {
      ok = ok && m.s === seq && m.d.length === size
      seq++
    } else {
      receive(Buffer.from(m.d.buffer, m.d.byteOffset, m.d.byteLength), [])
    }
    if (handle) {
      ok = ok && identity(handle._handle.fd) === expected
      handle.close()
    } else if (nfds) {
      ok = false
    }
    if (seq === count) {
      done()
      process.disconnect()
    }
  })
} else {
  throw new Error(`unknown impl ${impl}`)
}
// Set up: tell the driver to start the clock.
fs.writeSync(1, 'ready\n')
