/**
 * What a second adversarial review found, each held by a test: reading never stalls
 * after a batch without descriptors, send callbacks tell the truth at close(), an
 * iterator with highWaterMark 0 makes progress and does not close descriptors another
 * listener holds, and misuse (a descriptor closed and reused behind a channel's back, a
 * listening socket, fake handles, revoked proxies) gets a coded error
 * and never touches somebody else's socket.
 */
import test from 'ava'
import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import { Channel, type Message, recvmsg, socketpair } from '..'
import { closeAll, closeBoth, closing, leakChecked, run, tempFile } from './helpers'

const leakFree = leakChecked(test)

leakFree('a for await loop over thousands of messages without descriptors never stalls (default options)', async (t) => {
  const [a, b] = Channel.pair()
  const payload = Buffer.alloc(1000, 7)
  let sent = 0
  const sending = (async () => {
    for (; sent < 4000; sent++) if (!a.send(payload)) await once(a, 'drain')
    a.send('last')
    a.end()
  })()
  let n = 0
  let last = ''
  for await (const m of b) {
    n++
    last = m.data.length === 4 ? m.data.toString() : last
  }
  await sending
  t.is(n, 4001)
  t.is(last, 'last')
  await closeBoth(a, b) // a never reads, so it would not see b's end by itself
})

leakFree('await once(channel, "message") in a loop gets every message, across batches', async (t) => {
  const [a, b] = Channel.pair()
  for (let i = 1; i <= 5; i++) a.send(`m${i}`)
  setTimeout(() => {
    for (let i = 6; i <= 8; i++) a.send(`m${i}`)
  }, 50)
  const got: string[] = []
  while (got.length < 8) {
    const [m] = (await once(b, 'message')) as [Message]
    got.push(m.data.toString())
  }
  t.deepEqual(got, ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8'])
  await closeBoth(a, b)
})

leakFree('close() right after send(data, callback): the callback says written when the peer gets it, and fails only what was dropped', async (t) => {
  const [a, b] = Channel.pair()
  const results: string[] = []
  a.send('hello', (err) => results.push(err ? `hello:${err.code}` : 'hello:written'))
  a.send(Buffer.alloc(8 << 20, 1), (err) => results.push(err ? `big:${err.code}` : 'big:written'))
  a.send('dropped', (err) => results.push(err ? `dropped:${err.code}` : 'dropped:written'))
  a.close()
  const received: string[] = []
  b.on('message', (m: Message) => received.push(m.data.length > 100 ? `big:${m.data.length}` : m.data.toString()))
  await closing(b)
  t.deepEqual(received, ['hello', `big:${8 << 20}`])
  t.deepEqual(results, ['hello:written', 'big:written', 'dropped:ERR_CHANNEL_CLOSED'])
})

leakFree('a process that exits right after close() still finishes the frame it began', async (t) => {
  const [mine, theirs] = socketpair()
  const child = run(
    process.execPath,
    [
      '-e',
      `const { Channel } = require(${JSON.stringify(path.join(__dirname, '..'))});
       const ch = Channel.fromFd(3); ch.send(Buffer.alloc(8 << 20, 5)); ch.close()`,
    ],
    { stdio: ['ignore', 'inherit', 'inherit', theirs] },
  )
  fs.closeSync(theirs)
  const b = Channel.fromFd(mine)
  const events: string[] = []
  b.on('message', (m: Message) => events.push(`message:${m.data.length}:${m.data.every((x) => x === 5)}`))
  b.on('end', () => events.push('end'))
  b.on('error', (e) => events.push(`error:${e.code}`))
  t.is(await child.exited, 0)
  await closing(b)
  t.deepEqual(events, [`message:${8 << 20}:true`, 'end'])
})

leakFree('an iterator with highWaterMark 0 still yields every message', async (t) => {
  const [a, b] = Channel.pair({ readableHighWaterMark: 0 })
  for (let i = 0; i < 5; i++) a.send(`m${i}`)
  setTimeout(() => a.end(), 50)
  const got: string[] = []
  for await (const m of b) got.push(m.data.toString())
  t.deepEqual(got, ['m0', 'm1', 'm2', 'm3', 'm4'])
  await closeBoth(a, b)
})

leakFree("breaking out of an iterator does not close descriptors another listener also received", async (t) => {
  const [a, b] = Channel.pair()
  const kept: number[] = []
  b.on('message', (m: Message) => kept.push(...m.fds))
  const file = tempFile('shared')
  for (let i = 0; i < 5; i++) a.send(`m${i}`, { fds: [file.fd] })
  for await (const m of b) {
    void m
    await new Promise((resolve) => setTimeout(resolve, 50)) // the rest are buffered meanwhile
    break
  }
  t.is(kept.length, 5)
  for (const fd of kept) t.notThrows(() => fs.fstatSync(fd), `descriptor ${fd} is still open`)
  closeAll(kept)
  closeAll([file.fd])
  await closeBoth(a, b)
})

for (const how of ['send', 'send a large payload', 'end', 'peerCredentials'] as const) {
  leakFree(`a descriptor closed and reused behind the channel's back: ${how}() never reaches the new socket`, async (t) => {
    const [x, peer] = socketpair()
    const ch = Channel.fromFd(x)
    const events: string[] = []
    ch.on('error', (e) => events.push(`error:${e.code}`))
    fs.closeSync(x) // misuse: behind the channel's back
    const [reused, other] = socketpair('stream', { nonblock: true })
    t.is(reused, x, 'the number was reused')
    let threw = ''
    try {
      if (how === 'send') ch.send('to a stranger')
      else if (how === 'send a large payload') ch.send(Buffer.alloc(64 << 10, 1))
      else if (how === 'end') ch.end()
      else ch.peerCredentials()
    } catch (e) {
      threw = (e as { code?: string }).code ?? 'uncoded'
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
    t.true(threw === 'EBADF' || events.includes('error:EBADF'), `threw ${threw}, events ${events.join(',')}`)
    t.throws(() => recvmsg(other, { maxBytes: 1024 }), { code: 'EAGAIN' }, 'the new socket received nothing')
    ch.close()
    await closing(ch)
    t.notThrows(() => fs.fstatSync(reused), 'the channel did not close the new socket')
    closeAll([reused, other, peer])
  })
}

leakFree('Channel.fromFd of a listening socket is refused with a code, and the descriptor stays open', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'socketpair-misuse-'))
  const server = net.createServer().listen(path.join(dir, 's.sock'))
  await once(server, 'listening')
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd
  t.throws(() => Channel.fromFd(fd), { code: 'ERR_INVALID_ARG_VALUE', message: /not connected/ })
  t.notThrows(() => fs.fstatSync(fd))
  server.close()
  await once(server, 'close')
  fs.rmSync(dir, { recursive: true })
})

leakFree('fake handles and revoked proxies get coded errors, never a stray descriptor', async (t) => {
  const [a, b] = Channel.pair()
  for (const bad of [1.5, Number.NaN, 2 ** 32 + 1, Infinity, -1]) {
    const fake = Object.create(net.Socket.prototype) as net.Socket
    Object.defineProperty(fake, '_handle', { value: { fd: bad } })
    t.throws(() => a.send('x', { fds: [fake] }), { code: 'ERR_INVALID_ARG_VALUE' }, String(bad))
  }
  const { proxy, revoke } = Proxy.revocable({}, {})
  revoke()
  t.throws(() => a.send('x', proxy), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => Channel.pair(proxy), { code: 'ERR_INVALID_ARG_VALUE' })
  const data = new Proxy(Buffer.from('x'), {})
  const r = (() => {
    try {
      a.send(data)
      return 'sent'
    } catch (e) {
      return (e as { code?: string }).code ?? 'uncoded'
    }
  })()
  t.not(r, 'uncoded')
  await closeBoth(a, b)
})
