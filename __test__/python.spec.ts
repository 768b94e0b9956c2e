/**
 * A python3 peer speaks PROTOCOL.md with Node over a stream socketpair, passing
 * descriptors both ways: whole frames, frames whose descriptors ride on a 3-byte first
 * send, and coalesced frames whose descriptors share one send.
 */
import test from 'ava'
import fs from 'node:fs'

import { recvmsg, sendmsg, socketpair } from '..'
import { leakChecked, closeAll, fixture, identity, readThrough, run, tempFile } from './helpers'

const leakFree = leakChecked(test)

/** PROTOCOL.md's header: length u32 LE, nfds u16 LE, version 1, flags 0. */
function frame(payload: Buffer | string, nfds: number): Buffer {
  const body = Buffer.from(payload)
  const header = Buffer.alloc(8)
  header.writeUInt32LE(body.length, 0)
  header.writeUInt16LE(nfds, 4)
  header[6] = 1
  header[7] = 0
  return Buffer.concat([header, body])
}

function sendFrame(fd: number, payload: Buffer | string, fds: number[] = []): void {
  const data = frame(payload, fds.length)
  let sent = sendmsg(fd, data, fds)
  while (sent < data.length) sent += sendmsg(fd, data.subarray(sent))
}

/** A reader per PROTOCOL.md: a byte buffer and a FIFO of descriptors. */
class FrameReader {
  private buf = Buffer.alloc(0)
  private fds: number[] = []
  constructor(
    private readonly fd: number,
    private readonly readSizes: number[] = [65536],
  ) {}
  private reads = 0

  next(): { data: Buffer; fds: number[] } | null {
    for (;;) {
      if (this.buf.length >= 8) {
        const length = this.buf.readUInt32LE(0)
        const nfds = this.buf.readUInt16LE(4)
        if (this.buf[6] !== 1 || this.buf[7] !== 0) throw new Error('bad header')
        if (this.fds.length < nfds) throw new Error(`header wants ${nfds} fds, ${this.fds.length} arrived`)
        if (this.buf.length >= 8 + length) {
          const data = this.buf.subarray(8, 8 + length)
          this.buf = this.buf.subarray(8 + length)
          return { data, fds: this.fds.splice(0, nfds) }
        }
      }
      const maxBytes = this.readSizes[this.reads++ % this.readSizes.length]!
      const m = recvmsg(this.fd, { maxBytes })
      if (m === null) {
        if (this.buf.length || this.fds.length) throw new Error('EOF inside a frame')
        return null
      }
      this.buf = Buffer.concat([this.buf, m.data])
      this.fds.push(...m.fds)
    }
  }
}

function startPeer() {
  const [mine, theirs] = socketpair()
  const proc = run('python3', [fixture('peer.py')], { stdio: ['ignore', 'inherit', 'pipe', theirs] })
  fs.closeSync(theirs)
  return { mine, proc }
}

leakFree('Node passes files to python, which reads them through the descriptors', async (t) => {
  const { mine, proc } = startPeer()
  const files = [tempFile('first file'), tempFile('second file'), tempFile('third file')]
  sendFrame(
    mine,
    JSON.stringify({ op: 'read' }),
    files.map((f) => f.fd),
  )
  const reader = new FrameReader(mine)
  const reply = reader.next()!
  t.deepEqual(JSON.parse(reply.data.toString()), { contents: ['first file', 'second file', 'third file'] })
  t.is(reply.fds.length, 0)
  fs.closeSync(mine)
  t.is(await proc.exited, 0, proc.stderr())
  closeAll(files.map((f) => f.fd))
})

for (const style of ['whole', 'split', 'coalesced'] as const) {
  for (const readSizes of [[65536], [1, 2, 3, 5, 7]]) {
    leakFree(`python passes descriptors to Node: ${style} sends, reads of ${readSizes.join('/')} bytes`, async (t) => {
      const { mine, proc } = startPeer()
      const reader = new FrameReader(mine, readSizes)
      sendFrame(mine, JSON.stringify({ op: 'give', n: 5, style }))
      const m = reader.next()!
      t.deepEqual(JSON.parse(m.data.toString()), { gave: 5 })
      t.deepEqual(
        m.fds.map(readThrough),
        [0, 1, 2, 3, 4].map((i) => `python file ${i}`),
      )
      const received = [...m.fds]
      if (style === 'coalesced') {
        const second = reader.next()!
        t.deepEqual(JSON.parse(second.data.toString()), { second: true })
        t.deepEqual(second.fds.map(readThrough), ['python file b0', 'python file b1'])
        received.push(...second.fds)
      }
      fs.closeSync(mine)
      t.is(await proc.exited, 0, proc.stderr())
      closeAll(received)
    })
  }
}

leakFree('descriptors make a round trip through python and come back to the same files', async (t) => {
  const { mine, proc } = startPeer()
  const files = Array.from({ length: 64 }, (_, i) => tempFile(`round trip ${i}`))
  sendFrame(
    mine,
    JSON.stringify({ op: 'echo', note: 'x'.repeat(70_000) }),
    files.map((f) => f.fd),
  )
  const back = new FrameReader(mine).next()!
  t.is(JSON.parse(back.data.toString()).note.length, 70_000)
  t.deepEqual(
    back.fds.map(identity),
    files.map((f) => identity(f.fd)),
  )
  fs.closeSync(mine)
  t.is(await proc.exited, 0, proc.stderr())
  closeAll([...back.fds, ...files.map((f) => f.fd)])
})
