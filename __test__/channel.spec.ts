/**
 * Channel in one process and across processes: framing, descriptors, backpressure,
 * half-close, errors, the async iterator, and what can be passed. Every test checks
 * that the open-descriptor count is back where it started (`leakChecked` in helpers.ts).
 */
import test from 'ava'
import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'

import { Channel, MAX_FDS_PER_MESSAGE, type Message, recvmsg, sendmsg, socketpair, spawn } from '..'
import { closeAll, closeBoth, closing, fixture, identity, leakChecked, readThrough, tempFile } from './helpers'

const leakFree = leakChecked(test)

const RECORD_TYPES = process.platform === 'darwin' ? (['dgram'] as const) : (['seqpacket', 'dgram'] as const)

/** Resolves with the first `count` messages `channel` receives. */
function collect(channel: Channel, count: number): Promise<Message[]> {
  return new Promise((resolve, reject) => {
    const got: Message[] = []
    const onMessage = (m: Message): void => {
      got.push(m)
      if (got.length === count) {
        channel.off('message', onMessage)
        channel.off('error', reject)
        resolve(got)
      }
    }
    channel.on('message', onMessage)
    channel.once('error', reject)
  })
}

/** Resolves with the events (in order) until 'close'. */
function eventsUntilClose(channel: Channel): Promise<string[]> {
  const seen: string[] = []
  channel.on('message', (m) => {
    seen.push(`message:${m.data}`)
    closeAll(m.fds)
  })
  channel.on('end', () => seen.push('end'))
  channel.on('error', (e) => seen.push(`error:${(e as NodeJS.ErrnoException).code}`))
  return closing(channel).then(() => {
    seen.push('close')
    return seen
  })
}

for (const type of ['stream', ...RECORD_TYPES] as const) {
  leakFree(`${type}: messages arrive whole, in order, with exactly their descriptors`, async (t) => {
    const [a, b] = Channel.pair({ type })
    t.is(a.type, type)
    const files = [tempFile('one'), tempFile('two'), tempFile('three')]
    const received = collect(b, 4)
    a.send('first')
    a.send(Buffer.from('second'), { fds: [files[0]!.fd] })
    a.send(new Uint8Array([116, 104, 105, 114, 100]), { fds: [files[1]!.fd, files[2]!.fd] })
    a.send('')
    const got = await received
    t.deepEqual(
      got.map((m) => m.data.toString()),
      ['first', 'second', 'third', ''],
    )
    t.deepEqual(
      got.map((m) => m.fds.length),
      [0, 1, 2, 0],
    )
    t.deepEqual(got[2]!.fds.map(readThrough), ['two', 'three'])
    t.is(identity(got[1]!.fds[0]!), identity(files[0]!.fd))
    closeAll(got.flatMap((m) => m.fds))
    await closeBoth(a, b)
    closeAll(files.map((f) => f.fd))
  })
}

leakFree('sizes 0 B, 1 B, 64 KiB and 16 MiB with 0, 1 and the maximum number of descriptors', async (t) => {
  const [a, b] = Channel.pair()
  const sizes = [0, 1, 64 * 1024, 16 * 1024 * 1024]
  const counts = [0, 1, MAX_FDS_PER_MESSAGE]
  const file = tempFile('shared')
  const cases = sizes.flatMap((size) => counts.map((count) => ({ size, count })))
  const received = collect(b, cases.length)
  for (const [i, { size, count }] of cases.entries()) {
    const payload = Buffer.alloc(size, i + 1)
    a.send(payload, { fds: Array.from({ length: count }, () => file.fd) })
  }
  const got = await received
  for (const [i, { size, count }] of cases.entries()) {
    const m = got[i]!
    t.is(m.data.length, size, `size of case ${i}`)
    t.true(size === 0 || (m.data[0] === i + 1 && m.data[size - 1] === i + 1), `content of case ${i}`)
    t.is(m.fds.length, count, `descriptors of case ${i}`)
    t.true(
      m.fds.every((fd) => identity(fd) === identity(file.fd)),
      `identity of case ${i}`,
    )
    closeAll(m.fds)
  }
  await closeBoth(a, b)
  closeAll([file.fd])
})

leakFree('random sizes and random descriptor counts, every descriptor with its own message', async (t) => {
  const [a, b] = Channel.pair()
  let seed = 12345
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  const files = Array.from({ length: 8 }, (_, i) => tempFile(`file ${i}`))
  const plan = Array.from({ length: 400 }, () => ({
    size: [0, 1, 7, 100, 4096, 70_000, 300_000][random(7)]!,
    fds: Array.from({ length: random(4) }, () => random(8)),
  }))
  const received = collect(b, plan.length)
  for (const [i, p] of plan.entries()) {
    const payload = Buffer.alloc(p.size, i & 0xff)
    a.send(payload, { fds: p.fds.map((f) => files[f]!.fd) })
  }
  const got = await received
  for (const [i, p] of plan.entries()) {
    const m = got[i]!
    t.is(m.data.length, p.size)
    if (p.size) t.is(m.data[p.size - 1], i & 0xff)
    t.deepEqual(
      m.fds.map(identity),
      p.fds.map((f) => identity(files[f]!.fd)),
    )
    closeAll(m.fds)
  }
  await closeBoth(a, b)
  closeAll(files.map((f) => f.fd))
})

leakFree('backpressure — send() returns false, drain follows, everything arrives once', async (t) => {
  const [a, b] = Channel.pair({ highWaterMark: 256 * 1024 })
  const file = tempFile('backpressure')
  // Nobody reads b yet, so the socket fills and the queue grows.
  let sent = 0
  let ok = true
  while (ok) {
    ok = a.send(Buffer.alloc(50_000, sent & 0xff), { fds: sent % 10 === 0 ? [file.fd] : [] })
    sent++
  }
  t.false(ok)
  t.true(a.bufferedBytes >= 256 * 1024)
  const drained = once(a, 'drain')
  const received = collect(b, sent)
  await drained
  const got = await received
  t.is(got.length, sent)
  for (const [i, m] of got.entries()) {
    t.is(m.data.length, 50_000)
    t.is(m.data[49_999], i & 0xff)
    t.is(m.fds.length, i % 10 === 0 ? 1 : 0, `descriptors of message ${i}`)
    closeAll(m.fds)
  }
  t.is(a.bufferedBytes, 0)
  await closeBoth(a, b)
  closeAll([file.fd])
})

leakFree('the sender may close its descriptors right after send()', async (t) => {
  const [a, b] = Channel.pair()
  const file = tempFile('closed by the sender at once')
  const id = identity(file.fd)
  const received = collect(b, 1)
  a.send('here', { fds: [file.fd] })
  fs.closeSync(file.fd)
  const [m] = await received
  t.is(identity(m!.fds[0]!), id)
  t.is(readThrough(m!.fds[0]!), 'closed by the sender at once')
  closeAll(m!.fds)
  await closeBoth(a, b)
})

leakFree('N messages, then end, then close', async (t) => {
  const [a, b] = Channel.pair()
  const events = eventsUntilClose(b)
  for (let i = 0; i < 5; i++) a.send(`m${i}`)
  a.close()
  t.deepEqual(await events, ['message:m0', 'message:m1', 'message:m2', 'message:m3', 'message:m4', 'end', 'close'])
})

leakFree('half-close — the peer sees end and can still reply', async (t) => {
  const [a, b] = Channel.pair()
  b.on('message', (m) => t.is(m.data.toString(), 'question'))
  b.on('end', () => b.send('answer, sent after the end'))
  const aEvents = eventsUntilClose(a)
  a.send('question')
  a.end()
  t.throws(() => a.send('too late'), { code: 'ERR_STREAM_WRITE_AFTER_END' })
  t.deepEqual(await aEvents, ['message:answer, sent after the end', 'end', 'close'])
  await closing(b)
})

leakFree('allowHalfOpen keeps our side open after the peer ends', async (t) => {
  const [a, b] = Channel.pair({ allowHalfOpen: true })
  b.on('message', () => {})
  const ended = once(b, 'end')
  a.on('message', () => {})
  a.end()
  await ended
  t.false(b.closed)
  const reply = collect(a, 1)
  b.send('still here')
  t.is((await reply)[0]!.data.toString(), 'still here')
  b.end()
  await Promise.all([closing(a), closing(b)])
})

leakFree('sending to a closed peer is an EPIPE error event, then close — no SIGPIPE', async (t) => {
  const [a, b] = Channel.pair()
  b.close()
  const events: string[] = []
  a.on('error', (e) => events.push((e as NodeJS.ErrnoException).code!))
  a.on('close', () => events.push('close'))
  a.send('anyone?')
  await closing(a)
  t.deepEqual(events, ['EPIPE', 'close'])
  t.throws(() => a.send('again'), { code: 'ERR_CHANNEL_CLOSED' })
})

leakFree('close() inside a message handler with more messages pending', async (t) => {
  const [a, b] = Channel.pair()
  const file = tempFile('x')
  for (let i = 0; i < 100; i++) a.send(`m${i}`, { fds: [file.fd, file.fd] })
  let seen = 0
  b.on('message', (m) => {
    seen++
    closeAll(m.fds)
    b.close()
  })
  await closing(b)
  t.is(seen, 1, 'nothing is delivered after close()')
  a.close()
  await closing(a)
  closeAll([file.fd])
  // The leak check proves the pending messages' descriptors were closed.
})

for (const type of RECORD_TYPES) {
  leakFree(`${type} — a record too large for the socket throws ERR_MESSAGE_TOO_LARGE and the channel lives`, async (t) => {
    const [a, b] = Channel.pair({ type })
    t.throws(() => a.send(Buffer.alloc(8 << 20)), { code: 'ERR_MESSAGE_TOO_LARGE' })
    const got = collect(b, 1)
    a.send('small')
    t.is((await got)[0]!.data.toString(), 'small')
    await closeBoth(a, b)
  })
}

leakFree('limits: maxMessageBytes and the descriptor cap are checked before anything is sent', async (t) => {
  const [a, b] = Channel.pair({ maxMessageBytes: 100 })
  const file = tempFile('')
  t.throws(() => a.send(Buffer.alloc(101)), { code: 'ERR_MESSAGE_TOO_LARGE' })
  t.throws(() => a.send('x', { fds: Array.from({ length: MAX_FDS_PER_MESSAGE + 1 }, () => file.fd) }), {
    code: 'ERR_TOO_MANY_FDS',
  })
  t.throws(() => a.send('x', { fds: [-1] }), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => a.send('x', { fds: [{} as number] }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => a.send(42 as unknown as string), { code: 'ERR_INVALID_ARG_TYPE' })
  t.is(a.bufferedBytes, 0)
  const got = collect(b, 1)
  a.send(Buffer.alloc(100))
  t.is((await got)[0]!.data.length, 100, 'the limit itself is fine')
  await closeBoth(a, b)
  closeAll([file.fd])
})

leakFree('hostile frames — bad version, huge length, fd mismatch — error, close, fds closed', async (t) => {
  const cases: { name: string; bytes: Buffer; fds: number; code: string }[] = [
    { name: 'bad version', bytes: Buffer.from([1, 0, 0, 0, 0, 0, 9, 0, 65]), fds: 0, code: 'ERR_PROTOCOL' },
    { name: 'reserved flags', bytes: Buffer.from([1, 0, 0, 0, 0, 0, 1, 1, 65]), fds: 0, code: 'ERR_PROTOCOL' },
    { name: 'length 2^32-1', bytes: Buffer.from([255, 255, 255, 255, 0, 0, 1, 0]), fds: 0, code: 'ERR_PROTOCOL' },
    { name: 'fewer fds than declared', bytes: Buffer.from([1, 0, 0, 0, 3, 0, 1, 0, 65]), fds: 1, code: 'ERR_PROTOCOL' },
    { name: 'more fds than declared, then EOF', bytes: Buffer.from([1, 0, 0, 0, 1, 0, 1, 0, 65]), fds: 3, code: 'ERR_PROTOCOL' },
    { name: 'EOF in the middle of a frame', bytes: Buffer.from([9, 0, 0, 0, 0, 0, 1, 0, 65]), fds: 0, code: 'ERR_PROTOCOL' },
  ]
  for (const c of cases) {
    const [raw, mine] = socketpair()
    const channel = Channel.fromFd(mine, { maxMessageBytes: 1024 })
    const file = tempFile('')
    const events = eventsUntilClose(channel)
    sendmsg(
      raw,
      c.bytes,
      Array.from({ length: c.fds }, () => file.fd),
    )
    fs.closeSync(raw)
    const seen = await events
    t.true(seen.includes(`error:${c.code}`), `${c.name}: ${seen.join(', ')}`)
    t.is(seen[seen.length - 1], 'close', c.name)
    closeAll([file.fd])
  }
})

leakFree('for await yields every message until the peer ends', async (t) => {
  const [a, b] = Channel.pair()
  a.on('message', () => {}) // reads, so that it sees b's end and closes
  for (let i = 0; i < 3000; i++) a.send(`n${i}`)
  a.end()
  let count = 0
  for await (const m of b) {
    t.is(m.data.toString(), `n${count}`)
    count++
  }
  t.is(count, 3000)
  await closing(a)
})

leakFree('for await throws the error that closes the channel', async (t) => {
  const [raw, mine] = socketpair()
  const channel = Channel.fromFd(mine)
  sendmsg(raw, Buffer.from([1, 0, 0, 0, 0, 0, 7, 0, 65]))
  const err = await t.throwsAsync(async () => {
    for await (const m of channel) closeAll(m.fds)
  })
  t.is((err as NodeJS.ErrnoException).code, 'ERR_PROTOCOL')
  fs.closeSync(raw)
})

leakFree('passing a FileHandle, a net.Socket, a net.Server and a Channel', async (t) => {
  const [a, b] = Channel.pair()
  const file = tempFile('via FileHandle')
  const handle = await fs.promises.open(file.path, 'r')

  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const [sx, sy] = socketpair()
  const socket = new net.Socket({ fd: sx })
  const [left, right] = Channel.pair()

  const received = collect(b, 4)
  a.send('file', { fds: [handle] })
  a.send('socket', { fds: [socket] })
  a.send('server', { fds: [server] })
  a.send('channel', { fds: [right] })
  const [m1, m2, m3, m4] = await received

  t.is(readThrough(m1!.fds[0]!), 'via FileHandle')
  closeAll(m1!.fds)

  // A received socket descriptor becomes a net.Socket again.
  const wrapped = new net.Socket({ fd: m2!.fds[0]! })
  await new Promise<void>((resolve) => wrapped.write('through the passed socket', () => resolve()))
  t.is(recvmsg(sy)!.data.toString(), 'through the passed socket')
  wrapped.destroy()
  await once(wrapped, 'close')

  // A received listening socket becomes a net.Server again, on the same port.
  const port = (server.address() as net.AddressInfo).port
  server.close() // ours stops; the passed copy keeps listening
  const adopted = net.createServer((conn) => conn.end('hello from the adopted server'))
  adopted.listen({ fd: m3!.fds[0]! })
  await once(adopted, 'listening')
  const client = net.connect(port, '127.0.0.1')
  let reply = ''
  client.on('data', (d) => (reply += d))
  await once(client, 'close')
  t.is(reply, 'hello from the adopted server')
  adopted.close()
  await once(adopted, 'close')

  // A received channel end becomes a Channel again.
  const adoptedChannel = Channel.fromFd(m4!.fds[0]!)
  right.close() // ours is closed: the passed copy carries on
  const over = collect(adoptedChannel, 1)
  left.send('over the passed channel')
  t.is((await over)[0]!.data.toString(), 'over the passed channel')

  left.close()
  adoptedChannel.close()
  a.close()
  b.close()
  const socketClosed = once(socket, 'close')
  socket.destroy()
  await Promise.all([closing(b), closing(adoptedChannel), socketClosed, handle.close()])
  closeAll([sy, file.fd])
})

leakFree('peerCredentials() names the process that made the pair', (t) => {
  const [a, b] = Channel.pair()
  const c = a.peerCredentials()
  t.is(c.uid, process.getuid!())
  if (process.platform === 'linux' || process.platform === 'darwin') t.is(c.pid, process.pid)
  a.close()
  b.close()
  t.throws(() => a.peerCredentials(), { code: 'ERR_CHANNEL_CLOSED' })
})

leakFree('fromFd refuses what is not a socket and leaves the descriptor to the caller', (t) => {
  const file = tempFile('not a socket')
  t.throws(() => Channel.fromFd(file.fd), { code: 'ENOTSOCK' })
  t.is(readThrough(file.fd), 'not a socket', 'the file descriptor is still open and usable')
  const [a, b] = socketpair()
  fs.closeSync(b)
  const stale = b // closed: nothing is open under this number now
  t.throws(() => Channel.fromFd(stale), { code: 'EBADF' })
  // A socket is adopted; the channel owns it from then on.
  const channel = Channel.fromFd(a)
  t.is(channel.fd, a)
  channel.close()
  t.throws(() => fs.fstatSync(a), { code: 'EBADF' })
  closeAll([file.fd])
})

leakFree('fromParent without a parent channel is ERR_NO_PARENT_CHANNEL', (t) => {
  t.throws(() => Channel.fromParent(), { code: 'ERR_NO_PARENT_CHANNEL' })
})

leakFree('spawn(): the child finds its channel, the parent copy is closed, nothing leaks to other children', async (t) => {
  const first = spawn(process.execPath, [fixture('channel-child.js'), 'report'], { stdio: 'inherit' })
  const second = spawn(process.execPath, [fixture('channel-child.js'), 'report'], { stdio: 'inherit' })
  const exits = Promise.all([once(first.child, 'exit'), once(second.child, 'exit')])
  const [r1, r2] = await Promise.all([collect(first.channel, 1), collect(second.channel, 1)])
  const report1 = JSON.parse(r1[0]!.data.toString())
  const report2 = JSON.parse(r2[0]!.data.toString())
  t.is(report1.envBefore, '3', 'the child end sits at descriptor 3, named in SOCKETPAIR_FD')
  t.is(report1.envAfter, null, 'fromParent() removes it from the environment')
  t.is(report1.channelFd, 3)
  // The second child must not hold the first child's channel (either end).
  const firstEnd = identity(first.channel.fd)
  const childIds = new Set(Object.values(report2.fds as Record<string, string>))
  t.false(childIds.has(firstEnd), "the first parent end never reached the second child")
  t.false(Object.values(report1.fds as Record<string, string>).includes(identity(second.channel.fd)))
  first.channel.close()
  second.channel.close()
  await exits
})

leakFree('spawn(): a child sums numbers from files whose descriptors it receives', async (t) => {
  const { child, channel } = spawn(process.execPath, [fixture('channel-child.js'), 'sum'], { stdio: 'inherit' })
  const exited = once(child, 'exit')
  const files = [tempFile('40'), tempFile('2'), tempFile('100')]
  channel.send('numbers', { fds: files.map((f) => f.fd) })
  channel.send('more', { fds: [files[2]!.fd] })
  channel.end()
  const [reply] = await collect(channel, 1)
  t.is(reply!.data.toString(), '242')
  await closing(channel)
  const [code] = await exited
  t.is(code, 0)
  closeAll(files.map((f) => f.fd))
})

leakFree('16 children, each on its own channel, 10,000 messages each: no crosstalk', async (t) => {
  const children = Array.from({ length: 16 }, (_, id) => {
    const spawned = spawn(process.execPath, [fixture('channel-child.js'), 'tagged', `c${id}`], { stdio: 'inherit' })
    // Listen for the exit now: a child that finishes early may be gone before the others.
    return { id, ...spawned, exited: once(spawned.child, 'exit') }
  })
  const PER_CHILD = 10_000
  const results = await Promise.all(
    children.map(async ({ id, channel }) => {
      const replies = collect(channel, PER_CHILD)
      for (let i = 0; i < PER_CHILD; i++) channel.send(String(i))
      const got = await replies
      let ok = 0
      for (let i = 0; i < PER_CHILD; i++) if (got[i]!.data.toString() === `c${id}:${i}`) ok++
      channel.close()
      return ok
    }),
  )
  t.deepEqual(
    results,
    children.map(() => PER_CHILD),
  )
  await Promise.all(children.map((c) => c.exited))
})

leakFree('a python3 peer speaks PROTOCOL.md with a stream channel', async (t) => {
  const { child, channel } = spawn('python3', [fixture('peer.py')], { stdio: ['ignore', 'inherit', 'inherit'] })
  const exited = once(child, 'exit')
  // peer.py reads its socket from descriptor 3, which is where spawn() put it.
  const files = [tempFile('alpha'), tempFile('beta')]
  channel.send(JSON.stringify({ op: 'read' }), { fds: files.map((f) => f.fd) })
  const [reply] = await collect(channel, 1)
  t.deepEqual(JSON.parse(reply!.data.toString()), { contents: ['alpha', 'beta'] })
  channel.send(JSON.stringify({ op: 'give', n: 3, style: 'coalesced' }))
  const [gave, second] = await collect(channel, 2)
  t.deepEqual(gave!.fds.map(readThrough), ['python file 0', 'python file 1', 'python file 2'])
  t.deepEqual(second!.fds.map(readThrough), ['python file b0', 'python file b1'])
  closeAll([...gave!.fds, ...second!.fds])
  channel.end()
  const [code] = await exited
  t.is(code, 0)
  await closing(channel)
  closeAll(files.map((f) => f.fd))
})

leakFree('a peer killed with SIGKILL in the middle of a frame — ERR_PROTOCOL, then close', async (t) => {
  // The peer writes a header promising 1000 bytes and 10 of them (with a descriptor),
  // says so on stdout, and waits to be killed.
  const script = [
    'import os, socket, struct, sys, time',
    "s = socket.socket(fileno=int(os.environ['SOCKETPAIR_FD']))",
    "socket.send_fds(s, [struct.pack('<IHBB', 1000, 1, 1, 0) + b'x' * 10], [0])",
    "sys.stdout.write('sent\\n'); sys.stdout.flush()",
    'time.sleep(60)',
  ].join('\n')
  const { child, channel } = spawn('python3', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = once(child, 'exit')
  const events = eventsUntilClose(channel)
  await once(child.stdout!, 'data')
  child.kill('SIGKILL')
  const [, signal] = await exited
  t.is(signal, 'SIGKILL')
  const seen = await events
  t.deepEqual(seen, ['error:ERR_PROTOCOL', 'close'])
})
