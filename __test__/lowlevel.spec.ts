/**
 * The low-level API in one process: real socketpairs, real descriptors, every error
 * code. Each test checks that the open-descriptor count is back where it started.
 */
import test from 'ava'
import fs from 'node:fs'

import { closeFds, MAX_FDS_PER_MESSAGE, peerCredentials, recvmsg, sendmsg, socketpair, type SocketType } from '..'
import { leakChecked, closeAll, identity, isCloexec, readThrough, tempFile } from './helpers'

const leakFree = leakChecked(test)

const TYPES: SocketType[] = process.platform === 'darwin' ? ['stream', 'dgram'] : ['stream', 'seqpacket', 'dgram']

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (e) {
    return (e as NodeJS.ErrnoException).code
  }
  return undefined
}

for (const type of TYPES) {
  leakFree(`${type}: data and a descriptor arrive together`, (t) => {
    const [a, b] = socketpair(type)
    const file = tempFile(`contents for ${type}`)
    t.is(sendmsg(a, `hello ${type}`, [file.fd]), `hello ${type}`.length)
    const m = recvmsg(b)
    t.truthy(m)
    t.is(m!.data.toString(), `hello ${type}`)
    t.is(m!.fds.length, 1)
    t.not(m!.fds[0], file.fd, 'the receiver gets a new descriptor')
    t.is(identity(m!.fds[0]!), identity(file.fd), 'for the same file')
    t.is(readThrough(m!.fds[0]!), `contents for ${type}`)
    closeAll([a, b, file.fd, ...m!.fds])
  })
}

leakFree('both ends are close-on-exec by default, and received descriptors too', (t) => {
  const [a, b] = socketpair()
  const [c, d] = socketpair('stream', { cloexec: false })
  if (process.platform !== 'linux') {
    t.pass('fdinfo is Linux-only; the child-process test covers inheritance everywhere')
  } else {
    t.true(isCloexec(a))
    t.true(isCloexec(b))
    t.false(isCloexec(c))
    t.false(isCloexec(d))
    sendmsg(a, 'x', [c])
    const m = recvmsg(b)!
    t.true(isCloexec(m.fds[0]!), 'received fd is close-on-exec although the sent one was not')
    closeAll(m.fds)
  }
  closeAll([a, b, c, d])
})

leakFree('record types keep message boundaries', (t) => {
  for (const type of TYPES.filter((x) => x !== 'stream')) {
    const [a, b] = socketpair(type)
    sendmsg(a, 'one')
    sendmsg(a, Buffer.from('two'))
    sendmsg(a, new Uint8Array([116, 104, 114, 101, 101]))
    t.deepEqual(
      [recvmsg(b)!, recvmsg(b)!, recvmsg(b)!].map((m) => m.data.toString()),
      ['one', 'two', 'three'],
      type,
    )
    closeAll([a, b])
  }
})

leakFree('a Uint8Array view sends exactly its bytes, and utf-8 strings are encoded', (t) => {
  const [a, b] = socketpair()
  const backing = new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7])
  sendmsg(a, backing.subarray(2, 5))
  t.deepEqual([...recvmsg(b)!.data], [2, 3, 4])
  sendmsg(a, 'héllo ✓')
  t.is(recvmsg(b)!.data.toString('utf8'), 'héllo ✓')
  closeAll([a, b])
})

leakFree('1, 64 and the cap of descriptors arrive in order; cap + 1 is ERR_TOO_MANY_FDS', (t) => {
  t.is(MAX_FDS_PER_MESSAGE, 253)
  const [a, b] = socketpair('stream', { nonblock: true })
  for (const count of [1, 64, MAX_FDS_PER_MESSAGE]) {
    const files = Array.from({ length: count }, (_, i) => tempFile(`file ${i}`))
    sendmsg(
      a,
      'm',
      files.map((f) => f.fd),
    )
    const m = recvmsg(b)!
    t.is(m.fds.length, count)
    t.deepEqual(m.fds.map(identity), files.map((f) => identity(f.fd)), `order and identity for ${count}`)
    t.is(readThrough(m.fds[count - 1]!), `file ${count - 1}`)
    closeAll([...m.fds, ...files.map((f) => f.fd)])
  }
  const files = Array.from({ length: MAX_FDS_PER_MESSAGE + 1 }, () => tempFile(''))
  const err = t.throws(() =>
    sendmsg(
      a,
      'm',
      files.map((f) => f.fd),
    ),
  ) as NodeJS.ErrnoException
  t.is(err.code, 'ERR_TOO_MANY_FDS')
  t.regex(err.message, /254 descriptors.*limit is 253/)
  t.is(codeOf(() => recvmsg(b)), 'EAGAIN', 'nothing was sent')
  closeAll([a, b, ...files.map((f) => f.fd)])
})

leakFree('more descriptors than maxFds is ERR_FDS_TRUNCATED and closes the ones that arrived', (t) => {
  const [a, b] = socketpair()
  const files = Array.from({ length: 20 }, () => tempFile(''))
  sendmsg(
    a,
    'many',
    files.map((f) => f.fd),
  )
  const err = t.throws(() => recvmsg(b, { maxFds: 2 })) as NodeJS.ErrnoException
  t.is(err.code, 'ERR_FDS_TRUNCATED')
  t.regex(err.message, /closed/)
  // The leak check after the test proves that no received descriptor stayed open.
  closeAll([a, b, ...files.map((f) => f.fd)])
})

leakFree('descriptors never ride an empty send', (t) => {
  const [a, b] = socketpair()
  const file = tempFile('')
  const err = t.throws(() => sendmsg(a, '', [file.fd])) as NodeJS.ErrnoException
  t.is(err.code, 'ERR_INVALID_ARG_VALUE')
  t.regex(err.message, /at least one byte/)
  closeAll([a, b, file.fd])
})

leakFree('writing to a closed peer is EPIPE, and the process lives', (t) => {
  const [a, b] = socketpair()
  fs.closeSync(b)
  const err = t.throws(() => sendmsg(a, 'anyone there?')) as NodeJS.ErrnoException
  t.is(err.code, 'EPIPE')
  t.regex(err.message, /peer has closed/)
  closeAll([a])
})

leakFree('a record too large for the socket is ERR_MESSAGE_TOO_LARGE', (t) => {
  const [a, b] = socketpair('dgram')
  const err = t.throws(() => sendmsg(a, Buffer.alloc(8 << 20))) as NodeJS.ErrnoException
  t.is(err.code, 'ERR_MESSAGE_TOO_LARGE')
  closeAll([a, b])
})

leakFree('a record longer than maxBytes is reported as truncated, never silently', (t) => {
  const [a, b] = socketpair(TYPES.includes('seqpacket') ? 'seqpacket' : 'dgram')
  sendmsg(a, '0123456789')
  const m = recvmsg(b, { maxBytes: 4 })!
  t.is(m.data.toString(), '0123')
  t.true(m.truncated)
  closeAll([a, b])
})

leakFree('a stream delivers bytes in order across reads of any size, then null at EOF', (t) => {
  const [a, b] = socketpair()
  const big = Buffer.alloc(100_000, 7)
  big.write('start', 0)
  let sent = 0
  while (sent < big.length) sent += sendmsg(a, big.subarray(sent, Math.min(big.length, sent + 30_000)))
  fs.closeSync(a)
  const parts: Buffer[] = []
  for (let m = recvmsg(b, { maxBytes: 3 }); m; m = recvmsg(b, { maxBytes: 2 << 20 })) parts.push(m.data)
  t.true(Buffer.concat(parts).equals(big))
  t.is(recvmsg(b), null, 'EOF stays EOF')
  closeAll([b])
})

leakFree('nonblock: nothing to read is EAGAIN', (t) => {
  const [a, b] = socketpair('stream', { nonblock: true })
  const err = t.throws(() => recvmsg(b)) as NodeJS.ErrnoException
  t.is(err.code, 'EAGAIN')
  closeAll([a, b])
})

leakFree('peer credentials are this process for a pair made here', (t) => {
  const [a, b] = socketpair()
  const c = peerCredentials(a)
  t.is(c.uid, process.getuid!())
  t.is(c.gid, process.getgid!())
  if (process.platform === 'linux' || process.platform === 'darwin') t.is(c.pid, process.pid)
  else t.is(c.pid, null)
  closeAll([a, b])
})

leakFree('operating-system errors carry the errno name', (t) => {
  const file = tempFile('not a socket')
  t.is(codeOf(() => peerCredentials(file.fd)), 'ENOTSOCK')
  t.is(codeOf(() => recvmsg(file.fd)), 'ENOTSOCK')
  const [a, b] = socketpair()
  closeAll([a, b])
  t.is(codeOf(() => sendmsg(a, 'x')), 'EBADF')
  t.is(codeOf(() => recvmsg(b)), 'EBADF')
  const [c, d] = socketpair()
  const gone = tempFile('')
  fs.closeSync(gone.fd) // the lowest free number now: certainly closed
  t.is(codeOf(() => sendmsg(c, 'x', [gone.fd])), 'EBADF', 'a closed descriptor cannot be passed')
  closeAll([c, d, file.fd])
})

leakFree('bad arguments are typed errors with Node-style codes', (t) => {
  const [a, b] = socketpair()
  const cases: [() => unknown, string, RegExp][] = [
    [() => socketpair('raw' as SocketType), 'ERR_INVALID_ARG_VALUE', /'stream', 'seqpacket' or 'dgram', got "raw"/],
    [() => socketpair('stream', { cloexec: 1 as unknown as boolean }), 'ERR_INVALID_ARG_TYPE', /cloexec must be a boolean/],
    [() => socketpair('stream', null as unknown as object), 'ERR_INVALID_ARG_TYPE', /options must be an object/],
    [() => sendmsg('3' as unknown as number, 'x'), 'ERR_INVALID_ARG_TYPE', /fd must be a file descriptor/],
    [() => sendmsg(-1, 'x'), 'ERR_OUT_OF_RANGE', /got -1/],
    [() => sendmsg(1.5, 'x'), 'ERR_OUT_OF_RANGE', /got 1.5/],
    [() => sendmsg(a, 42 as unknown as string), 'ERR_INVALID_ARG_TYPE', /data must be/],
    [() => sendmsg(a, 'x', [a, -2]), 'ERR_OUT_OF_RANGE', /fds\[1\]/],
    [() => sendmsg(a, 'x', 5 as unknown as number[]), 'ERR_INVALID_ARG_TYPE', /fds must be an array/],
    [() => recvmsg(b, { maxBytes: 0 }), 'ERR_OUT_OF_RANGE', /maxBytes/],
    [() => recvmsg(b, { maxFds: 254 }), 'ERR_OUT_OF_RANGE', /maxFds/],
  ]
  for (const [fn, code, message] of cases) {
    const err = t.throws(fn) as NodeJS.ErrnoException
    t.is(err.code, code, err.message)
    t.regex(err.message, message)
  }
  closeAll([a, b])
})

leakFree('large receives (over 1 MiB) keep their own buffer', (t) => {
  const [a, b] = socketpair(TYPES.includes('seqpacket') ? 'seqpacket' : 'dgram')
  const payload = Buffer.alloc(150_000)
  for (let i = 0; i < payload.length; i++) payload[i] = i % 251
  sendmsg(a, payload)
  const m = recvmsg(b, { maxBytes: 4 << 20 })!
  t.is(m.data.length, payload.length)
  t.true(m.data.equals(payload))
  closeAll([a, b])
})

leakFree('closeFds closes every descriptor and reports the first that was not open', (t) => {
  const [a, b] = socketpair()
  const file = tempFile('')
  closeFds([a, b])
  t.is(codeOf(() => fs.fstatSync(a)), 'EBADF')
  const err = t.throws(() => closeFds([a, file.fd])) as NodeJS.ErrnoException
  t.is(err.code, 'EBADF')
  t.is(codeOf(() => fs.fstatSync(file.fd)), 'EBADF', 'the valid one was still closed')
  t.is(codeOf(() => closeFds([-1])), 'ERR_OUT_OF_RANGE')
})
