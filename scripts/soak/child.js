// A soak child (scripts/soak.js): checks every message the parent sends and reports.
// Message layout: u32 seq, u8 descriptor count, u8 fill byte, u16 0, then filler; each
// descriptor i points at file (seq + i) % 2 of the two the parent named in
// SOAK_FILE_IDS ("dev:ino,dev:ino"). Every 4096 messages it sends back an ack; at the
// parent's end it sends {"received", "bad", "fds"} and ends.
'use strict'
const fs = require('node:fs')
const { Channel } = require('../..')
const { identity } = require('../../__test__/fixtures/identity')

const files = process.env.SOAK_FILE_IDS.split(',')
const channel = Channel.fromParent()
let next = 0
let bad = 0
let fds = 0
const firstBad = []

channel.on('message', (m) => {
  const d = m.data
  const seq = d.readUInt32LE(0)
  const fill = d[5]
  let ok = seq === next && d[4] === m.fds.length && fill === (seq * 7) % 251 && d[d.length - 1] === fill
  for (let i = 0; i < m.fds.length; i++) {
    if (identity(m.fds[i]) !== files[(seq + i) % 2]) ok = false
    fs.closeSync(m.fds[i])
  }
  fds += m.fds.length
  if (!ok) {
    bad++
    if (firstBad.length < 5) firstBad.push({ expected: next, seq, nfds: m.fds.length })
  }
  next++
  if ((next & 4095) === 0) channel.send(`ack ${next}`)
})
channel.on('end', () => {
  channel.send(JSON.stringify({ received: next, bad, fds, firstBad }))
  channel.end()
})
channel.on('error', (e) => {
  process.stderr.write(`soak child ${process.pid}: ${e.code} ${e.message}\n`)
  process.exitCode = 1
})
