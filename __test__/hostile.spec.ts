/**
 * A peer that breaks PROTOCOL.md on purpose (a python3 process,
 * __test__/fixtures/hostile_peer.py). Whatever it does, this side gets the messages that
 * were well-formed (each with its own files), then one 'error' with a stable code, then
 * 'close'; every descriptor it queued is closed; the process and a bystander channel
 * carry on. Every test also checks the open-descriptor count (`leakChecked` in helpers.ts).
 */
import test from 'ava'
import { once } from 'node:events'

import { Channel, type Message, spawn } from '..'
import { closeAll, closeBoth, closing, fixture, leakChecked, readThrough } from './helpers'

const leakFree = leakChecked(test)

interface Seen {
  /** 'message:<payload>[<file contents>,…]', 'end', 'error:<code>', 'close', in order. */
  events: string[]
  /** The peer's exit code (null when killed). */
  exitCode: number | null
}

/** A channel that stays healthy beside the hostile one: one round trip through it. */
async function bystanderWorks(pair: [Channel, Channel]): Promise<boolean> {
  const [a, b] = pair
  const got = once(b, 'message') as Promise<[Message]>
  a.send('still here')
  const [m] = await got
  return m.data.toString() === 'still here'
}

async function runScenario(scenario: string, options: { kill?: boolean } = {}): Promise<Seen> {
  const bystander = Channel.pair()
  const { child, channel } = spawn('python3', [fixture('hostile_peer.py'), scenario], {
    stdio: ['ignore', 'pipe', 'inherit'],
    channel: { maxMessageBytes: 1024 },
  })
  // 'close' rather than 'exit': it also waits for the child's stdio pipes to close.
  const exited = once(child, 'close') as Promise<[number | null, string | null]>
  const events: string[] = []
  channel.on('message', (m: Message) => {
    events.push(`message:${m.data.toString()}[${m.fds.map(readThrough).join(',')}]`)
    closeAll(m.fds)
  })
  channel.on('end', () => events.push('end'))
  channel.on('error', (e: NodeJS.ErrnoException) => events.push(`error:${e.code}`))
  const closed = closing(channel).then(() => events.push('close'))
  if (options.kill) {
    await once(child.stdout!, 'data')
    child.kill('SIGKILL')
  }
  await closed
  const [code] = await exited
  if (!(await bystanderWorks(bystander))) throw new Error('the bystander channel stopped working')
  await closeBoth(...bystander)
  return { events, exitCode: code }
}

const cases: { scenario: string; expect: string[] }[] = [
  { scenario: 'bad-version', expect: ['message:ok[]', 'error:ERR_PROTOCOL', 'close'] },
  { scenario: 'reserved-flags', expect: ['error:ERR_PROTOCOL', 'close'] },
  { scenario: 'length-past-limit', expect: ['error:ERR_PROTOCOL', 'close'] },
  { scenario: 'length-2^32-1', expect: ['error:ERR_PROTOCOL', 'close'] },
  { scenario: 'header-split-then-eof', expect: ['error:ERR_PROTOCOL', 'close'] },
  { scenario: 'fewer-fds', expect: ['error:ERR_PROTOCOL', 'close'] },
  // The second send's frame is not handed the first send's extra file.
  { scenario: 'more-fds', expect: ['message:first[A0]', 'error:ERR_PROTOCOL', 'close'] },
  { scenario: 'more-fds-then-eof', expect: ['message:first[A0]', 'error:ERR_PROTOCOL', 'close'] },
  // The empty frame after it is well-formed; its extra descriptor is caught at the end.
  { scenario: 'zero-length-fds', expect: ['message:[A0,A1]', 'message:[]', 'error:ERR_PROTOCOL', 'close'] },
  // The second send's frame is whole; its descriptors show that the first send's 253
  // were never claimed.
  { scenario: 'fd-flood', expect: ['message:[]', 'message:[]', 'error:ERR_PROTOCOL', 'close'] },
  // The frame's bytes are whole; the descriptor riding in its middle is the error.
  { scenario: 'fds-mid-frame', expect: [`message:${'y'.repeat(100)}[]`, 'error:ERR_PROTOCOL', 'close'] },
  { scenario: 'garbage', expect: ['error:ERR_PROTOCOL', 'close'] },
]

for (const c of cases) {
  leakFree(`hostile peer: ${c.scenario} — ${c.expect.join(', ')}; queued descriptors closed, bystander unharmed`, async (t) => {
    const seen = await runScenario(c.scenario)
    t.deepEqual(seen.events, c.expect)
    t.is(seen.exitCode, 0, 'the peer itself ran to its end')
  })
}

leakFree('hostile peer: killed with SIGKILL in the middle of a frame that carries a descriptor — ERR_PROTOCOL, close, descriptor closed', async (t) => {
  const seen = await runScenario('wait-killed', { kill: true })
  t.deepEqual(seen.events, ['error:ERR_PROTOCOL', 'close'])
  t.is(seen.exitCode, null, 'killed by the signal')
})

leakFree('a peer that does not read for 2 s: send() returns false, the queue stops growing, no drain until it reads; then everything arrives once, in order', async (t) => {
  const { child, channel } = spawn('python3', [fixture('slow_reader.py'), '2.0'], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  const exited = once(child, 'close')
  const chunk = Buffer.alloc(64 * 1024, 0x61)
  let seq = 0
  const next = (): Buffer => {
    const b = Buffer.from(chunk)
    b.writeUInt32LE(seq++, 0)
    return b
  }
  let drains = 0
  channel.on('drain', () => drains++)
  channel.on('message', () => {}) // reads, so that it sees the peer's end and closes
  // Fill the kernel buffers and the queue up to the high-water mark (1 MiB).
  while (channel.send(next())) {
    if (seq > 10_000) throw new Error('send() never reported backpressure')
  }
  const queuedAtFull = channel.bufferedBytes
  t.true(queuedAtFull >= 1024 * 1024 && queuedAtFull <= 1024 * 1024 + chunk.length + 8, `queued ${queuedAtFull} bytes`)
  const rssBefore = process.memoryUsage().rss
  await new Promise((r) => setTimeout(r, 1500))
  t.is(drains, 0, 'no drain while the peer is not reading')
  t.is(channel.bufferedBytes, queuedAtFull, 'nothing moved')
  t.true(process.memoryUsage().rss - rssBefore < 16 * 1024 * 1024, 'memory stayed flat while waiting')
  // The peer starts reading: drain follows, and a few more rounds go through.
  for (let round = 0; round < 4; round++) {
    await once(channel, 'drain')
    while (channel.send(next())) {
      if (seq > 10_000) break
    }
  }
  channel.end()
  await closing(channel)
  const [code] = await exited
  t.is(code, 0)
  const report = JSON.parse(out) as { count: number; inOrder: boolean; bytes: number }
  t.is(report.count, seq, 'every message arrived exactly once')
  t.true(report.inOrder)
  t.is(report.bytes, seq * chunk.length)
  t.true(drains >= 4)
})
