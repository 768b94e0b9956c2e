/**
 * Where received bytes live: payloads arrive in Node buffers, small ones packed into
 * slabs of at most 8 KiB (a kept message pins its slab, never a whole batch), larger ones
 * in a buffer of their own of exactly their size — whatever the sender's write sizes.
 */
import test from 'ava'
import fs from 'node:fs'
import { once } from 'node:events'

import { Channel, socketpair, type Message } from '..'
import { closing, fixture, leakChecked, run } from './helpers'

const leakFree = leakChecked(test)

const SIZES = [0, 1, 63, 64, 4095, 4096, 4097, 8191, 8192, 9000, 65535, 65536, 200000, 1048579]

/** The payload data-path-peer.py sends as frame `i`. */
function pattern(i: number, size: number): Buffer {
  const unit = Buffer.alloc(251)
  for (let k = 0; k < 251; k++) unit[k] = (i * 31 + k * 7) & 0xff
  const out = Buffer.alloc(size)
  for (let at = 0; at < size; at += 251) unit.copy(out, at, 0, Math.min(251, size - at))
  return out
}

for (const seed of [1, 2, 3]) {
  leakFree(`python3 writes ${SIZES.length * 8} frames of 0 B to 1 MiB cut at random points (seed ${seed}): every byte, every descriptor, each payload in a buffer of the promised kind`, async (t) => {
    const count = SIZES.length * 8
    const [mine, theirs] = socketpair()
    const peer = run('python3', [fixture('data-path-peer.py'), String(seed), String(count)], {
      stdio: ['ignore', 'inherit', 'inherit', theirs],
    })
    fs.closeSync(theirs)
    const ch = Channel.fromFd(mine)
    const got: Message[] = []
    ch.on('message', (m) => got.push(m))
    await once(ch, 'end')
    t.is(got.length, count)
    for (let i = 0; i < got.length; i++) {
      const { data, fds } = got[i]!
      const size = SIZES[i % SIZES.length]!
      t.true(data.equals(pattern(i, size)), `frame ${i} (${size} bytes) arrived intact`)
      if (size >= 4096) {
        // A buffer of its own, exactly its size.
        t.is(data.byteOffset, 0, `frame ${i}: starts its buffer`)
        t.is(data.buffer.byteLength, size, `frame ${i}: its buffer is exactly its size`)
      } else {
        t.true(data.buffer.byteLength <= 8192, `frame ${i}: in a slab of at most 8 KiB (${data.buffer.byteLength})`)
      }
      if (i % 7 === 3) {
        t.is(fds.length, 1)
        t.is(fs.readFileSync(`/proc/self/fd/${fds[0]}`, 'utf8'), `frame ${i}`)
        fs.closeSync(fds[0]!)
      } else {
        t.deepEqual(fds, [])
      }
    }
    ch.close()
    await closing(ch)
    t.is(await peer.exited, 0)
  })
}

leakFree('a pair: 10,000 messages of 64 B with every 100th kept hold at most 100 slabs of 8 KiB after garbage collection', async (t) => {
  const r = run(process.execPath, ['--expose-gc', fixture('data-path-retain.js')], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.is(await r.exited, 0)
  const result = JSON.parse(r.stdout().trim()) as { kept: number; retained: number; intact: boolean; largestBacking: number }
  t.is(result.kept, 100)
  t.true(result.intact, 'the kept messages still hold their bytes')
  t.true(result.largestBacking <= 8192, `a kept 64-byte message pins at most 8 KiB (pinned ${result.largestBacking})`)
  t.true(result.retained <= 100 * 8192, `100 kept messages retain at most 800 KiB (retained ${result.retained})`)
})

leakFree('a lone small message arrives in a buffer of exactly its size (request/response keeps nothing else alive)', async (t) => {
  const [a, b] = Channel.pair()
  for (const size of [1, 64, 4000]) {
    const got = once(b, 'message') as Promise<[Message]>
    a.send(Buffer.alloc(size, 7))
    const [m] = await got
    t.is(m.data.length, size)
    t.is(m.data.buffer.byteLength, size)
  }
  a.close()
  b.close()
  await Promise.all([closing(a), closing(b)])
})

leakFree("a large send writes what is queued first, then itself from the caller's memory: earlier callbacks run, 'drain' comes, order holds", async (t) => {
  const [a, b] = Channel.pair({ highWaterMark: 4096 })
  const got: Buffer[] = []
  b.on('message', (m) => got.push(m.data))
  let calledBack = 0
  let onCalledBack = (): void => {}
  const calledBackOnce = new Promise<void>((resolve) => (onCalledBack = resolve))
  let full = false
  let small = 0
  // One turn: small messages fill the queue past the high-water mark...
  while (!full && small < 100) {
    full = !a.send(Buffer.alloc(100, small), small === 0 ? () => (calledBack++, onCalledBack()) : undefined)
    small++
  }
  t.true(full, 'send() asked to wait for drain')
  t.true(a.bufferedBytes > 0)
  // ...then a large one, in the same turn, finds room for all of it.
  const big = Buffer.alloc(256 * 1024, 0xab)
  a.send(big)
  t.is(a.bufferedBytes, 0, 'the queue and the large message went out during send()')
  big.fill(0) // the caller may reuse its memory at once
  await once(a, 'drain')
  await calledBackOnce
  t.is(calledBack, 1, 'the first small message was written and its callback called once')
  for (let i = 0; i < 1000 && got.length < small + 1; i++) await new Promise((r) => setImmediate(r))
  t.is(got.length, small + 1)
  const last = got[got.length - 1]!
  t.is(last.length, 256 * 1024)
  t.true(last.every((x) => x === 0xab))
  for (let i = 0; i < got.length - 1; i++) t.true(got[i]!.equals(Buffer.alloc(100, i)), `small message ${i}`)
  a.close()
  b.close()
  await Promise.all([closing(a), closing(b)])
})

leakFree('a header announcing 60 MiB followed by 1 byte commits almost none of it: the Buffer is allocated, its pages are not touched', async (t) => {
  const [mine, theirs] = socketpair()
  const ch = Channel.fromFd(mine, { maxMessageBytes: 64 * 1024 * 1024 })
  ch.on('message', () => t.fail('no message can be complete'))
  const before = process.memoryUsage().rss
  const header = Buffer.alloc(9)
  header.writeUInt32LE(60 * 1024 * 1024, 0)
  header[6] = 1
  header[8] = 0x55 // the payload's first byte
  fs.writeSync(theirs, header)
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r))
  const grown = process.memoryUsage().rss - before
  t.true(grown < 16 * 1024 * 1024, `RSS grew by ${(grown / 1048576).toFixed(1)} MiB`)
  const errored = once(ch, 'error') as Promise<[Error & { code: string }]>
  fs.closeSync(theirs)
  const [err] = await errored
  t.is(err.code, 'ERR_PROTOCOL', 'the peer closed in the middle of a frame')
  await closing(ch)
})
